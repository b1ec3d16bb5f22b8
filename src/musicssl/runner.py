"""Running one analysis over many files: inputs, parallel decoding, batching,
error records, progress bar. Used by ``musicssl key`` and ``musicssl beats``.

The work per file is split in two:

* ``prepare(path) -> payload`` — the expensive, model-free part (decoding,
  resampling, spectrogram). It must be picklable (a module-level function or
  a ``functools.partial`` of one) because with ``jobs > 1`` it runs in worker
  processes.
* ``finish([(path, payload), ...]) -> [record, ...]`` — runs in the main
  process on up to ``batch_size`` payloads at once (e.g. one network batch).
  Without ``finish`` the payloads themselves must be the records
  (``prepare`` maps a path to a result dict).

Any ``Exception`` raised for one file becomes an error record
(:func:`musicssl.io.records.error_record`) and the run goes on; a worker that
dies (e.g. a decoder crash) is detected and only the file that killed it
gets an error record. ``KeyboardInterrupt`` stops the run.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Iterator, Sequence

from musicssl.io.records import error_record, is_ok

#: seconds a prepared file may wait for its batch to fill before it is finished anyway
MAX_WAIT_S = 1.0

Prepare = Callable[[str], Any]
Finish = Callable[[list[tuple[str, Any]]], list[dict]]


class WorkerCrashedError(RuntimeError):
    """The worker process analysing a file died (e.g. the decoder crashed)."""


# --- inputs ----------------------------------------------------------------------


# --- running ---------------------------------------------------------------------

def _call(prepare: Prepare, path: str) -> Any:
    """Run ``prepare`` on one path; errors are returned, not raised."""
    try:
        return True, prepare(path)
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the run
        return False, error_record(path, exc)


def _init_worker() -> None:
    """Worker initialiser: one compute thread per worker (the workers are the
    parallelism); Ctrl-C is left to the main process, which stops the pool."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = "1"  # read by torch / numpy when first imported here
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def _serial(prepare: Prepare, paths: Sequence[str]) -> Iterator[tuple[str, bool, Any]]:
    for path in paths:
        ok, value = _call(prepare, path)
        yield path, ok, value


def _parallel(prepare: Prepare, paths: Sequence[str], jobs: int, window: int,
              start_method: str | None) -> Iterator[tuple[str, bool, Any]]:
    """``(path, ok, payload-or-error-record)`` in input order, ``jobs`` workers,
    at most ``window`` payloads in flight (bounds memory)."""
    context = multiprocessing.get_context(start_method or _default_start_method())

    def new_pool(workers: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker)

    pool = new_pool(jobs)
    pending: deque[tuple[str, Future]] = deque()
    upcoming = iter(paths)
    try:
        while True:
            while len(pending) < window:
                path = next(upcoming, None)
                if path is None:
                    break
                pending.append((path, pool.submit(_call, prepare, path)))
            if not pending:
                return
            path, future = pending.popleft()
            try:
                ok, value = future.result()
            except BrokenProcessPool:
                # Some in-flight file killed its worker. Redo the in-flight files
                # one at a time in a fresh single worker to find which one.
                pool.shutdown(wait=False, cancel_futures=True)
                suspects = [path] + [p for p, _ in pending]
                pending.clear()
                for suspect in suspects:
                    yield (suspect, *_isolated(prepare, suspect, new_pool))
                pool = new_pool(jobs)
                continue
            yield path, ok, value
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _isolated(prepare: Prepare, path: str, new_pool) -> tuple[bool, Any]:
    pool = new_pool(1)
    try:
        return pool.submit(_call, prepare, path).result()
    except BrokenProcessPool:
        return False, error_record(path, WorkerCrashedError(
            "the process analysing this file died (decoder crash or out of memory)"))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _default_start_method() -> str:
    # fork is unsafe once torch (threads) is loaded; forkserver starts clean workers fast
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def run_batch(paths: Sequence[str | os.PathLike], prepare: Prepare, finish: Finish | None = None, *,
              jobs: int = 1, batch_size: int = 8, progress: bool = False, description: str = "files",
              start_method: str | None = None, max_wait_s: float = MAX_WAIT_S) -> Iterator[dict]:
    """Yield one record per path, in input order (see the module doc).

    ``jobs`` worker processes run ``prepare`` (``jobs <= 1``: in this process);
    ``finish`` gets up to ``batch_size`` prepared payloads at a time; a failed
    batch is retried file by file so only the bad file gets an error record.
    Records are not held back for a full batch: a batch is finished early when
    its first payload has waited ``max_wait_s`` seconds, or at once when the
    payload that just arrived took that long to come (slow files: one at a time),
    so progress and the caller's journal advance file by file.
    ``progress`` shows a tqdm bar on stderr.
    """
    paths = [os.fspath(p) for p in paths]
    batch_size = max(1, int(batch_size))
    jobs = max(1, min(int(jobs), len(paths)))
    if jobs == 1:
        prepared = _serial(prepare, paths)
    else:
        window = max(2 * jobs, batch_size + jobs)
        prepared = _parallel(prepare, paths, jobs, window, start_method)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(paths), unit="file", desc=description, file=sys.stderr, dynamic_ncols=True)
    try:
        chunk: list[tuple[str, bool, Any]] = []
        first = last = time.monotonic()
        for item in prepared:
            now = time.monotonic()
            if not chunk:
                first = now
            chunk.append(item)
            slow = now - last >= max_wait_s or now - first >= max_wait_s
            last = now
            if slow or sum(ok for _, ok, _ in chunk) >= batch_size:
                yield from _finish_chunk(chunk, finish, bar)
                chunk = []
                last = time.monotonic()   # the next gap counts from here, not from before finish ran
        if chunk:
            yield from _finish_chunk(chunk, finish, bar)
    finally:
        close = getattr(prepared, "close", None)
        if close is not None:
            close()
        if bar is not None:
            bar.close()


def _finish_chunk(chunk: list[tuple[str, bool, Any]], finish: Finish | None, bar) -> Iterator[dict]:
    """Records for one chunk in input order: error records as they are, the
    prepared payloads through ``finish`` (in one call when possible)."""
    ready = [i for i, (_, ok, _) in enumerate(chunk) if ok]
    records: dict[int, dict] = {}
    if finish is None:
        for i in ready:
            path, _, value = chunk[i]
            records[i] = value if isinstance(value, dict) else {"path": path, "result": value}
    elif ready:
        inputs = [(chunk[i][0], chunk[i][2]) for i in ready]
        try:
            finished = list(finish(inputs))
            if len(finished) != len(inputs):
                raise RuntimeError(f"finish returned {len(finished)} records for {len(inputs)} inputs")
        except Exception:  # noqa: BLE001 - find the bad input one by one
            finished = []
            for path, value in inputs:
                try:
                    finished.extend(finish([(path, value)]))
                except Exception as exc:  # noqa: BLE001
                    finished.append(error_record(path, exc))
        for i, record in zip(ready, finished):
            record.setdefault("path", chunk[i][0])
            records[i] = record
    for i, (_, ok, value) in enumerate(chunk):
        if bar is not None:
            bar.update(1)
        yield records[i] if ok else value


def count_failures(records: Iterable[dict]) -> int:
    """Number of records that are not successes."""

    return sum(not is_ok(r) for r in records)
