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
from musicssl.key.config import TrainConfig

# One sentence per setting, with its unit; the default is appended from TrainConfig
# (or _DEFAULT_TEXT where the value alone says too little).
_HELP = {
    "data": "your music: audio folders (searched recursively), manifests (.csv with a path column and "
            "optional key/split columns; .txt, one path per line) or files; no labels needed",
    "val_manifest": "labelled clips (CSV path,key) on which validation also reports calibrated MIREX, KSEA "
                    "and mode accuracy; the labels only score, never train",
    "val_fraction": "share of your tracks (0-1) held out for the validation loss, split by track",
    "cache_dir": "folder of the feature cache (each track's CQT, float16), built once and reused; "
                 "strongly recommended",
    "derive_cache_from": "an existing feature cache at a finer hop (e.g. 1024 for --hop-length 2048) whose "
                         "frames are subsampled instead of recomputing the CQT",
    "retry_failed": "compute the tracks the feature cache recorded as failed again (a changed file is "
                    "always recomputed)",
    "segment_seconds": "length of each of the two segments of a training item, in seconds",
    "short_tracks": "what to do with tracks shorter than two segments: overlap (two overlapping "
                    "segments) or skip",
    "min_track_seconds": "tracks shorter than this many seconds are not used",
    "max_track_seconds": "only the middle this-many seconds of a longer track are cached and used",
    "val_labelled_limit": "score only the first N clips of --val-manifest",
    "eq_db": "augmentation: a random smooth equaliser of up to +-EQ_DB dB on each training segment "
             "(needs --cache-dir; 0 = off)",
    "augment": "waveform augmentation of the training tracks when the feature cache is built: none, real "
               "(room reverb, MP3/Opus round trip, detune, time stretch, noise) or a comma list of those "
               "names; needs --cache-dir and its own cache folder",
    "init_model": "key model (.safetensors) whose weights start the training (fine-tuning); front end and "
                  "architecture must match",
    "hop_length": "CQT hop in samples at 22 050 Hz (512 = 23 ms, the paper's; 2048 is 4x cheaper); "
                  "stored with the model",
    "objective": "training objective: stone (12 classes), stone24, skey, supervised (needs a key column) "
                 "or semi",
    "mode_rule": "S-KEY mode pseudo-label: authors (SPEC: c[s] > c[s+3]), thirds (major vs minor third "
                 "above the column the batch's profiles say is the tonic; a project variant) or triads "
                 "(the same above a tonic each item picks among the batch's 3 best; a project variant)",
    "tonic_weight": "S-KEY project variant: weight of a cross-entropy with 24-key pseudo-targets (tonic "
                    "picked as in the triads rule, column at each row's most common distance from it); 0 = off",
    "mode_profile": "pitch-class profile the pseudo-label reads: log (SPEC: log-CQT), magnitude (linear CQT) "
                    "or power (its square)",
    "omega": "the key loss's circle: 7 (circle of fifths) or 1 (semitones)",
    "key_weight": "weight of the key term of the loss",
    "mode_weight": "weight of the mode term of the loss (S-KEY, 24-STONE)",
    "balance_weight": "weight of the term that keeps the major/minor shares of a batch balanced (S-KEY)",
    "shift_momentum": "thirds/triads rules: weight of the earlier batches in the vote on where the tonic "
                      "sits relative to the model's column (0-1; 0.9 = about the last 10 batches; 0 = each "
                      "batch votes alone, which flips between batches of 16)",
    "balance_target": "the major share that term pulls a batch to: half (SPEC) or pseudo (the share of the "
                      "batch's mode pseudo-labels; a project variant)",
    "supervised_rows": "supervised/semi: 2 = 24 keys, 1 = 12 key signatures",
    "channels": "ChromaNet channels of each stage (one integer per stage)",
    "kernels": "ChromaNet kernel size of each stage (as many as --channels)",
    "drop_path": "stochastic-depth probability of the residual stages (0-1)",
    "epochs": "passes over the training tracks",
    "max_steps": "stop after N optimizer steps (-1: after --epochs)",
    "batch_size": "training items (pairs of segments) per optimizer step and process",
    "lr": "peak learning rate of AdamW",
    "weight_decay": "AdamW weight decay (not applied to biases and scales)",
    "warmup_steps": "optimizer steps of linear learning-rate warm-up",
    "min_lr_fraction": "the cosine decay ends at this fraction of --lr (1 = constant learning rate)",
    "ema_decay": "keep an exponential moving average of the weights (e.g. 0.999; 0 = off): it is "
                 "validated and exported",
    "grad_clip": "clip the gradient norm to this value (0 = off)",
    "accelerator": "Lightning accelerator: auto, cpu, gpu, cuda or mps",
    "devices": "devices per node: a number, a list or auto",
    "num_nodes": "machines in a multi-node run",
    "strategy": "Lightning strategy: auto, ddp, ddp_spawn, ...",
    "precision": "auto (bf16-mixed or 16-mixed on GPU, 32-true on CPU), 32-true, bf16-mixed or 16-mixed",
    "num_workers": "data-loading worker processes",
    "threads": "torch intra-op threads",
    "compile": "torch.compile the network",
    "channels_last": "run the network in channels-last memory layout (faster on CPUs)",
    "seed": "random seed of segment positions, crops and initial weights",
    "out": "run folder (checkpoints, logs, model.safetensors)",
    "resume": "continue from a checkpoint: a .ckpt path, last (OUT/checkpoints/last.ckpt) or auto "
              "(last when it exists)",
    "max_minutes": "stop cleanly after this many minutes of wall clock, then export",
    "checkpoint_every": "save a checkpoint every N optimizer steps (and at the end)",
    "log_every": "write the training metrics every N optimizer steps",
    "val_every": "validate every N epochs",
    "progress": "show a progress bar (on standard error)",
    "export": "at the end, calibrate the model and write OUT/model.safetensors",
    "select": "which weights a 24-class model exports: last, or frame_check (the last step whose "
              "label-free frame check agrees, when the last step's does not)",
    "select_every": "run the frame check of --select frame_check every N optimizer steps",
    "name": "a name for the run, stored in the exported model's provenance",
    "data_pipeline": "how training batches are made: loader (DataLoader workers assemble items) or "
                     "device (the whole feature cache on the training device, batches drawn by tensor "
                     "operations; the GPU job's choice)",
    "bank": "a packed key bank (.safetensors written by python -m musicssl.gpu_job pack) used instead of "
            "--data and the cache; implies --data-pipeline device",
}

