"""``musicssl train-beats``: pretrain Zero-Note Samba from unlabeled audio, or fine-tune it.

Pretraining builds (or reuses) a feature cache of the separated parts
(``RUN/cache`` or ``--cache``), trains with checkpoints in
``RUN/checkpoints`` (``--resume`` to continue) and exports
``RUN/zerons.safetensors``. Few-shot fine-tuning starts from a ZeroNS model
and 1-10 annotated songs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from musicssl.beat.config import PretrainConfig
from musicssl.beat.data import CacheSettings, build_cache, list_tracks
from musicssl.beat.finetune import FinetuneConfig, finetune_from_labels
from musicssl.beat.separation import get_separator
from musicssl.errors import ConfigError


def _load_yaml(path: str | None) -> dict:
    if not path:
        return {}
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} not found")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a config must be a mapping of settings")
    return data


_DESCRIPTION = "Pretrain Zero-Note Samba (ZeroNS) beat networks from unlabeled audio, or fine-tune them."

_EPILOG = """pretraining:
  musicssl train-beats --data ~/Music --out runs/zerons [--config configs/zerons_cpu_small.yaml]
  builds (or reuses) a feature cache of the separated parts (RUN/cache or --cache),
  trains with checkpoints in RUN/checkpoints (--resume continues) and exports
  RUN/zerons.safetensors, ready for musicssl beats --checkpoint.

few-shot fine-tuning (1-10 annotated songs):
  musicssl train-beats --finetune LABELS.csv|DIR --init CKPT --out RUN
  LABELS.csv has path and beats_path columns; a folder is searched for audio
  files with a .beats/.txt file of the same name beside them (one beat time
  in seconds per line).

