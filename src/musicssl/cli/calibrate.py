"""``musicssl calibrate``: calibrate a 24-key (or 12-signature) model and save it
in the project format, so later loads need no calibration."""

from __future__ import annotations

import json
from pathlib import Path

from musicssl.errors import ConfigError
from musicssl.key.calibration import (
    calibrate_model,
    check_model_frame,
    describe_frame_check,
)
from musicssl.key.checkpoint import load_key_model, save_key_model


def add_parser(subparsers, name: str, help_text: str) -> None:
    p = subparsers.add_parser(name, help=help_text, description=(
        "Run the package's reference signals (cadences and scales in all 24 keys) through a model, "
        "find which output row is major and which column is which tonic (SPEC section 1.6), print the "
        "mapping as JSON, and with -o save the model with it in the project's .safetensors format. "
        "A frame check calibrates again on random diatonic chord progressions and says whether they "
        "agree (where they differ, score the model on clips of known key before trusting it)."),
        epilog="example: musicssl calibrate skey.pt -o skey.safetensors")
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="project .safetensors, released S-KEY/STONE .pt, or a training .ckpt written by "
                        "musicssl train")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write the calibrated model to FILE (.safetensors); a training .ckpt needs it "
                        "(default: none, print the mapping only)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="where the model runs on the reference signals (default: cpu)")
    p.set_defaults(func=run)


def run(args) -> int:
    if str(args.checkpoint).endswith(".ckpt"):
        from musicssl.key.train import export_training_checkpoint

        if not args.output:
            raise ConfigError("a training .ckpt needs -o OUT.safetensors")
        print(json.dumps(export_training_checkpoint(args.checkpoint, args.output, args.device), indent=1))
        print(f"saved {args.output}")
        return 0
    loaded = load_key_model(args.checkpoint)
    calibration = calibrate_model(loaded.model, loaded.frontend_config, args.device)
    check = check_model_frame(loaded.model, loaded.frontend_config, calibration, args.device)
    print(json.dumps(calibration, indent=1))
    print(describe_frame_check(check, calibration))
    if loaded.calibration is not None:
        stored = {k: loaded.calibration.get(k) for k in ("row_modes", "row_offsets")}
        found = {k: calibration[k] for k in ("row_modes", "row_offsets")}
        print("stored calibration", "agrees" if stored == found else f"DIFFERS: {stored}")
    if args.output:
        provenance = dict(loaded.provenance or {})
        provenance["calibrated_from"] = str(Path(args.checkpoint).name)
        provenance["frame_check"] = check
        save_key_model(args.output, loaded.model, loaded.frontend_config, calibration, provenance)
        print(f"saved {args.output}")
    return 0
