"""Many files → key records: the last layer of the key estimator (CLI, server, Ray).

:func:`analyse_files` yields one JSON-ready record per path, in order
(:mod:`musicssl.key.records`), running the model-free features in worker
processes and the network over batches (:func:`musicssl.runner.run_batch`);
a file that fails gets an error record and the run goes on. With
:class:`TagOptions` each record also says what was written into the file's
key tag (:mod:`musicssl.io.tags`); "no key" writes no tag.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterator, Sequence

from musicssl.io.tags import TagError, write_key_tag
from musicssl.key.features import compute_features
from musicssl.key.records import key_record
from musicssl.key.registry import load_estimator
from musicssl.runner import run_batch


@dataclass(frozen=True)
class TagOptions:
    """How keys are written into tags: ``notation`` of Vorbis/MP4/WMA fields, ``dry_run``
    (report only), ``id3_version`` (3, 4 or None: the file's own)."""

    notation: str = "tkey"
    dry_run: bool = False
    id3_version: int | None = None


@dataclass(frozen=True)
class KeyOptions:
    """What each record holds: key names in ``notation``; with ``local``, keys of
    ``window_s``-long windows every ``hop_s`` seconds; ``tuning`` as
    :func:`~musicssl.key.features.compute_features`; ``tags``: write key tags."""

    notation: str = "standard"
    local: bool = False
    window_s: float = 20.0
    hop_s: float = 5.0
    tuning: str | float = "compensate"
    tags: TagOptions | None = None


@dataclass(frozen=True)
class EstimatorSpec:
    """The arguments of :func:`~musicssl.key.registry.load_estimator`, picklable, so
    that a Ray worker builds the same estimator."""

    spec: str = "default"
    device: str = "cpu"
    transpositions: int | None = None
    prior: str | None = None
    backend: str | None = None
    detect_no_key: bool = True

    def load(self):
        estimator = load_estimator(self.spec, self.device, self.transpositions, self.prior,
                                   backend=self.backend)
        estimator.detect_no_key = self.detect_no_key
        return estimator


def feature_step(estimator, options: KeyOptions, device: str = "cpu"):
    """The picklable, model-free ``path -> KeyFeatures`` step for ``estimator``."""
    return functools.partial(compute_features, frontend_config=estimator.frontend_config, device=device,
                             tuning=options.tuning, **getattr(estimator, "feature_options", {}))


class RecordStep:
    """``[(path, KeyFeatures), ...] -> [record, ...]``: the network over one batch, the
    records, and the tags when asked."""

    def __init__(self, estimator, options: KeyOptions):
        self.estimator = estimator
        self.options = options

    def __call__(self, items: Sequence[tuple[str, object]]) -> list[dict]:
        o = self.options
        results = self.estimator.estimate_features([payload for _, payload in items], local=o.local,
                                                   window_s=o.window_s, hop_s=o.hop_s)
        records = []
        for (path, _), result in zip(items, results):
            record = key_record(path, result, o.notation, local=o.local)
            if o.tags is not None:
                record["tag"] = ({"written": False, "skipped": "no key"} if result.no_key
                                 else write_tag(path, result.key, o.tags))
            records.append(record)
        return records


def write_tag(path: str, key, tags: TagOptions) -> dict:
    """Write ``key`` into the tags of ``path``; the tag part of its record (an ``error``
    entry instead of raising)."""
    try:
        return write_key_tag(path, key, tags.notation, dry_run=tags.dry_run,
                             id3_version=tags.id3_version).to_dict()
    except TagError as exc:
        message = str(exc)
        return {"error": message[len(path) + 2:] if message.startswith(f"{path}: ") else message}


def analyse_files(estimator, paths: Sequence[str], options: KeyOptions = KeyOptions(), *, jobs: int = 1,
                  batch_size: int = 16, device: str = "cpu", progress: bool = False) -> Iterator[dict]:
    """One key record per path, in order (see the module doc). ``jobs`` worker processes
    compute features on the CPU; with one job they run on ``device`` here."""
    prepare = feature_step(estimator, options, "cpu" if jobs > 1 else device)
    return run_batch(paths, prepare, RecordStep(estimator, options), jobs=jobs, batch_size=batch_size,
                     progress=progress, description="key")


def record_step_on_worker(spec: EstimatorSpec, options: KeyOptions) -> RecordStep:
    """:class:`RecordStep` built where it runs (a Ray actor) from a picklable spec."""
    return RecordStep(spec.load(), options)
