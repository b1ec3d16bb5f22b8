"""``musicssl train-beats``: pretrain Zero-Note Samba from unlabeled audio, or fine-tune it.

Pretraining::

    musicssl train-beats --data DIR|MANIFEST [...] --out RUN [--config configs/zerons_default.yaml]

builds (or reuses) a feature cache of the separated parts (``RUN/cache`` or
``--cache``), trains with checkpoints in ``RUN/checkpoints`` (``--resume`` to
continue) and exports ``RUN/zerons.safetensors``.

Few-shot fine-tuning (1–10 annotated songs)::

    musicssl train-beats --finetune LABELS.csv|DIR --init CKPT --out RUN

``LABELS.csv`` has ``path`` and ``beats_path`` columns; a folder is searched
for audio files with a ``.beats``/``.txt`` file of the same name beside them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

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


#: CLI option -> PretrainConfig field (only when given)
_OVERRIDES = ("width", "batch_size", "lr", "max_steps", "max_minutes", "clip_seconds",
              "clips_per_epoch", "max_seconds_per_track", "temperature", "num_workers", "seed",
              "accelerator", "devices", "precision", "threads", "checkpoint_every", "separator")


def add_parser(subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help_text, description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", metavar="SRC",
                   help="audio folders, files or manifests (CSV with a 'path' column, or .txt)")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder (cache, checkpoints, model)")
    p.add_argument("--config", metavar="YAML", help="settings file (configs/zerons_*.yaml)")
    p.add_argument("--cache", metavar="DIR", help="feature cache folder (default OUT/cache)")
    p.add_argument("--include", nargs="+", metavar="TEXT",
                   help="keep only tracks whose path contains one of these texts")
    p.add_argument("--cache-only", action="store_true", help="build the feature cache and stop")
    p.add_argument("--cache-minutes", type=float, help="stop adding tracks to the cache after this long")
    p.add_argument("--max-tracks", type=int, help="use at most this many tracks (evenly spread)")
    p.add_argument("--resume", nargs="?", const="last", metavar="CKPT",
                   help="continue from a Lightning checkpoint (default OUT/checkpoints/last.ckpt)")
    p.add_argument("--hard-negatives", action="store_true", default=None,
                   help="add time-shifted percussive outputs as negatives")
    for opt, typ in (("width", float), ("batch-size", int), ("lr", float), ("max-steps", int),
                     ("max-minutes", float), ("clip-seconds", float), ("clips-per-epoch", int),
                     ("max-seconds-per-track", float), ("temperature", float), ("num-workers", int),
                     ("seed", int), ("accelerator", str), ("devices", str), ("precision", str),
                     ("threads", int), ("checkpoint-every", int), ("separator", str)):
        p.add_argument(f"--{opt}", type=typ, default=None)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--export", metavar="CKPT",
                   help="only convert a training checkpoint (.ckpt) to OUT (.safetensors) and stop")
    p.add_argument("--half", action="store_true", help="with --export: store float16 weights")
    ft = p.add_argument_group("few-shot fine-tuning")
    ft.add_argument("--finetune", metavar="LABELS", help="annotated songs: CSV (path, beats_path) or folder")
    ft.add_argument("--init", metavar="CKPT", help="ZeroNS model to start from (default: shipped model)")
    ft.add_argument("--epochs", type=int, default=30, help="fine-tuning passes over the songs")
    p.set_defaults(func=run)
    return p


def _config_from_args(args) -> "PretrainConfig":
    from musicssl.beat.training import PretrainConfig

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
        from musicssl.beat.training import export_lightning_checkpoint

        out = Path(args.out)
        out = out if out.suffix == ".safetensors" else out / "zerons.safetensors"
        print(f"model written to {export_lightning_checkpoint(args.export, out, half=args.half)}")
        return 0
    if args.finetune:
        return _run_finetune(args)
    if not args.data and not args.cache:
        raise ConfigError("give --data (audio to train on) or --cache (an existing feature cache)")
    from musicssl.beat.data import CacheSettings, build_cache, list_tracks
    from musicssl.beat.separation import get_separator
    from musicssl.beat.training import pretrain

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
    from musicssl.beat.finetune import FinetuneConfig, finetune_from_labels

    cfg = FinetuneConfig(epochs=args.epochs)
    if args.lr is not None:
        cfg.lr = args.lr
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    path = finetune_from_labels(args.finetune, args.out, init=args.init, config=cfg)
    print(f"fine-tuned model written to {path}")
    return 0