_DEFAULT_TEXT = {
    "data": "none; required",
    "val_manifest": "none: validation loss only",
    "cache_dir": "none: segments are decoded at every step",
    "derive_cache_from": "none",
    "val_labelled_limit": "all",
    "warmup_steps": "5 %% of all steps, at most 2000",
    "threads": "torch's choice",
    "resume": "start afresh",
    "max_minutes": "no limit",
    "name": "none",
    "bank": "none",
    "init_model": "none (random initial weights)",
}


_METAVAR = {"data": "SRC", "val_manifest": "CSV", "cache_dir": "DIR", "derive_cache_from": "DIR",
            "out": "DIR", "resume": "CKPT", "config": "YAML", "init_model": "MODEL"}


def _help(f) -> str:
    """``f``'s help sentence with its default, e.g. ``"... (default: 15.0)"``."""
    if f.name in _DEFAULT_TEXT:
        default = _DEFAULT_TEXT[f.name]
    else:
        value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, list):
            value = " ".join(map(str, value))
        default = str(value).replace("%", "%%")
    return f"{_HELP[f.name]} (default: {default})"


_DESCRIPTION = "Train a key model (STONE, 24-STONE, S-KEY, Sup-/Semi-TONE) from your audio."

_EPILOG = """examples:
  musicssl train --config configs/skey_tiny_cpu.yaml --data ~/Music      (a few minutes on a CPU)
  musicssl train --config configs/skey_default.yaml --data ~/Music --resume last
  musicssl train --data music/ --objective skey --cache-dir cache/ --out runs/skey
  torchrun --nproc-per-node 4 -m musicssl.cli.main train --config configs/skey_paper.yaml \\
      --data /music --devices 4

Every setting of a YAML config (docs/training.md) is also a flag, and flags
override the file. At the end the model is calibrated and written to
OUT/model.safetensors, ready for musicssl key --checkpoint."""


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

    p = subparsers.add_parser(name, help=help_text, description=_DESCRIPTION, epilog=_EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="YAML",
                   help="YAML file of settings, e.g. configs/skey_default.yaml; flags override it "
                        "(default: none, the built-in settings)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved settings as JSON and exit (default: off)")
    p.add_argument("--prepare-only", action="store_true",
                   help="scan the data and build the feature cache, then exit; run it once before "
                        "multi-GPU jobs (default: off)")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        tp = _base_type(hints[f.name])
        help_ = _help(f)
        metavar = _METAVAR.get(f.name)
        if f.name == "data":
            p.add_argument(flag, nargs="+", default=None, metavar=metavar, help=help_)
        elif typing.get_origin(tp) is list:
            p.add_argument(flag, nargs="+", type=int, default=None, help=help_)
        elif tp is bool:
            p.add_argument(flag, type=_bool, default=None, metavar="true|false", help=help_)
        elif tp in (int, float):
            p.add_argument(flag, type=tp, default=None, help=help_)
        else:
            p.add_argument(flag, default=None, metavar=metavar, help=help_)
    p.set_defaults(func=run)
    return p


def config_from_args(args: argparse.Namespace):
    """The :class:`TrainConfig` of a parsed command line (file, then flags)."""

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
    from musicssl.key.train import prepare_data, train

    if args.prepare_only:
        data = prepare_data(config, log=lambda msg: print(msg, file=sys.stderr))
        print(json.dumps({k: v for k, v in data.report.items() if k != "scan"}, indent=1))
        return 0
    summary = train(config, log=lambda msg: print(msg, file=sys.stderr))
    if "model" in summary:
        print(summary["model"])
    return 0
