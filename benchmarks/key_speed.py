"""Key-estimation speed and memory: musicssl's pipeline vs the authors' (nnAudio) pipeline.

Single thread. For each dev clip: decode, resample, CQT (+ log compression),
network, timed separately for

* **musicssl**: ``io.audio.load_audio`` (decode + soxr HQ resample +
  mono + peak normalisation), ``dsp.cqt.KeyFrontEnd``, ``ChromaNet``;
* **reference**: the authors' pipeline rebuilt from its parts: libsndfile
  decode, soxr HQ resample, mean of channels, peak normalisation, nnAudio
  0.3.3 ``VQT`` (the "reference" extra), the same log compression and the
  same network weights;

and the probabilities of the two are compared. Figures are seconds per 30 s
of audio (wall clock and process CPU time). A synthesised one-hour file is
then analysed in a subprocess by the streaming path (blocks → streaming CQT →
network on 10-minute windows) and by ``KeyEstimator.estimate_file`` to report
peak resident memory.

``--estimators`` times what users run instead: ``compute_features`` and
``KeyEstimator.estimate_features`` for the shipped network alone, the default
(the same network with its template prior) and the released checkpoint, with
the SPEC's single crop and with the default transposition averaging (12
crops), on the same clips ("network" includes the template prior).

    python benchmarks/key_speed.py [--limit N] [--skip-memory] [--hour-seconds 3600]
    python benchmarks/key_speed.py --estimators [--limit N]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MUSICSSL_SHARED", REPO.parent / "shared"))
CHECKPOINT = SHARED / "fixtures" / "skey.pt"
DEV_AUDIO = SHARED / "data" / "dev-synth" / "audio"
NOCTURNE = SHARED / "fixtures" / "nocturne_n02_in_e-flat_major.mp3"
SR = 22050


class Clock:
    """Accumulates wall and CPU seconds per named stage."""

    def __init__(self):
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def run(self, name, fn, *args, **kwargs):
        w, c = time.perf_counter(), time.process_time()
        out = fn(*args, **kwargs)
        self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - w
        self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - c
        return out


def reference_decode(path):
    import soundfile as sf

    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return audio, rate


def reference_resample(audio, rate):
    import soxr

    if rate != SR:
        audio = soxr.resample(audio, rate, SR, quality="HQ")
    mono = audio.mean(axis=1).astype(np.float32)
    return mono / np.abs(mono).max()


def dev_files(limit: int) -> list[str]:
    """The first ``limit`` dev-synth clips, and the nocturne (44.1 kHz stereo mp3) when present."""
    files = sorted(glob.glob(str(DEV_AUDIO / "*.ogg")))[:limit]
    if not files:
        sys.exit(f"no dev clips under {DEV_AUDIO}")
    if NOCTURNE.is_file():
        files.append(str(NOCTURNE))  # exercises the resampler
    return files


def estimator_report(files: list[str]) -> None:
    """Seconds per 30 s clip of ``compute_features`` and ``estimate_features``, per model and crop count."""
    from musicssl.key.features import compute_features
    from musicssl.key.registry import load_estimator

    print(f"\n{len(files)} files; seconds per 30 s clip, 1 thread, wall; "
          f"machine load average {os.getloadavg()[0]:.1f}\n")
    print(f"{'model':21s} {'crops':>5s} {'features':>9s} {'network':>8s} {'total':>7s}  same key as 1 crop")
    for spec in ("skey-band", "default", str(CHECKPOINT)):
        estimators = {n: load_estimator(spec, transpositions=n) for n in (1, 12)}
        config = estimators[1].frontend_config
        options = getattr(estimators[1], "feature_options", {})   # e.g. the default's chroma for its prior
        clock, duration = Clock(), 0.0
        warm = compute_features(files[0], config, **options)     # CQT kernels, network set-up: not timed
        for est in estimators.values():
            est.estimate_features([warm])
        keys: dict[int, list] = {1: [], 12: []}
        for path in files:
            features = clock.run("features", compute_features, path, config, **options)
            duration += features.duration_s
            for n, est in estimators.items():
                keys[n].append(clock.run(f"network {n}", est.estimate_features, [features])[0].key)
        per30 = 30.0 / duration
        name = "released S-KEY" if spec == str(CHECKPOINT) else estimators[1].name
        for n in (1, 12):
            f, net = clock.wall["features"] * per30, clock.wall[f"network {n}"] * per30
            same = sum(a == b for a, b in zip(keys[1], keys[n]))
            print(f"{name:21s} {n:5d} {f:9.4f} {net:8.4f} {f + net:7.4f}  {same}/{len(files)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=40, help="number of dev clips (default 40)")
    parser.add_argument("--skip-memory", action="store_true", help="skip the one-hour memory test")
    parser.add_argument("--memory-only", action="store_true", help="only the one-hour memory test")
    parser.add_argument("--hour-seconds", type=float, default=3600.0, help="length of the long file (s)")
    parser.add_argument("--memory-child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--estimators", action="store_true",
                        help="only: seconds per 30 s clip of the estimators, 1 vs 12 transposed crops")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.memory_child:
        memory_child(*args.memory_child)
        return
    if args.estimators:
        estimator_report(dev_files(args.limit))
        return

    if args.memory_only:
        memory_report(args.hour_seconds)
        return
    from nnAudio.features.vqt import VQT

    from musicssl.key.checkpoint import load_key_model
    from musicssl.io.audio import load_audio
    from musicssl.dsp.cqt import crop_bins, KeyFrontEnd, log_compress

    files = dev_files(args.limit)
    model = load_key_model(CHECKPOINT).model
    frontend = KeyFrontEnd()
    reference_cqt = VQT(sr=SR, hop_length=512, fmin=27.5, n_bins=99, bins_per_octave=12, gamma=0,
                        verbose=False)

    ours, ref = Clock(), Clock()
    duration = 0.0
    max_diff, same_argmax = 0.0, 0
    with torch.inference_mode():
        # warm up both (first-call set-up is not what we want to time)
        x = torch.from_numpy(load_audio(files[0], SR))[None]
        model(crop_bins(frontend(x), 0))
        reference_cqt(x)
        for path in files:
            # musicssl: decode alone, resample alone, then the real pipeline
            audio, rate = ours.run("decode (soundfile)", reference_decode, path)
            ours.run("resample+mono+peak (soxr HQ)", reference_resample, audio, rate)
            samples = ours.run("load_audio = decode+resample", load_audio, path, SR)
            x = torch.from_numpy(samples)[None]
            logcqt = ours.run("CQT + log", frontend, x)
            probs = ours.run("network", lambda: model(crop_bins(logcqt, 0))[0].numpy())
            duration += len(samples) / SR

            # reference
            audio, rate = ref.run("decode (soundfile)", reference_decode, path)
            samples_ref = ref.run("resample+mono+peak (soxr HQ)", reference_resample, audio, rate)
            xr = torch.from_numpy(samples_ref)[None]
            ref_logcqt = ref.run("CQT + log", lambda: log_compress(reference_cqt(xr))[:, None])
            probs_ref = ref.run("network", lambda: model(crop_bins(ref_logcqt, 0))[0].numpy())
            max_diff = max(max_diff, float(np.abs(probs - probs_ref).max()))
            same_argmax += int(probs.argmax() == probs_ref.argmax())

    per30 = 30.0 / duration
    print(f"\n{len(files)} files, {duration:.0f} s of audio; seconds per 30 s clip, 1 thread "
          f"(wall / CPU); machine load average {os.getloadavg()[0]:.1f}\n")
    rows = ["decode (soundfile)", "resample+mono+peak (soxr HQ)", "load_audio = decode+resample",
            "CQT + log", "network"]
    print(f"{'stage':32s} {'musicssl wall':>14s} {'cpu':>8s} {'reference wall':>15s} {'cpu':>8s}")
    for name in rows:
        ow, oc = ours.wall.get(name, 0) * per30, ours.cpu.get(name, 0) * per30
        rw, rc = ref.wall.get(name, np.nan) * per30, ref.cpu.get(name, np.nan) * per30
        if name == "load_audio = decode+resample":
            rw, rc = (ref.wall["decode (soundfile)"] + ref.wall["resample+mono+peak (soxr HQ)"]) * per30, \
                     (ref.cpu["decode (soundfile)"] + ref.cpu["resample+mono+peak (soxr HQ)"]) * per30
        print(f"{name:32s} {ow:14.4f} {oc:8.4f} {rw:15.4f} {rc:8.4f}")
    ours_total_w = sum(ours.wall[k] for k in ("load_audio = decode+resample", "CQT + log", "network")) * per30
    ours_total_c = sum(ours.cpu[k] for k in ("load_audio = decode+resample", "CQT + log", "network")) * per30
    ref_total_w = sum(ref.wall.values()) * per30
    ref_total_c = sum(ref.cpu.values()) * per30
    print(f"{'TOTAL (file -> probabilities)':32s} {ours_total_w:14.4f} {ours_total_c:8.4f} "
          f"{ref_total_w:15.4f} {ref_total_c:8.4f}")
    print(f"\nspeed-up, whole pipeline: {ref_total_w / ours_total_w:.1f}x wall, {ref_total_c / ours_total_c:.1f}x CPU;"
          f" CQT alone: {ref.wall['CQT + log'] / ours.wall['CQT + log']:.1f}x wall, "
          f"{ref.cpu['CQT + log'] / ours.cpu['CQT + log']:.1f}x CPU")
    print(f"probabilities, musicssl vs reference: max |diff| {max_diff:.2e}; "
          f"same arg-max {same_argmax}/{len(files)}")

    if not args.skip_memory:
        memory_report(args.hour_seconds)


# ----------------------------------------------------------------------------
# one-hour file: peak memory in a subprocess
# ----------------------------------------------------------------------------
def synthesise_long_file(path: Path, seconds: float, rate: int = 44100) -> None:
    """A long 44.1 kHz mono FLAC of chord tones, written block by block."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    block = rate * 10
    roots = [220.0 * 2 ** (k / 12) for k in (0, 5, 7, 0, 3, 8, 10, 0)]
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=1, format="FLAC", subtype="PCM_16") as f:
        done = 0
        total = int(seconds * rate)
        while done < total:
            n = min(block, total - done)
            t = (done + np.arange(n)) / rate
            root = roots[(done // block) % len(roots)]
            x = sum(np.sin(2 * np.pi * root * r * t) / (1 + i) for i, r in enumerate((1, 1.26, 1.5, 2)))
            x = 0.2 * x + 0.01 * rng.standard_normal(n)
            f.write(x.astype(np.float32))
            done += n


def memory_report(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.flac"
        t = time.perf_counter()
        synthesise_long_file(path, seconds)
        print(f"\nlong file: {seconds / 60:.0f} min, 44.1 kHz mono FLAC, "
              f"{path.stat().st_size / 1e6:.0f} MB (written in {time.perf_counter() - t:.0f} s)")
        print(f"{'path':44s} {'peak RSS MB':>12s} {'wall s':>8s}  result")
        for mode in ("baseline", "stream-cqt", "stream", "estimator"):
            proc = subprocess.run([sys.executable, __file__, "--memory-child", mode, str(path)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{mode:44s} failed: {proc.stderr.strip().splitlines()[-1:]}")
                continue
            info = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{info['label']:44s} {info['peak_rss_mb']:12.0f} {info['seconds']:8.1f}  {info['result']}")


def memory_child(mode: str, path: str) -> None:
    t = time.perf_counter()
    from musicssl.key.checkpoint import IMPORTED_SKEY_CALIBRATION, load_key_model

    loaded = load_key_model(CHECKPOINT)
    if mode == "baseline":
        label, result = "imports + model only (baseline)", "-"
    elif mode == "stream-cqt":
        from musicssl.io.audio import iter_audio_blocks
        from musicssl.dsp.cqt import CQT, cqt_stream

        blocks = iter_audio_blocks(path, SR, 30.0)
        pieces = [piece for _, piece in cqt_stream(CQT(), blocks, chunk_seconds=60.0)]
        magnitude = torch.cat(pieces, dim=-1)
        label, result = "stream CQT only: blocks -> cqt_stream", f"CQT {tuple(magnitude.shape)}"
    elif mode == "stream":
        from musicssl.io.audio import iter_audio_blocks
        from musicssl.dsp.cqt import CQT, cqt_stream, crop_bins, log_compress
        from musicssl.key.calibration import to_canonical
        from musicssl.keys import KEY_LABELS

        blocks = iter_audio_blocks(path, SR, 30.0)
        cqt = CQT()
        pieces = [piece for _, piece in cqt_stream(cqt, blocks, chunk_seconds=60.0)]
        magnitude = torch.cat(pieces, dim=-1)
        del pieces
        magnitude /= blocks.peak
        window = int(600 * SR / 512)
        total = torch.zeros(24, dtype=torch.float64)
        with torch.inference_mode():
            logcqt = log_compress(magnitude[None])[:, None]  # whole-track dB floor
            n = logcqt.shape[-1]
            bounds = np.linspace(0, n, int(np.ceil(n / window)) + 1).astype(int)
            for a, b in zip(bounds[:-1], bounds[1:]):
                probs = loaded.model(crop_bins(logcqt[..., a:b], 0))[0].double()
                total += (b - a) * probs
        canonical = to_canonical((total / n).numpy(), IMPORTED_SKEY_CALIBRATION)
        label = "stream: blocks -> cqt_stream -> 10-min windows"
        result = f"{KEY_LABELS[int(canonical.argmax())]} ({canonical.max():.2f})"
    elif mode == "estimator":
        from musicssl.key.estimator import KeyEstimator

        est = KeyEstimator(loaded.model, loaded.frontend_config, IMPORTED_SKEY_CALIBRATION)
        res = est.estimate_file(path)
        label, result = f"KeyEstimator.estimate_file ({est.transpositions} crops)", f"{res.key} ({res.confidence:.2f})"
    else:
        raise SystemExit(f"unknown mode {mode}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"label": label, "peak_rss_mb": peak, "seconds": time.perf_counter() - t,
                      "result": result}))


if __name__ == "__main__":
    main()
