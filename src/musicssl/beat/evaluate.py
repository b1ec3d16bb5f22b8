"""Run beat trackers over an annotated dataset and score them (``musicssl evaluate-beats``).

:class:`BeatEvaluation` runs each tracker (``path -> beat times``, see
:mod:`musicssl.beat.trackers`) on every item, scores it with
:class:`~musicssl.evaluation.beat_metrics.BeatScores` (mir_eval) and keeps
per-file rows, timings and failures; :meth:`BeatEvaluation.write` saves
``scores.csv``, ``summary.json`` and the estimated beats, atomically.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from musicssl.beat.trackers import Tracker
from musicssl.errors import MusicsslError
from musicssl.evaluation.beat_annotations import BeatDataset
from musicssl.evaluation.beat_metrics import ALL_METRICS, BeatScores
from musicssl.io.atomic import atomic_write_text


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text) or "_"


class BeatEvaluation:
    """Scores of ``trackers`` (label -> tracker) on ``dataset``, trimming ``trim`` seconds."""

    def __init__(self, dataset: BeatDataset, trackers: Mapping[str, Tracker], trim: float = 5.0):
        self.dataset = dataset
        self.trackers = dict(trackers)
        self.trim = float(trim)
        self.results = {label: BeatScores() for label in self.trackers}
        self.seconds = {label: 0.0 for label in self.trackers}
        self.failures: list[tuple[str, str, str]] = []   # (item id, tracker or "annotation", message)
        self.rows: list[dict] = []                       # one per scored (item, tracker)
        self.estimates: dict[tuple[str, str], np.ndarray] = {}

    def run(self) -> Iterator[tuple[int, list[dict]]]:
        """Score every item; yields ``(items done, rows of this item)`` after each item."""
        for n, item in enumerate(self.dataset, 1):
            rows: list[dict] = []
            try:
                reference = item.reference().times
            except MusicsslError as exc:
                self.failures.append((item.id, "annotation", str(exc)))
                yield n, rows
                continue
            for label, track in self.trackers.items():
                start = time.perf_counter()
                try:
                    estimated = track(item.audio_path)
                except MusicsslError as exc:
                    self.failures.append((item.id, label, str(exc)))
                    continue
                self.seconds[label] += time.perf_counter() - start
                scores = self.results[label].add(item.id, reference, estimated, trim=self.trim)
                if scores is None:
                    self.failures.append((item.id, label, self.results[label].errors[item.id]))
                    continue
                rows.append({"id": item.id, "tracker": label, "n_reference": len(reference),
                             "n_estimated": len(estimated), **scores})
                self.estimates[(label, item.id)] = np.asarray(estimated, dtype=np.float64)
            self.rows.extend(rows)
            yield n, rows

    @property
    def summary(self) -> dict[str, dict[str, float]]:
        """Mean scores per tracker label."""
        return {label: res.mean for label, res in self.results.items()}

    def seconds_per_file(self, label: str) -> float | None:
        """Mean wall time of tracker ``label`` per scored file (s)."""
        n = len(self.results[label].per_file)
        return self.seconds[label] / n if n else None

    def write(self, out: str | Path, description: Mapping) -> list[Path]:
        """Write ``scores.csv``, ``summary.json`` (with ``description`` as its ``dataset``)
        and ``<tracker>/<id>.beats`` under ``out``; returns the two summary files."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for (label, item_id), beats in self.estimates.items():
            folder = out / _safe_name(label)
            folder.mkdir(exist_ok=True)
            atomic_write_text(folder / f"{_safe_name(item_id)}.beats", "".join(f"{t:.4f}\n" for t in beats))
        buffer = io.StringIO()
        columns = ["id", "tracker", "n_reference", "n_estimated", *ALL_METRICS]
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(out / "scores.csv", buffer.getvalue())
        summary = self.summary
        atomic_write_text(out / "summary.json", json.dumps({
            "dataset": dict(description),
            "trim_s": self.trim,
            "trackers": {label: {"files": len(self.results[label].per_file), "mean": summary[label],
                                 "seconds_per_file": self.seconds_per_file(label)}
                         for label in self.trackers},
            "failures": [{"id": i, "tracker": w, "message": m} for i, w, m in self.failures],
        }, indent=2) + "\n")
        return [out / "scores.csv", out / "summary.json"]
