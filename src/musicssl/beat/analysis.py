"""Many files → beat records: the last layer of the beat estimators (CLI, server, Ray).

:func:`analyse_files` yields one JSON-ready record per path, in order
(:mod:`musicssl.beat.records`), running decoding and the model-free features
(:func:`musicssl.beat.features.prepare_file`) in worker processes; a file that
fails gets an error record and the run goes on. :class:`BeatOptions` adds
files per track: ``<name>.beats``, the activation ``<name>.npy`` and a plot
``<name>.png`` (names made unique within the run).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from musicssl.beat.estimator import BeatEstimator, load_beat_estimator
from musicssl.beat.features import prepare_file
from musicssl.beat.plot import plot_beats
from musicssl.beat.records import beats_record
from musicssl.beat.separation import get_separator
from musicssl.evaluation.beat_annotations import format_beat_annotation
from musicssl.io.atomic import atomic_write_text
from musicssl.runner import run_batch


@dataclass(frozen=True)
class BeatOptions:
    """Files written per track besides the record: beat files in ``beats_dir``, activations
    in ``activations_dir``, plots in ``plot_dir`` over ``plot_window`` ``(start, end or None)`` s."""

    beats_dir: str | None = None
    activations_dir: str | None = None
    plot_dir: str | None = None
    plot_window: tuple[float, float | None] | None = None

    @property
    def writes_files(self) -> bool:
        return bool(self.beats_dir or self.activations_dir or self.plot_dir)


@dataclass(frozen=True)
class BeatEstimatorSpec:
    """The arguments of :func:`~musicssl.beat.estimator.load_beat_estimator`, picklable,
    so that a Ray worker builds the same estimator."""

    activation: str | None = None
    checkpoint: str | None = None
    device: str = "cpu"
    tracker: str = "dbn"
    tracker_params: tuple = ()
    backend: str | None = None
    combine: str | None = None
    separator: str | None = None
    meter: str | int | None = None

    def load(self):
        options = {"meter": self.meter}
        if self.combine is not None:
            options["combine"] = self.combine
        if self.separator is not None:
            options["separator"] = get_separator(self.separator)
        return load_beat_estimator(self.activation, self.checkpoint, device=self.device, tracker=self.tracker,
                                   tracker_params=dict(self.tracker_params), backend=self.backend, **options)


def feature_step(estimator, keep_waveform: bool = False):
    """The picklable, model-free ``path -> payload`` step for ``estimator``."""
    separator = estimator.separator if isinstance(estimator, BeatEstimator) else None
    return functools.partial(prepare_file, separator=separator, keep_waveform=keep_waveform,
                             meter=estimator.meter is not None)


class RecordStep:
    """``[(path, payload), ...] -> [record, ...]``: activation, decoding, record and files."""

    def __init__(self, estimator, options: BeatOptions = BeatOptions()):
        self.estimator = estimator
        self.options = options
        self._used: set[str] = set()
        for folder in (options.beats_dir, options.activations_dir, options.plot_dir):
            if folder:
                Path(folder).mkdir(parents=True, exist_ok=True)

    def _unique_name(self, path: str) -> str:
        stem = Path(path).stem
        name, k = stem, 2
        while name in self._used:
            name, k = f"{stem}_{k}", k + 1
        self._used.add(name)
        return name

    def __call__(self, items: Sequence[tuple[str, dict]]) -> list[dict]:
        o, estimator = self.options, self.estimator
        records = []
        for path, payload in items:
            if "onset" in payload:
                act = payload["onset"]
            else:
                act = estimator.combine_outputs(*estimator.network_outputs(payload["perc"], payload["rest"]))
            result = estimator.result(act, payload["duration_s"], meter_features=payload.get("meter"))
            record = beats_record(path, result)
            name = self._unique_name(path) if o.writes_files else None
            if o.beats_dir:
                target = Path(o.beats_dir) / f"{name}.beats"
                atomic_write_text(target, format_beat_annotation(result.beats, result.beat_numbers))
                record["beats_file"] = str(target)
            if o.activations_dir:
                target = Path(o.activations_dir) / f"{name}.npy"
                np.save(target, act.astype(np.float32))
                record["activation_file"] = str(target)
            if o.plot_dir:
                target = Path(o.plot_dir) / f"{name}.png"
                plot_beats(target, payload.get("waveform"), act, result.beats, estimator.fps,
                           title=Path(path).name, tempo=result.tempo_bpm, tracker=estimator.label,
                           window=o.plot_window)
                record["plot_file"] = str(target)
            records.append(record)
        return records


def analyse_files(estimator, paths: Sequence[str], options: BeatOptions = BeatOptions(), *, jobs: int = 1,
                  progress: bool = False) -> Iterator[dict]:
    """One beat record per path, in order (see the module doc)."""
    prepare = feature_step(estimator, keep_waveform=bool(options.plot_dir))
    return run_batch(paths, prepare, RecordStep(estimator, options), jobs=jobs, batch_size=1,
                     progress=progress, description="beats")


def record_step_on_worker(spec: BeatEstimatorSpec) -> RecordStep:
    """:class:`RecordStep` (records only, no files) built where it runs (a Ray actor)."""
    return RecordStep(spec.load())
