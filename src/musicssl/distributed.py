"""Catalog inference on a Ray cluster (optional extra ``musicssl[ray]``).

:func:`run_ray_batch` is :func:`musicssl.runner.run_batch` with Ray Data doing
the work: the same ``prepare`` (model-free decoding and features, one file at
a time, errors become error records) and ``finish`` (the model over a batch of
payloads; a failing batch is redone file by file) run as two ``map_batches``
stages: ``prepare`` as Ray tasks on every CPU of the cluster, ``finish`` in a
pool of actors that each build the model once. Ray retries a task or restarts
an actor whose worker dies, so a killed worker loses nothing.

Outputs: the inputs (sorted, as :func:`musicssl.runner.expand_inputs` returns
them) are cut into shards of ``shard_size`` files; shard ``k`` is written to
``OUTPUT_DIR/part-{k:05d}.jsonl`` by :class:`musicssl.io.records.RecordOutput`
(journal while it fills, atomic replace once all its files are done). Records
stream back to the driver, which is the only process that writes, so only the
driver needs the output folder; every worker needs to read the audio paths
(a shared file system, or the same paths on each node). With
``skip_existing`` the records already in the shard files are kept, inputs with
a successful record are skipped and failed ones are tried again; keep the
same inputs and ``shard_size`` across reruns so that shards map to the same
files.
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from musicssl.errors import ConfigError
from musicssl.io.files import path_identity
from musicssl.io.records import RecordFormat, RecordOutput, is_ok
from musicssl.runner import _call, _finish_chunk

#: files per output shard by default
DEFAULT_SHARD_SIZE = 1000
SHARD_PATTERN = "part-{:05d}.jsonl"


@dataclass
class RayRunSummary:
    """What a run did: shard files written, files analysed, failures, files skipped."""

    written: list[Path] = field(default_factory=list)
    analysed: int = 0
    failed: int = 0
    skipped: int = 0


def shard_paths(paths: Sequence[str], shard_size: int) -> list[list[str]]:
    """``paths`` cut into consecutive shards of at most ``shard_size``."""
    if shard_size < 1:
        raise ConfigError(f"shard size must be at least 1, got {shard_size}")
    return [list(paths[i:i + shard_size]) for i in range(0, len(paths), shard_size)]


def _require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"--ray needs Ray Data: pip install 'musicssl[ray]' ({exc})") from None
    return ray


# --- the two stages (run on the cluster) ------------------------------------------------

def _prepare_stage(batch: dict, prepare: Callable[[str], Any]) -> dict:
    """Ray Data batch ``{"path", "shard"}`` → adds ``ok`` and ``payload`` (pickled
    payload, or the error record)."""

    oks, payloads = [], []
    for path in batch["path"]:
        ok, value = _call(prepare, str(path))
        oks.append(ok)
        payloads.append(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    return {"path": list(batch["path"]), "shard": list(batch["shard"]), "ok": oks, "payload": payloads}


class _FinishStage:
    """Ray Data actor: builds ``finish`` once (``make_finish()``), then turns batches of
    prepared payloads into records (JSON text), as :func:`musicssl.runner.run_batch` does."""

    def __init__(self, make_finish: Callable[[], Callable]):
        self.finish = make_finish()

    def __call__(self, batch: dict) -> dict:
        chunk = [(str(p), bool(ok), pickle.loads(payload))
                 for p, ok, payload in zip(batch["path"], batch["ok"], batch["payload"])]
        records = list(_finish_chunk(chunk, self.finish, None))
        return {"shard": list(batch["shard"]),
                "record": [json.dumps(r, ensure_ascii=False) for r in records]}


# --- the driver --------------------------------------------------------------------------

def run_ray_batch(paths: Sequence[str | os.PathLike], prepare: Callable[[str], Any],
                  make_finish: Callable[[], Callable], output_dir: str | os.PathLike, *,
                  address: str | None = None, shard_size: int = DEFAULT_SHARD_SIZE, batch_size: int = 8,
                  actors: int = 1, skip_existing: bool = False, task_retries: int = 3,
                  on_record: Callable[[dict], None] | None = None) -> RayRunSummary:
    """Analyse ``paths`` on Ray and write shard files to ``output_dir`` (see the module doc).

    ``prepare(path) -> payload`` and ``make_finish() -> finish(list[(path, payload)]) ->
    records`` must be picklable and importable on the workers. ``address``: a Ray
    cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``); ``None`` connects to
    the cluster of ``RAY_ADDRESS`` or starts one on this machine. ``actors``: model
    replicas for ``finish``. ``task_retries``: attempts after a ``prepare`` worker dies.
    """

    ray = _require_ray()
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: --ray writes a folder of shard files; this is a file")
    out.mkdir(parents=True, exist_ok=True)
    paths = [os.fspath(p) for p in paths]
    fmt = RecordFormat("jsonl")
    summary = RayRunSummary()
    outputs: dict[int, RecordOutput] = {}
    remaining: dict[int, int] = {}
    rows = []
    for k, shard in enumerate(shard_paths(paths, shard_size)):
        target = out / SHARD_PATTERN.format(k)
        if skip_existing:
            output = RecordOutput(target, fmt, resume=True)
            done = output.done()
        else:
            output, done = RecordOutput(target, fmt), set()
        todo = [p for p in shard if path_identity(p) not in done]
        summary.skipped += len(shard) - len(todo)
        if todo:
            outputs[k], remaining[k] = output, len(todo)
            rows += [{"path": p, "shard": k} for p in todo]
    if not rows:
        return summary

    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 200)))
    ds = ds.map_batches(_prepare_stage, fn_kwargs={"prepare": prepare}, batch_size=1,
                        max_retries=task_retries)
    ds = ds.map_batches(_FinishStage, fn_constructor_args=(make_finish,), batch_size=max(1, batch_size),
                        concurrency=max(1, actors), max_restarts=-1, max_task_retries=-1)
    started: set[int] = set()
    try:
        for row in ds.iter_rows():
            record, k = json.loads(row["record"]), int(row["shard"])
            output = outputs[k]
            started.add(k)
            output.write(record)        # journaled until the shard is complete
            summary.analysed += 1
            summary.failed += not is_ok(record)
            if on_record is not None:
                on_record(record)
            remaining[k] -= 1
            if remaining[k] == 0:
                output.close()
                summary.written.append(output.path)
    finally:  # an interrupted run still writes what it has (the rest stays to do)
        for k in started:
            if remaining[k]:
                outputs[k].close()
    return summary
