"""Does a key model's calibration depend on which reference texture it is read from?

SPEC §1.6 calibrates a model (which row is major, which column is which tonic)
on one synthetic signal per key: four I–IV–V–I cadences with a bass line, then
the scale up and down. This script calibrates each model five ways: on that
signal, on its cadences alone, on its scale alone (each part repeated to 14 s,
the length of the whole signal) and on two draws of random diatonic chord
progressions in the same keys (``progression_signal``), and prints the
calibrations and how many of the 24 signals each classifies right. A model whose
frame is a property of the key agrees with itself on every part (the released
checkpoint does); a model whose frame depends on texture may also be
calibrated a fifth away from where music puts it (docs/training.md,
"Answers a fifth away").

    python benchmarks/key_reference_parts.py ../shared/fixtures/skey.pt src/musicssl/data/models/skey_band.safetensors
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from musicssl.key.calibration import (
    calibrate_model,
    describe_frame,
    progression_signal,
    reference_keys,
    reference_signal,
)
from musicssl.key.checkpoint import load_key_model

#: the calibration's signal, its two parts, and random diatonic progressions (two draws)
PARTS = {"whole signal": ("cadences", "scale"), "cadences": ("cadences",), "scale": ("scale",),
         "progressions 0": 0, "progressions 1": 1}


def _signal(key, sr: int, part) -> np.ndarray:
    return progression_signal(key, sr, seed=part) if isinstance(part, int) else reference_signal(key, sr, parts=part)


def part_calibrations(model: torch.nn.Module, frontend, seconds: float = 14.0) -> dict[str, dict]:
    """Calibration (``calibrate_model`` with ``"reference_accuracy"``) of ``model`` from each of
    :data:`PARTS`, every part's signals repeated to at least ``seconds``."""
    out = {}
    for name, part in PARTS.items():
        signals = []
        for key in reference_keys():
            x = _signal(key, frontend.sr, part)
            signals.append(np.tile(x, int(np.ceil(seconds * frontend.sr / len(x)))))
        out[name] = calibrate_model(model, frontend, signals=signals)
    return out


def describe(calibration: dict) -> str:
    """:func:`describe_frame` with the share of the 24 signals classified right."""
    return f"{describe_frame(calibration)} ({100 * calibration['reference_accuracy']:.0f} % of 24)"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="key model checkpoints")
    args = p.parse_args(argv)
    for path in args.models:
        loaded = load_key_model(path)
        calibrations = part_calibrations(loaded.model, loaded.frontend_config)
        frames = {(tuple(c["row_modes"]), tuple(c["row_offsets"])) for c in calibrations.values()}
        print(f"{path}: {'one frame' if len(frames) == 1 else f'{len(frames)} different frames'}")
        for name, calibration in calibrations.items():
            print(f"  {name:13s} {describe(calibration)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