Settings without a flag value come from --config, else from the built-in
defaults shown."""

#: flag -> (type, metavar, help sentence) of the PretrainConfig settings that are also flags
_SETTINGS = {
    "width": (float, "X", "network width as a fraction of the paper's (1 = full size, 0.125 = the "
                          "shipped small model)"),
    "batch-size": (int, "N", "clips per optimizer step"),
    "lr": (float, "X", "learning rate of Adam; with --finetune, of the fine-tuning (whose default is 0.001)"),
    "max-steps": (int, "N", "stop after N optimizer steps"),
    "max-minutes": (float, "MIN", "stop cleanly after this many minutes of wall clock"),
    "clip-seconds": (float, "SECONDS", "length of a training clip in seconds"),
    "clips-per-epoch": (int, "N", "clips drawn per epoch"),
    "max-seconds-per-track": (float, "SECONDS", "only this many seconds of each track are cached"),
    "temperature": (float, "X", "temperature of the NT-Xent synchrony loss"),
    "num-workers": (int, "N", "data-loading worker processes"),
    "seed": (int, "N", "random seed of clip positions and initial weights"),
    "accelerator": (str, "NAME", "Lightning accelerator: auto, cpu, gpu, cuda or mps"),
    "devices": (str, "N", "devices to train on: a number or auto"),
    "precision": (str, "NAME", "Lightning precision: 32-true, bf16-mixed or 16-mixed"),
    "threads": (int, "N", "torch intra-op threads"),
    "checkpoint-every": (int, "N", "save a checkpoint every N optimizer steps"),
    "separator": (str, "NAME", "percussive/non-percussive separator: hpss or an import path "
                               "package.module:name"),
}


#: PretrainConfig fields that a given flag overrides
_OVERRIDES = tuple(flag.replace("-", "_") for flag in _SETTINGS)


def _default(field_name: str) -> str:
    from dataclasses import MISSING, fields

    f = {f.name: f for f in fields(PretrainConfig)}[field_name]
    value = f.default if f.default is not MISSING else f.default_factory()
    if value is None:
        return {"max_minutes": "no limit", "threads": "torch's choice"}.get(field_name, "none")
    return str(value)


def add_parser(subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help_text, description=_DESCRIPTION, epilog=_EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", metavar="SRC",
                   help="your audio: folders (searched recursively), files or manifests (CSV with a path "
                        "column, or .txt with one path per line) (default: none; needed unless --cache "
                        "already holds the features)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="run folder for the cache, checkpoints and the model (required)")
    p.add_argument("--config", metavar="YAML",
                   help="settings file, e.g. configs/zerons_cpu_small.yaml (default: none, the built-in settings)")
    p.add_argument("--cache", metavar="DIR", help="feature cache folder (default: OUT/cache)")
    p.add_argument("--include", nargs="+", metavar="TEXT",
                   help="keep only tracks whose path contains one of these texts (default: every track)")
    p.add_argument("--cache-only", action="store_true",
                   help="build the feature cache and stop (default: off)")
    p.add_argument("--cache-minutes", type=float, metavar="MIN",
                   help="stop adding tracks to the cache after this many minutes (default: no limit)")
    p.add_argument("--max-tracks", type=int, metavar="N",
                   help="use at most N tracks, evenly spread over the list (default: all)")
    p.add_argument("--resume", nargs="?", const="last", metavar="CKPT",
                   help="continue from a Lightning checkpoint; without a value OUT/checkpoints/last.ckpt "
                        "(default: start afresh)")
    p.add_argument("--hard-negatives", action="store_true", default=None,
                   help="add time-shifted percussive outputs as negatives of the loss (default: off)")
    for opt, (typ, metavar, sentence) in _SETTINGS.items():
        p.add_argument(f"--{opt}", type=typ, default=None, metavar=metavar,
                       help=f"{sentence} (default: {_default(opt.replace('-', '_'))})")
    p.add_argument("--no-progress", action="store_true",
                   help="print a line every few steps instead of a progress bar (default: progress bar "
                        "on standard error)")
    p.add_argument("--export", metavar="CKPT",
                   help="only convert a training checkpoint (.ckpt) to OUT (.safetensors) and stop "
                        "(default: off, train)")
    p.add_argument("--half", action="store_true",
                   help="with --export: store float16 weights, half the size (default: float32)")
    ft = p.add_argument_group("few-shot fine-tuning")
    ft.add_argument("--finetune", metavar="LABELS",
                    help="fine-tune on these annotated songs: a CSV (path, beats_path) or a folder of audio "
                         "with .beats files (default: off, pretrain)")
    ft.add_argument("--init", metavar="CKPT", help="ZeroNS model to start from (default: the shipped model)")
    ft.add_argument("--steps", type=int, default=None, metavar="N",
                    help="fine-tuning steps, each on 4 random 5 s windows of the songs (default: "
                         f"{FinetuneConfig.steps})")
    ft.add_argument("--from-scratch", action="store_true",
                    help="with --finetune: re-initialise the networks instead of starting from --init's "
                         "weights (default: off)")
    p.set_defaults(func=run)
    return p


def _config_from_args(args) -> "PretrainConfig":
    values = _load_yaml(args.config)
    for key in _OVERRIDES:
        v = getattr(args, key, None)
        if v is not None:
            if key == "devices":
                v = int(v) if str(v).isdigit() else v
            values[key] = v
    if args.hard_negatives:
        values["hard_negatives"] = True
    if args.include:
        values["include"] = list(args.include)
    return PretrainConfig.from_dict(values)


def run(args) -> int:
    if args.export:
        from musicssl.beat.train import export_lightning_checkpoint

        out = Path(args.out)
        out = out if out.suffix == ".safetensors" else out / "zerons.safetensors"
        print(f"model written to {export_lightning_checkpoint(args.export, out, half=args.half)}")
        return 0
    if args.finetune:
        return _run_finetune(args)
    if not args.data and not args.cache:
        raise ConfigError("give --data (audio to train on) or --cache (an existing feature cache)")
    from musicssl.beat.train import pretrain

    config = _config_from_args(args)
    out = Path(args.out)
    cache_dir = Path(args.cache) if args.cache else out / "cache"
    if args.data:
        tracks = list_tracks(args.data, include=config.include or None)
        if args.max_tracks and len(tracks) > args.max_tracks:
            step = len(tracks) / args.max_tracks
            tracks = [tracks[int(i * step)] for i in range(args.max_tracks)]
        import random

        random.Random(config.seed).shuffle(tracks)  # a time-limited cache still mixes sources
        print(f"{len(tracks)} tracks; feature cache in {cache_dir}")
        settings = CacheSettings(max_seconds=config.max_seconds_per_track,
                                 min_seconds=config.clip_seconds, separator=config.separator)
        entries = build_cache(tracks, cache_dir, settings, get_separator(config.separator),
                              time_budget_s=None if args.cache_minutes is None else args.cache_minutes * 60)
        print(f"cache: {len(entries)} tracks, {sum(e.seconds for e in entries) / 3600:.2f} h")
    if args.cache_only:
        return 0
    path = pretrain(cache_dir, out, config, resume=args.resume, progress=not args.no_progress)
    print(f"model written to {path}")
    return 0


def _run_finetune(args) -> int:
    values = {"from_scratch": args.from_scratch}
    if args.steps is not None:
        values["steps"] = args.steps
    if args.lr is not None:
        values["lr"] = args.lr
    cfg = FinetuneConfig(**values)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    path = finetune_from_labels(args.finetune, args.out, init=args.init, config=cfg)
    print(f"fine-tuned model written to {path}")
    return 0
