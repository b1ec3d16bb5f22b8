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
import re
import sys
from pathlib import Path

import numpy as np

from musicssl.beat.evaluate import BeatEvaluation
from musicssl.beat.trackers import BUILTIN_TRACKERS, make_trackers
from musicssl.errors import ConfigError
from musicssl.evaluation.beat_annotations import (
    BEAT_DATASETS,
    DEFAULT_EXTENSIONS,
    load_beat_dataset,
)
from musicssl.evaluation.beat_metrics import ALL_METRICS, CORE_METRICS, format_table

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


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text) or "_"


# --- run -------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
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
    checkpoint = getattr(args, "checkpoint", None)
    if checkpoint is not None:
        checkpoint = str(Path(checkpoint).expanduser())
    evaluation = BeatEvaluation(dataset, make_trackers(trackers, args.device, checkpoint), trim=args.trim)

    for n, rows in evaluation.run():
        if args.per_file:
            for row in rows:
                core = "  ".join(f"{m} {row[m]:.3f}" for m in CORE_METRICS)
                print(f"{row['id']}\t{row['tracker']}\t{core}")
        if sys.stderr.isatty():
            print(f"\r{n}/{len(dataset)}", end="", file=sys.stderr, flush=True)
    if sys.stderr.isatty():
        print(file=sys.stderr)

    metrics = CORE_METRICS if args.metrics == "core" else ALL_METRICS
    print(format_table(evaluation.summary, metrics, label="tracker"))
    for label, res in evaluation.results.items():
        rate = evaluation.seconds_per_file(label)
        print(f"{label}: {len(res.per_file)} files scored, "
              f"{float('nan') if rate is None else rate:.2f} s per file", file=sys.stderr)
    for item_id, where, message in evaluation.failures:
        print(f"failed: {item_id} ({where}): {message}", file=sys.stderr)
    if args.out:
        written = evaluation.write(Path(args.out).expanduser(), {
            "kind": args.dataset, "path": str(args.path), "files": len(dataset)})
        print(f"wrote {written[0]} and {written[1]}", file=sys.stderr)
    return 1 if evaluation.failures else 0
