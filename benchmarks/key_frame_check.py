"""Which reference signal gives a key model the frame that labelled music needs?

For each model: its calibration from the SPEC signal (SPEC §1.6, what every export
stores), from random diatonic progressions (what ``musicssl.key.calibration.frame_check`` fits),
and from both together; each scored on a labelled set (MIREX / mode %, network
alone, the estimator's transposition averaging). A last column gives the frame the
set's labels pick (the calibration fitted to the labelled clips: a diagnostic, never
stored) and a closing line counts, over the models, how often each signal finds it,
separately where the SPEC signal and the progressions agree and where they differ.

    python benchmarks/key_frame_check.py src/musicssl/data/models/skey_band.safetensors \\
        ../shared/fixtures/skey.pt runs/exp/*/model.safetensors
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from musicssl.dsp.cqt import log_compress
from musicssl.evaluation.datasets import load_dataset
from musicssl.evaluation.key_metrics import score_key
from musicssl.key.calibration import (
    describe_frame,
    fit_calibration,
    fit_reference,
    model_outputs,
    progression_signals,
    reference_keys,
    reference_signal,
    same_frame,
    to_canonical,
)
from musicssl.key.estimator import KeyEstimator
from musicssl.key.features import compute_features, loop_to_min_frames
from musicssl.keys import Key


def dataset_outputs(estimator: KeyEstimator, items) -> np.ndarray:
    """Native outputs ``(n_items, 24)`` of the estimator's network on each labelled clip."""
    fe = estimator.frontend_config
    out = []
    for item in items:
        magnitude = compute_features(str(item.path), fe, offset=item.offset, duration=item.duration).magnitude
        logcqt = log_compress(torch.as_tensor(loop_to_min_frames(magnitude))[None, None], fe.top_db)
        out.append(estimator.native_probabilities(logcqt)[0])
    return np.stack(out)


def scores(native: np.ndarray, keys: list[Key], calibration: dict) -> tuple[float, float]:
    """MIREX and mode accuracy (%) of the calibrated arg-max keys."""
    guesses = to_canonical(native, calibration).argmax(1)
    found = [score_key(k, Key.from_index(int(g))) for k, g in zip(keys, guesses)]
    return 100 * float(np.mean([s.mirex for s in found])), 100 * float(np.mean([s.mode for s in found]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="two-row key models (project files or released .pt)")
    p.add_argument("--dataset", default="dev-synth", help="dataset format (see musicssl evaluate)")
    p.add_argument("--manifest", default="../shared/data/dev-synth", help="dataset folder or manifest")
    args = p.parse_args(argv)
    items = load_dataset(args.dataset, args.manifest).items
    keys = [item.key for item in items]
    print(f"{len(items)} clips of {args.manifest}; MIREX / mode (%) with each calibration")
    print(f"{'model':40s} {'SPEC signal':>12s} {'progressions':>12s} {'both':>12s} {'labels':>12s}  frames")
    found = {"agree": [0, 0, 0], "differ": [0, 0, 0]}      # models; SPEC right; progressions right
    for path in args.models:
        estimator = KeyEstimator.from_checkpoint(path)
        native_of = model_outputs(estimator.model, estimator.frontend_config)
        sr = estimator.frontend_config.sr
        # each signal set through the network once (as calibrate and frame_check cut them)
        outputs = {}
        for name, signals in (("spec", [reference_signal(k, sr) for k in reference_keys()]),
                              ("progressions", progression_signals(sr))):
            length = min(len(x) for x in signals)
            outputs[name] = native_of(np.stack([x[:length] for x in signals]), sr)
        spec = fit_reference(outputs["spec"])
        check = {"progressions": fit_reference(outputs["progressions"])}
        check["agrees"] = same_frame(spec, check["progressions"])
        both = fit_reference(np.concatenate([outputs["spec"], outputs["progressions"]]))
        native = dataset_outputs(estimator, items)
        labels = fit_calibration(native, keys)
        row = [scores(native, keys, c) for c in (spec, check["progressions"], both, labels)]
        group = found["agree" if check["agrees"] else "differ"]
        group[0] += 1
        group[1] += same_frame(spec, labels)
        group[2] += same_frame(check["progressions"], labels)
        print(f"{str(path)[-40:]:40s} " + " ".join(f"{m:5.1f} / {o:4.1f}" for m, o in row)
              + f"  SPEC: {describe_frame(spec)}; progressions: "
              + ("same" if check["agrees"] else describe_frame(check["progressions"]))
              + f"; labels: {describe_frame(labels)}", flush=True)
    for name, (n, spec_right, prog_right) in found.items():
        print(f"SPEC signal and progressions {name} on {n} models: the labels' frame is the SPEC signal's "
              f"for {spec_right}, the progressions' for {prog_right}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
