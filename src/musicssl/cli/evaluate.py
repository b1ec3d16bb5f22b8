"""``musicssl evaluate``: score key estimators on a labelled dataset.

Example (the project's dev-synth set)::

    musicssl evaluate --dataset dev-synth ../shared/data/dev-synth \\
        --model krumhansl --model temperley --checkpoint ../shared/fixtures/skey.pt \\
        --compare --figures --out results/dev-synth
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from musicssl.cli.common import (
    add_prior_argument,
    add_transpositions_argument,
    add_tuning_argument,
)
from musicssl.errors import ConfigError
from musicssl.evaluation.datasets import load_dataset
from musicssl.evaluation.key_report import write_figures, write_results
from musicssl.key.evaluate import evaluate
from musicssl.key.registry import load_estimator, model_names, split_spec
from musicssl.key.templates import PROFILES

DATASETS = ("csv", "dev-synth", "giantsteps", "gtzan", "fmakv2", "winterreise")


def add_parser(subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    """Register ``musicssl evaluate``."""
    p = subparsers.add_parser(
        name, help=help_text,
        description="Run key estimators over a labelled dataset and report MIREX weighted scores "
                    "(mir_eval's fifth-above rule and the both-directions rule MIREX uses since 2017), "
                    "KSEA, mode accuracy, the error breakdown and per-genre/collection scores.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="datasets:\n"
               "  csv          manifest path,key[,genre] (CSV or TSV, any key notation)\n"
               "  dev-synth    folder with labels.csv (group: collection)\n"
               "  giantsteps   folder with annotations/key/*.key and audio/\n"
               "  gtzan        folder with Lerch's *.lerch.txt (use --audio-dir for GTZAN audio)\n"
               "  fmakv2       folder with fmakv2.csv and FMA audio (<id[:3]>/<id>.mp3)\n"
               "  winterreise  Schubert Winterreise Dataset folder (first 30 s of each piece)\n"
               "models: default, skey-band, skey-debian, krumhansl, temperley, kostka-payne or a checkpoint path;\n"
               "  a network spec may end in +PROFILE for a template prior (skey-debian+temperley,\n"
               "  ../shared/fixtures/skey.pt+temperley); default = skey-band+kostka-payne\n"
               "example:\n"
               "  musicssl evaluate --dataset csv my_labels.csv --model default --model krumhansl --compare")
    p.add_argument("--dataset", required=True, choices=DATASETS,
                   help="layout of PATH, see the datasets list below (required)")
    p.add_argument("path", type=Path, metavar="PATH", help="dataset folder or manifest file")
    p.add_argument("--model", action="append", metavar="SPEC", default=None,
                   help="estimator to score, repeatable: default, skey-band, skey-debian, krumhansl, temperley, "
                        "kostka-payne or a checkpoint path (named by its file's stem, with as many "
                        "folders as tell checkpoints of the same name apart, e.g. run1/model); network "
                        "specs may end in +PROFILE (default: default)")
    p.add_argument("--checkpoint", action="append", metavar="PATH", type=Path, default=None,
                   help="a key model checkpoint to score, repeatable; the same as --model PATH (default: none)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="folder for results.json, results.md and figures; the command says where it "
                        "wrote (default: ./musicssl-eval/<dataset>)")
    p.add_argument("--compare", action="store_true",
                   help="add the differences of every estimator against the first one (default: off)")
    p.add_argument("--figures", action="store_true",
                   help="save confusion matrices, embedding PCA and a key-gram as PNG and SVG (default: off)")
    p.add_argument("--keygram", metavar="ITEM", action="append", default=None,
                   help="item id or audio path to draw a key-gram (key over time) for, repeatable "
                        "(default: with --figures, the first item)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="score only the first N items (default: all)")
    p.add_argument("--audio-dir", type=Path, default=None, metavar="DIR",
                   help="where the audio is, when not beside the annotations: GiantSteps, GTZAN, FMAKv2, "
                        "Winterreise (default: beside the annotations)")
    p.add_argument("--lenient", action="store_true",
                   help="skip and count malformed annotation lines instead of stopping (default: stop)")
    p.add_argument("--device", default="cpu", help="torch device for the networks: cpu or cuda (default: cpu)")
    add_transpositions_argument(p)
    add_prior_argument(p)
    add_tuning_argument(p)
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="worker processes decoding audio and computing spectrograms (default: 1)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar (default: a bar on standard error when it is a terminal)")
    p.set_defaults(func=run)
    return p


def resolve_estimators(specs: list[str], device: str = "cpu", transpositions: int | None = None,
                       prior: str | None = None) -> dict:
    """``{display name: estimator}`` for model specs; names are made unique.
    ``prior`` (a profile or ``"none"``) applies to the network specs; templates ignore it."""

    loaded: list[tuple[str, Path | None, object]] = []     # (name, checkpoint path or None, estimator)
    for spec in specs:
        spec = str(spec)
        model, _ = split_spec(spec)
        network_prior = None if model in PROFILES else prior
        est = load_estimator(spec, device, transpositions, network_prior)
        if spec in model_names() and network_prior is None:
            loaded.append((spec, None, est))
        elif model in model_names():                       # a shipped network whose prior --prior set
            loaded.append((est.name, None, est))
        else:                                              # a checkpoint path: its stem, then its prior
            path = Path(model)
            loaded.append((path.stem + (f"+{est.prior}" if est.prior else ""), path, est))
    estimators: dict = {}
    for name, path, est in loaded:
        if path is not None:
            name = _distinct_checkpoint_name(name, path, [p for other, p, _ in loaded
                                                          if p is not None and p != path and other == name])
        unique, n = name, 2
        while unique in estimators:
            unique, n = f"{name}#{n}", n + 1
        estimators[unique] = est
    return estimators


def _distinct_checkpoint_name(name: str, path: Path, others: list[Path]) -> str:
    """``name`` (a checkpoint's stem and prior), prefixed by as many of ``path``'s parent
    folders as it takes to tell it from ``others`` (other checkpoints of the same name),
    e.g. ``run1/model`` and ``run2/model`` for two ``model.safetensors``."""
    if not others:
        return name
    mine = path.resolve().parent.parts
    for depth in range(1, len(mine) + 1):
        prefix = mine[-depth:]
        if all(p.resolve().parent.parts[-depth:] != prefix for p in others):
            return "/".join((*prefix, name))
    return name


def run(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 0:
        raise ConfigError("--limit must be >= 0")
    if args.jobs < 1:
        raise ConfigError("--jobs must be >= 1")
    specs = list(args.model or []) + [str(c) for c in (args.checkpoint or [])]
    if not specs:
        specs = ["default"]
    options = {"strict": not args.lenient}
    if args.audio_dir is not None:
        if args.dataset == "dev-synth":
            raise ConfigError("--audio-dir does not apply to dev-synth (paths are relative to labels.csv)")
        options["audio_root" if args.dataset == "csv" else "audio_dir"] = args.audio_dir
    dataset = load_dataset(args.dataset, args.path, **options).limit(args.limit)
    print(dataset.describe(), file=sys.stderr)
    for item in dataset.missing[:5]:
        print(f"  missing audio: {item.path}", file=sys.stderr)
    if len(dataset.missing) > 5:
        print(f"  ... and {len(dataset.missing) - 5} more missing", file=sys.stderr)
    for skipped in dataset.skipped[:5]:
        print(f"  skipped: {skipped.where}: {skipped.reason}", file=sys.stderr)
    if not dataset.items:
        raise ConfigError(f"no item of {args.path} has its audio file; nothing to score")
    estimators = resolve_estimators(specs, args.device, args.transpositions, args.prior)
    local_ids = list(args.keygram or [])
    if args.figures and not local_ids:
        local_ids = [dataset.items[0].id]
    evaluation = evaluate(dataset, estimators, jobs=args.jobs, device=args.device,
                          progress=not args.quiet and sys.stderr.isatty(),
                          embeddings=args.figures, local_ids=local_ids if args.figures else (),
                          tuning=args.tuning)
    print(evaluation.markdown(args.compare))
    out_dir = args.out if args.out is not None else Path("musicssl-eval") / args.dataset
    written = write_results(evaluation, out_dir, args.compare)
    if args.figures:
        written += write_figures(evaluation, out_dir)
    for failure in evaluation.failures[:10]:
        print(f"failed: {failure.item.path}: {failure.error}", file=sys.stderr)
    default = "" if args.out is not None else ", the default folder (--out DIR chooses another)"
    print(f"wrote {len(written)} files (results.json, results.md{', figures' if args.figures else ''}) "
          f"to {out_dir.resolve()}{default}", file=sys.stderr)
    return 1 if evaluation.failures else 0
