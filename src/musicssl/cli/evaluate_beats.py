"""``musicssl evaluate-beats``: score beat trackers on a dataset with beat annotations.

Examples::

    musicssl evaluate-beats --dataset dev-synth ../shared/data/dev-synth --tracker librosa
    musicssl evaluate-beats --dataset folder music/ --annotations beats/ \\
        --tracker zerons --tracker librosa --out results/
    musicssl evaluate-beats --dataset csv list.csv --tracker my_model.safetensors --limit 20
    musicssl evaluate-beats ../shared/data/dev-synth --checkpoint my_model.safetensors \\
        --tracker zerons --tracker zerons-librosa --tracker librosa

Trackers (``--tracker``, repeatable; each becomes a row of the table):

* ``onset`` — ``musicssl beats``' default: onset strength + the project's DBN with its onset
  settings (tempo prior, wider beat window; ``musicssl.beat.onset``);
* ``zerons`` — the Zero-Note Samba model (shipped, or ``--checkpoint``) + the project's DBN;
* ``zerons-librosa`` — the same ZeroNS activation + librosa's dynamic-programming tracker;
* ``librosa`` — ``librosa.beat.beat_track`` on the audio (onset envelope + DP);
* ``librosa-dbn`` — the same onset envelope + the project's DBN with its SPEC defaults
  (no tempo prior);
* a path to a ZeroNS checkpoint — that model + the DBN.

Scores (``mir_eval.beat``, first 5 s trimmed): F-measure (±70 ms), CMLc,
CMLt, AMLc, AMLt, P-score, Cemgil, Information gain. With ``--out DIR``:
``scores.csv`` (per file and tracker), ``summary.json`` (means) and the
estimated beats ``<tracker>/<id>.beats``.

Exit status: 0 every file scored, 1 some files failed (listed), 2 usage error.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from musicssl.errors import ConfigError, MusicsslError
from musicssl.evaluation.beat_annotations import BEAT_DATASETS, DEFAULT_EXTENSIONS, load_beat_dataset
from musicssl.evaluation.beat_metrics import ALL_METRICS, CORE_METRICS, BeatScores, format_table

BUILTIN_TRACKERS = ("onset", "zerons", "zerons-librosa", "librosa", "librosa-dbn")

#: librosa tracker settings: analysis rate and hop (librosa's defaults).
LIBROSA_SR, LIBROSA_HOP = 22050, 512
#: librosa-dbn: the onset tracker with the DBN's SPEC defaults (no tempo prior, 1/16-beat window).
SPEC_DBN_PARAMS = {"observation_lambda": 16.0, "prior_bpm": None}

Tracker = Callable[[Path], np.ndarray]  # audio path -> beat times (n,) in seconds


_EPILOG = """examples:
  musicssl evaluate-beats --dataset folder music/ --annotations beats/ --tracker zerons --tracker librosa --out results/
  musicssl evaluate-beats --dataset csv list.csv --tracker my_model.safetensors --limit 20
  musicssl evaluate-beats --dataset dev-synth ../shared/data/dev-synth --tracker librosa

trackers (--tracker, repeatable; each becomes a row of the table; default: onset):
  onset           musicssl beats' default: onset strength + the DBN with a tempo prior
  zerons          the Zero-Note Samba model (shipped, or --checkpoint) + the project's DBN
  zerons-librosa  the same ZeroNS activation + librosa's dynamic-programming tracker
  librosa         librosa.beat.beat_track on the audio (onset envelope + DP)
  librosa-dbn     the same onset strength + the DBN with its SPEC defaults (no tempo prior)
  PATH            a ZeroNS checkpoint + the DBN

Scores (mir_eval.beat, beats before --trim ignored): F-measure (70 ms window), CMLc,
CMLt, AMLc, AMLt, P-score, Cemgil, information gain. With --out DIR: scores.csv
(per file and tracker), summary.json (means) and the estimated beats
<tracker>/<id>.beats.

