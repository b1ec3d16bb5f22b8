"""Cost of transposition averaging: one crop vs 12 crops, one network pass per crop
(the former path) vs ``ChromaNet.forward_crops`` (the estimator's path now).

Single thread, one run. For each dev-synth clip (the first ``--limit``), the
log-CQT is computed once (decode + resample + CQT + log compression, timed as
"front end"), then the shipped model runs on it in three ways, each the best of
``--repeats`` runs: crop 0 only (the SPEC's inference), 12 crops one pass each,
12 crops through ``forward_crops`` (on CPU one crop at a time) and the same
crops as one batch (what ``forward_crops`` does on a GPU). Figures are milliseconds per 30 s of
audio; the largest difference between the two 12-crop probabilities is
printed too (it must stay below 1e-5).

    python benchmarks/key_crops_speed.py [--limit 8] [--repeats 3] [--checkpoint PATH]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from timing import best_time  # noqa: E402  (benchmarks/timing.py)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MUSICSSL_SHARED", REPO.parent / "shared"))
DEV_AUDIO = SHARED / "data" / "dev-synth" / "audio"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=8, help="dev-synth clips to time (default 8)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement; the best counts")
    parser.add_argument("--checkpoint", default=None, help="key model (default: the shipped one)")
    parser.add_argument("--crops", type=int, default=12, help="transpositions averaged (default 12)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    from musicssl.key.checkpoint import load_key_model
    from musicssl.io.audio import load_audio
    from musicssl.dsp.cqt import crop_bins, log_compress
    from musicssl.key.checkpoint import default_model_path
    from musicssl.key.features import magnitude_cqt

    path = args.checkpoint or default_model_path()
    loaded = load_key_model(path)
    model, config = loaded.model.eval(), loaded.frontend_config
    clips = sorted(DEV_AUDIO.glob("*"))[:args.limit]
    if not clips:
        raise SystemExit(f"no dev-synth audio in {DEV_AUDIO} (set MUSICSSL_SHARED)")
    import musicssl.key.model as model_module

    offsets = list(range(args.crops))
    totals = {"front end": 0.0, "1 crop": 0.0, f"{args.crops} crops, one pass each": 0.0,
              f"{args.crops} crops, forward_crops": 0.0, f"{args.crops} crops, as one batch": 0.0}
    magnitude_cqt(load_audio(clips[0], config.sr), config)   # warm-up: kernels, first allocations
    seconds = 0.0
    worst = 0.0
    with torch.inference_mode():
        for clip in clips:
            start = time.perf_counter()
            samples = load_audio(clip, config.sr)
            logcqt = log_compress(torch.as_tensor(magnitude_cqt(samples, config))[None, None], config.top_db)
            totals["front end"] += time.perf_counter() - start
            seconds += len(samples) / config.sr
            t, _ = best_time(lambda: model(crop_bins(logcqt, 0, config.crop_bins)), args.repeats)
            totals["1 crop"] += t
            t, old = best_time(lambda: torch.stack(
                [model(crop_bins(logcqt, o, config.crop_bins)) for o in offsets], dim=1), args.repeats)
            totals[f"{args.crops} crops, one pass each"] += t
            t, new = best_time(lambda: model.forward_crops(logcqt, offsets), args.repeats)
            totals[f"{args.crops} crops, forward_crops"] += t
            model_module.BATCH_CROPS_ON_CPU = True          # what forward_crops does on a GPU
            try:
                t, batched = best_time(lambda: model.forward_crops(logcqt, offsets), args.repeats)
            finally:
                model_module.BATCH_CROPS_ON_CPU = False
            totals[f"{args.crops} crops, as one batch"] += t
            worst = max(worst, float((old - batched).abs().max()))
            worst = max(worst, float((old - new).abs().max()))

    per30 = {k: 1000.0 * v * 30.0 / seconds for k, v in totals.items()}
    one = per30["1 crop"]
    front = per30["front end"]
    print(f"{len(clips)} dev-synth clips, {seconds:.0f} s of audio, model {Path(path).name}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'':34s}{'ms / 30 s':>10s}{'x 1 crop (network)':>20s}{'x 1 crop (+ front end)':>24s}")
    for name, ms in per30.items():
        if name == "front end":
            print(f"{name:34s}{ms:10.1f}")
            continue
        print(f"{name:34s}{ms:10.1f}{ms / one:20.2f}{(ms + front) / (one + front):24.2f}")
    print(f"largest |p(one pass each) - p(forward_crops or one batch)|: {worst:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
