"""``musicssl train``: train a key model (STONE, 24-STONE, S-KEY, Sup-/Semi-TONE) from audio.

Examples::

    musicssl train --config configs/skey_tiny_cpu.yaml
    musicssl train --data music/ --objective skey --cache-dir cache/ --out runs/skey
    musicssl train --config configs/skey_default.yaml --resume last
    torchrun --nproc-per-node 4 -m musicssl.cli.main train --config configs/skey_paper.yaml --devices 4

Every setting of the YAML config (see ``docs/training.md``) is also a flag;
flags override the file. At the end the model is calibrated and written to
``OUT/model.safetensors`` (usable with ``musicssl key --checkpoint``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing

from musicssl.errors import ConfigError

_HELP = {
    "data": "audio folders, manifests (.csv with a path column, optional key/split; .txt) or files",
    "val_manifest": "labelled validation manifest (path,key) for calibrated MIREX/KSEA/mode accuracy",
    "val_fraction": "share of tracks held out for the validation loss (split by track)",
    "cache_dir": "feature cache folder (whole-track CQT, float16); strongly recommended",
    "derive_cache_from": "existing feature cache at a finer hop (e.g. 1024 for hop 2048): its frames are "
                         "subsampled instead of recomputing the CQT",
    "segment_seconds": "segment length in seconds (two per item)",
    "short_tracks": "tracks shorter than two segments: overlap (two overlapping segments) or skip",
    "objective": "stone | stone24 | skey | supervised | semi",
    "mode_rule": "S-KEY mode pseudo-label: authors (SPEC: c[s] > c[s+3]), thirds (major vs minor third "
                 "above the column the batch's profiles say is the tonic; a project variant) or triads "
                 "(the same above a tonic each item picks among the batch's 3 best; a project variant)",
    "tonic_weight": "S-KEY project variant: weight of a cross-entropy with 24-key pseudo-targets (tonic picked "
                    "as in the triads rule, column at each row's most common distance from it); 0 = off",
    "mode_profile": "pitch-class profile of the pseudo-label: log (SPEC: log-CQT), magnitude (linear CQT) or power (its square)",
    "eq_db": "augmentation: a random smooth equaliser of up to +-EQ_DB dB on each training segment (needs cache_dir; 0 = off)",
    "ema_decay": "keep an exponential moving average of the weights (e.g. 0.999; 0 = off): it is validated and exported",
    "omega": "circle of fifths (7) or semitones (1)",
    "devices": "devices per node (int, list or 'auto')",
    "precision": "auto (bf16-mixed/16-mixed on GPU, 32-true on CPU), 32-true, bf16-mixed, 16-mixed",
    "resume": "checkpoint to resume from, or 'last' (OUT/checkpoints/last.ckpt) or 'auto'",
    "checkpoint_every": "save a checkpoint every N optimizer steps (and at the end)",
    "max_steps": "stop after N optimizer steps (-1: use epochs)",
    "threads": "torch intra-op threads",
    "compile": "torch.compile the network",
    "out": "output folder (checkpoints, logs, model.safetensors)",
}


def _base_type(tp):
    origin = typing.get_origin(tp)
    if origin is typing.Union or str(origin) == "types.UnionType":
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0]) if args else str
    return tp


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_parser(subparsers, name: str = "train", help_text: str = "train a key model from audio"):
    """Register ``musicssl train`` on ``subparsers``."""
    from musicssl.key.training import TrainConfig

    p = subparsers.add_parser(name, help=help_text, description=__doc__.split("\n\n")[0].strip(),
                              epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file of settings (flags override it)")
    p.add_argument("--print-config", action="store_true", help="print the resolved settings and exit")
    p.add_argument("--prepare-only", action="store_true",
                   help="scan the data and build the feature cache, then exit (run once before multi-GPU jobs)")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        tp = _base_type(hints[f.name])
        help_ = _HELP.get(f.name, f.name.replace("_", " "))
        if f.name == "data":
            p.add_argument(flag, nargs="+", default=None, help=help_)
        elif typing.get_origin(tp) is list:
            p.add_argument(flag, nargs="+", type=int, default=None, help=help_)
        elif tp is bool:
            p.add_argument(flag, type=_bool, default=None, metavar="true|false", help=help_)
        elif tp in (int, float):
            p.add_argument(flag, type=tp, default=None, help=help_)
        else:
            p.add_argument(flag, default=None, help=help_)
    p.set_defaults(func=run)
    return p


def config_from_args(args: argparse.Namespace):
    """The :class:`TrainConfig` of a parsed command line (file, then flags)."""
    from musicssl.key.training import TrainConfig

    overrides = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(TrainConfig)}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.config:
        return TrainConfig.from_yaml(args.config, overrides)
    return TrainConfig.from_mapping(overrides)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=1))
        return 0
    if not config.data:
        raise ConfigError("no training data: give --data or a config with 'data'")
    from musicssl.key.training import prepare_data, train

    if args.prepare_only:
        data = prepare_data(config, log=lambda msg: print(msg, file=sys.stderr))
        print(json.dumps({k: v for k, v in data.report.items() if k != "scan"}, indent=1))
        return 0
    summary = train(config, log=lambda msg: print(msg, file=sys.stderr))
    if "model" in summary:
        print(summary["model"])
    return 0