exit status: 0 every file scored, 1 some files failed (listed), 2 usage error"""


def add_parser(subparsers, name: str = "evaluate-beats",
               help_text: str = "score beat trackers on a dataset with beat annotations"):
    """Register ``musicssl evaluate-beats`` on ``subparsers``."""
    p = subparsers.add_parser(
        name, help=help_text, description="Score beat trackers on a dataset with beat annotations.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", metavar="PATH",
                   help="dataset: the dev-synth folder, an audio folder, or a CSV manifest")
    p.add_argument("--dataset", choices=BEAT_DATASETS, default="dev-synth",
                   help="layout of PATH: dev-synth (labels.csv with beats_path), folder "
                        "(audio + annotation files paired by name), csv (audio and beats columns) "
                        "(default: dev-synth)")
    p.add_argument("--tracker", action="append", default=argparse.SUPPRESS, metavar="NAME|CHECKPOINT",
                   help=f"tracker to score, repeatable: {', '.join(BUILTIN_TRACKERS)} or a "
                        "ZeroNS checkpoint path (default: onset, as musicssl beats)")
    p.add_argument("--annotations", metavar="DIR", default=argparse.SUPPRESS,
                   help="--dataset folder: where the annotation files are (default: beside the audio)")
    p.add_argument("--extensions", nargs="+", default=list(DEFAULT_EXTENSIONS), metavar="EXT",
                   help="--dataset folder: annotation file endings, in order of preference "
                        f"(default: {' '.join(DEFAULT_EXTENSIONS)})")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="write scores.csv, summary.json and the estimated beats here (default: none, "
                        "print the table only)")
    p.add_argument("--limit", type=_non_negative_int, default=None, metavar="N",
                   help="score only the first N files (default: all)")
    p.add_argument("--trim", type=float, default=5.0, metavar="SECONDS",
                   help="ignore beats before this time, in seconds (default: 5, the standard)")
    p.add_argument("--metrics", choices=("core", "all"), default="all",
                   help="table columns: core = F-measure, CMLt, AMLt; all = every score (default: all)")
    p.add_argument("--per-file", action="store_true",
                   help="also print one line per file and tracker (default: off)")
    p.add_argument("--checkpoint", metavar="PATH", default=argparse.SUPPRESS,
                   help="ZeroNS model used by the zerons and zerons-librosa trackers "
                        "(default: the model shipped with musicssl)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where ZeroNS networks run (default: cpu)")
    p.set_defaults(func=run)
    return p


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


# --- trackers ----------------------------------------------------------------------------

def _librosa_beats(path: Path) -> np.ndarray:
    import librosa

    from musicssl.frontend.audio import load_audio

    y = load_audio(path, sr=LIBROSA_SR)
    _, beats = librosa.beat.beat_track(y=y, sr=LIBROSA_SR, hop_length=LIBROSA_HOP, units="time")
    return np.asarray(beats, dtype=np.float64)


def _load_estimator(checkpoint: str | None, device: str):
    from musicssl.beat.estimator import BeatEstimator

    return BeatEstimator.from_checkpoint(checkpoint, device=device)


class _ZeroNSTrackers:
    """ZeroNS estimators by checkpoint, remembering the last activation so that
    ``zerons`` and ``zerons-librosa`` on the same file run the networks once."""

    def __init__(self, device: str):
        self.device = device
        self.estimators: dict[str | None, object] = {}
        self.last: tuple[str | None, Path, np.ndarray] | None = None

    def activation(self, checkpoint: str | None, path: Path) -> np.ndarray:
        if self.last is not None and self.last[:2] == (checkpoint, path):
            return self.last[2]
        if checkpoint not in self.estimators:
            self.estimators[checkpoint] = _load_estimator(checkpoint, self.device)
        result = self.estimators[checkpoint].estimate_file(path, keep_activation=True)
        self.last = (checkpoint, path, result.activation)
        return result.activation

    def tracker(self, checkpoint: str | None, decoder: str) -> Tracker:
        if checkpoint not in self.estimators:  # load now: a bad checkpoint is a usage error
            self.estimators[checkpoint] = _load_estimator(checkpoint, self.device)
        estimator = self.estimators[checkpoint]
        return lambda path: np.asarray(
            estimator.decode(self.activation(checkpoint, path), tracker=decoder)[0], dtype=np.float64)


def make_tracker(name: str, device: str = "cpu", zerons: _ZeroNSTrackers | None = None,
                 checkpoint: str | None = None) -> Tracker:
    """The beat function of a tracker name (see module docstring) or checkpoint path;
    ``checkpoint``: the model of ``zerons``/``zerons-librosa`` (None: the shipped one)."""
    if name == "librosa":
        return _librosa_beats
    if name in ("onset", "librosa-dbn"):
        from musicssl.beat.estimator import OnsetBeatEstimator

        onset = OnsetBeatEstimator(tracker_params=SPEC_DBN_PARAMS if name == "librosa-dbn" else None)
        return lambda path: np.asarray(onset.estimate_file(path, keep_activation=False).beats)
    zerons = zerons or _ZeroNSTrackers(device)
    if name == "zerons":
        return zerons.tracker(checkpoint, "dbn")
    if name == "zerons-librosa":
        return zerons.tracker(checkpoint, "librosa")
    if Path(name).expanduser().is_file():
        return zerons.tracker(str(Path(name).expanduser()), "dbn")
    raise ConfigError(f"unknown tracker {name!r}: not one of {', '.join(BUILTIN_TRACKERS)} "
                      "and not an existing checkpoint file")


def _tracker_label(name: str) -> str:
    return name if name in BUILTIN_TRACKERS else Path(name).stem


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text) or "_"


# --- run -------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    from musicssl.outputs import atomic_write_text

    trackers = getattr(args, "tracker", None) or ["onset"]
    annotations = getattr(args, "annotations", None)
    if len(set(trackers)) != len(trackers):
        raise ConfigError(f"--tracker given twice: {trackers}")
    if not np.isfinite(args.trim) or args.trim < 0:
        raise ConfigError(f"--trim must be >= 0 seconds, got {args.trim}")
    if annotations and args.dataset != "folder":
        raise ConfigError("--annotations only applies to --dataset folder")
    dataset = load_beat_dataset(args.dataset, args.path, annotations=annotations,
                                extensions=args.extensions).limit(args.limit)
    print(dataset.describe(), file=sys.stderr)
    if len(dataset) == 0:
        raise ConfigError(f"no annotated audio files found in {args.path}")
    labels = [_tracker_label(t) for t in trackers]
    zerons = _ZeroNSTrackers(args.device)
    checkpoint = getattr(args, "checkpoint", None)
    if checkpoint is not None:
        checkpoint = str(Path(checkpoint).expanduser())
    functions = {label: make_tracker(t, args.device, zerons, checkpoint)
                 for label, t in zip(labels, trackers)}

    out = Path(args.out).expanduser() if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    results = {label: BeatScores() for label in labels}
    seconds = {label: 0.0 for label in labels}
    failures: list[tuple[str, str, str]] = []
    rows: list[dict] = []
    for n, item in enumerate(dataset, 1):
        try:
            reference = item.reference().times
        except MusicsslError as exc:
            failures.append((item.id, "annotation", str(exc)))
            continue
        for label, track in functions.items():
            start = time.perf_counter()
            try:
                estimated = track(item.audio_path)
            except MusicsslError as exc:
                failures.append((item.id, label, str(exc)))
                continue
            seconds[label] += time.perf_counter() - start
            scores = results[label].add(item.id, reference, estimated, trim=args.trim)
            if scores is None:
                failures.append((item.id, label, results[label].errors[item.id]))
                continue
            rows.append({"id": item.id, "tracker": label, "n_reference": len(reference),
                         "n_estimated": len(estimated), **scores})
            if args.per_file:
                core = "  ".join(f"{m} {scores[m]:.3f}" for m in CORE_METRICS)
                print(f"{item.id}\t{label}\t{core}")
            if out:
                folder = out / _safe_name(label)
                folder.mkdir(exist_ok=True)
                atomic_write_text(folder / f"{_safe_name(item.id)}.beats",
                                  "".join(f"{t:.4f}\n" for t in estimated))
        if sys.stderr.isatty():
            print(f"\r{n}/{len(dataset)}", end="", file=sys.stderr, flush=True)
    if sys.stderr.isatty():
        print(file=sys.stderr)

    metrics = CORE_METRICS if args.metrics == "core" else ALL_METRICS
    summary = {label: res.mean for label, res in results.items()}
    print(format_table(summary, metrics, label="tracker"))
    for label, res in results.items():
        n_files = len(res.per_file)
        rate = seconds[label] / n_files if n_files else float("nan")
        print(f"{label}: {n_files} files scored, {rate:.2f} s per file", file=sys.stderr)
    for item_id, where, message in failures:
        print(f"failed: {item_id} ({where}): {message}", file=sys.stderr)

    if out:
        buffer = io.StringIO()
        columns = ["id", "tracker", "n_reference", "n_estimated", *ALL_METRICS]
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(out / "scores.csv", buffer.getvalue())
        atomic_write_text(out / "summary.json", json.dumps({
            "dataset": {"kind": args.dataset, "path": str(args.path), "files": len(dataset)},
            "trim_s": args.trim,
            "trackers": {label: {"files": len(results[label].per_file), "mean": summary[label],
                                 "seconds_per_file": (seconds[label] / len(results[label].per_file)
                                                      if results[label].per_file else None)}
                         for label in labels},
            "failures": [{"id": i, "tracker": w, "message": m} for i, w, m in failures],
        }, indent=2) + "\n")
        print(f"wrote {out / 'scores.csv'} and {out / 'summary.json'}", file=sys.stderr)
    return 1 if failures else 0
