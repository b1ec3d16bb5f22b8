"""Beat tracking scores of Zero-Note Samba against baselines (prints a table, writes JSON).

Systems, all scored on the same clips with mir_eval (F-measure ±70 ms, CMLt,
AMLt, first 5 s trimmed):

* ``ZeroNS + DBN``            the ZeroNS activation decoded by musicssl.beat.dbn
* ``ZeroNS + librosa DP``     the ZeroNS activation as librosa.beat.beat_track's onset envelope
* ``librosa beat_track``      librosa's own tracker on the audio (its onset strength)
* ``onset + DBN (default)``   ``musicssl beats``' default: onset strength + the DBN with the
                              onset settings (``musicssl.beat.onset.ONSET_DBN_PARAMS``)
* ``onset + DBN, SPEC params`` the same envelope decoded with the DBN's SPEC defaults
                              (observation_lambda 16, no tempo prior): the former ``librosa-dbn``
* ``oracle + DBN``            the DBN (SPEC defaults) on an activation built from the annotations
                              (20 ms jitter, 20 % of beats dropped, uniform noise up to 0.3): a check
                              of the decoder on an activation one can trust
* ``ZeroNS fine-tuned + DBN`` the model fine-tuned on ``--finetune-songs`` clips (those clips
                              are left out of every system's score) with the recipe of
                              ``musicssl.beat.finetune.FinetuneConfig`` (``--finetune-steps``),
                              read as the recipe stores it (mean of both outputs, DBN with a
                              tempo prior)
* ``ZeroNS from scratch + DBN`` with ``--finetune-scratch``: the same recipe from randomly
                              initialised networks (does the pretext training help?)

Datasets: ``dev-synth`` (../shared/data/dev-synth: rendered scores, no drums,
a hard case), ``csv`` (any manifest folder with ``labels.csv`` holding ``path``
and ``beats_path`` columns, e.g. the LMMS demo renders of
``scripts/render_lmms.py``: ``--dataset csv --root work-data/lmms-beats``)
and ``synthetic-drums`` (drum + chord mixes generated here at
random tempi: an easy sanity check, not music).

    python benchmarks/beat_eval.py --dataset dev-synth --limit 80 --finetune-songs 8
    python benchmarks/beat_eval.py --separation      # the HPSS settings measurement

Separation and VQT are computed once per clip into a feature cache (``--cache``).
Besides mir_eval's scores the table prints ``tempo±4%``: the share of clips whose
estimated tempo (``musicssl.beat.dbn.beats_tempo`` of the beats) is within 4 % of
the annotated tempo, its double or its half.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # beat_synth: synthetic drums / chords


# --------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------
def dev_synth_items(root: Path, limit: int | None, seed: int) -> list[tuple[str, Path, np.ndarray]]:
    from musicssl.evaluation.beat_annotations import load_beat_dev_synth

    ds = load_beat_dev_synth(root)
    items = [(it.id, it.audio_path, it.reference().times) for it in ds.items]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(items))
    items = [items[i] for i in order]
    return items[:limit] if limit else items


def synthetic_drum_items(folder: Path, n: int, seed: int) -> list[tuple[str, Path, np.ndarray]]:
    import soundfile as sf

    from beat_synth import SR, chord_track, drum_track

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        bpm = float(rng.uniform(80, 160))
        drums, beats = drum_track(30.0, bpm, seed=i)
        mix = 0.5 * drums + 0.5 * chord_track(30.0, change_s=float(rng.uniform(1.5, 3.0)))
        path = folder / f"synth{i:02d}_{bpm:.0f}bpm.wav"
        if not path.is_file():
            sf.write(path, mix.astype(np.float32), SR)
        items.append((path.stem, path, beats))
    return items


# --------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------
def cached_features(items, cache_dir: Path, separator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """id -> (perc log-VQT (96, T), rest log-VQT (96, T)), computed once (musicssl.beat.data cache)."""
    from musicssl.beat.data import CacheSettings, build_cache

    entries = build_cache([p for _, p, _ in items], cache_dir,
                          CacheSettings(max_seconds=3600, min_seconds=1.0), separator, progress=False)
    by_source = {e.source: e for e in entries}
    out = {}
    for ident, path, _ in items:
        e = by_source.get(str(path))
        if e is None:
            continue
        feats = np.load(cache_dir / e.file).astype(np.float32)
        out[ident] = (feats[0], feats[1])
    return out


def librosa_on_audio(path: Path) -> np.ndarray:
    import librosa

    from musicssl.io.audio import load_audio

    y = load_audio(path, sr=22050)
    _, beats = librosa.beat.beat_track(y=y, sr=22050, units="time")
    return np.asarray(beats)


def oracle_activation(ref: np.ndarray, n_frames: int, fps: float, seed: int) -> np.ndarray:
    """Annotations as an activation ``(n_frames,)``: jittered bumps, dropped beats, noise."""
    rng = np.random.default_rng(seed)
    act = rng.uniform(0.0, 0.3, n_frames)
    t = np.arange(n_frames) / fps
    kept = ref[rng.random(len(ref)) > 0.2]
    for b in kept + rng.normal(0.0, 0.02, len(kept)):
        act = np.maximum(act, np.exp(-0.5 * ((t - b) / 0.015) ** 2))
    return np.clip(act, 0.0, 1.0)


def tempo_hit(ref: np.ndarray, est: np.ndarray, tolerance: float = 0.04) -> float:
    """1.0 when the tempo of ``est`` beats is within ``tolerance`` of that of ``ref``, x2 or x1/2."""
    from musicssl.beat.dbn import beats_tempo

    t_ref, t_est = beats_tempo(ref), beats_tempo(np.asarray(est))
    if t_ref is None or t_est is None:
        return 0.0
    return float(any(abs(t_est - f * t_ref) <= tolerance * f * t_ref for f in (0.5, 1.0, 2.0)))


def run_eval(args) -> dict:
    import torch

    from musicssl.beat.dbn import decode_beats
    from musicssl.beat.estimator import BeatEstimator
    from musicssl.beat.finetune import FinetuneConfig, SongExample, finetune_model, finetuned_estimator
    from musicssl.beat.frontend import FPS
    from musicssl.beat.losses import widened_beat_targets
    from musicssl.evaluation.beat_metrics import CORE_METRICS, BeatScores, format_table

    torch.set_num_threads(args.threads)
    est = BeatEstimator.from_checkpoint(args.checkpoint)
    if args.dataset in ("dev-synth", "csv"):
        items = dev_synth_items(Path(args.root), args.limit, args.seed)
    else:
        items = synthetic_drum_items(Path(args.cache) / "audio", args.limit or 20, args.seed)
    t0 = time.monotonic()
    cache_name = args.dataset if args.dataset != "csv" else f"csv-{Path(args.root).resolve().name}"
    feats = cached_features(items, Path(args.cache) / cache_name, est.separator)
    print(f"features of {len(feats)} clips ready ({time.monotonic() - t0:.0f} s)", flush=True)
    items = [it for it in items if it[0] in feats]
    tune, test = items[:args.finetune_songs], items[args.finetune_songs:]

    tuned = {}
    if args.finetune_songs:
        cfg = FinetuneConfig(seed=args.seed, **({"steps": args.finetune_steps} if args.finetune_steps else {}))
        songs = []
        for ident, _, ref in tune:
            fp, fa = feats[ident]
            songs.append(SongExample(ident, fp, fa, widened_beat_targets(
                ref, fp.shape[-1], FPS, cfg.neighbour_weight, cfg.widen), np.asarray(ref) * FPS))
        variants = [("ZeroNS fine-tuned + DBN", cfg)]
        if args.finetune_scratch:
            variants.append(("ZeroNS from scratch + DBN", replace(cfg, from_scratch=True)))
        for name, c in variants:
            t1 = time.monotonic()
            tuned_model, hist = finetune_model(est.model, songs, c, log=None)
            print(f"{name}: {c.steps} steps on {len(songs)} clips in {time.monotonic() - t1:.0f} s "
                  f"(BCE {np.mean(hist[:10]):.4f} -> {np.mean(hist[-50:]):.4f})", flush=True)
            tuned[name] = finetuned_estimator(tuned_model, c, separator=est.separator)

    from musicssl.beat.estimator import OnsetBeatEstimator
    from musicssl.beat.onset import onset_envelope
    from musicssl.io.audio import load_audio

    onset = OnsetBeatEstimator()
    systems = ["onset + DBN (default)", "onset + DBN, SPEC params", "librosa beat_track",
               "ZeroNS + DBN", "ZeroNS + librosa DP", "oracle + DBN"]
    systems += list(tuned)
    tempo_hits: dict[str, list[float]] = {s: [] for s in systems}
    scores = {s: BeatScores() for s in systems}
    for n, (ident, path, ref) in enumerate(test):
        fp, fa = feats[ident]
        act = est.combine_outputs(*est.network_outputs(fp, fa))
        env = onset_envelope(load_audio(path, sr=16000))
        estimates = {
            "onset + DBN (default)": onset.decode(env)[0],
            "onset + DBN, SPEC params": decode_beats(env, FPS).beats,
            "librosa beat_track": librosa_on_audio(path),
            "ZeroNS + DBN": est.decode(act, "dbn")[0],
            "ZeroNS + librosa DP": est.decode(act, "librosa")[0],
            "oracle + DBN": decode_beats(oracle_activation(ref, len(act), FPS, n), FPS).beats,
        }
        for name, tuned_est in tuned.items():
            act_t = tuned_est.combine_outputs(*tuned_est.network_outputs(fp, fa))
            estimates[name] = tuned_est.decode(act_t, "dbn")[0]
        for system, beats in estimates.items():
            scores[system].add(ident, ref, beats)
            tempo_hits[system].append(tempo_hit(ref, beats))
        if (n + 1) % 20 == 0:
            print(f"  scored {n + 1}/{len(test)}", flush=True)
    rows = {s: dict(sc.mean, **{"tempo±4%": float(np.mean(tempo_hits[s])) if tempo_hits[s] else 0.0})
            for s, sc in scores.items()}
    print()
    print(f"{args.dataset}: {len(test)} clips scored"
          + (f" (fine-tuning used {len(tune)} other clips)" if tune else ""))
    print(format_table(rows, list(CORE_METRICS) + ["tempo±4%"], label="system"))
    result = {"dataset": args.dataset, "n_scored": len(test), "finetune_clips": [t[0] for t in tune],
              "finetune_config": asdict(cfg) if args.finetune_songs else None, "seed": args.seed,
              "checkpoint": str(args.checkpoint or "default"), "mean": rows,
              "per_file": {s: sc.per_file for s, sc in scores.items()},
              "wall_seconds": round(time.monotonic() - t0, 1)}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


# --------------------------------------------------------------------------
# HPSS settings measurement
# --------------------------------------------------------------------------
def separation_grid(args) -> None:
    """Drum leakage into the non-percussive part and chord leakage into the percussive part.

    Each synthetic source is passed through the masks computed on the mix
    (the split is a per-bin mask, so each source's share is measurable):
    ``drum->rest`` = energy of drums in the non-percussive part relative to
    drums in the percussive part (dB, lower is better; drum leakage lets the
    pretext task be solved by matching attacks); ``chord->perc`` likewise.
    """
    import librosa

    from beat_synth import chord_track, drum_track
    from musicssl.beat.separation import HPSSSeparator

    mixes = []
    for i, bpm in enumerate((96, 128, 160)):
        d, _ = drum_track(12.0, bpm, seed=i)
        mixes.append((0.5 * d, 0.5 * chord_track(12.0)))

    def keep_mask(sep: HPSSSeparator, mag: np.ndarray) -> np.ndarray:
        if sep.mode == "plain":
            return librosa.decompose.hpss(mag, kernel_size=sep.kernel_size, mask=True)[1]
        if sep.mode == "strict_harmonic":
            return 1 - librosa.decompose.hpss(mag, kernel_size=sep.kernel_size, mask=True,
                                              margin=(sep.margin, 1.0))[0]
        return librosa.decompose.hpss(mag, kernel_size=sep.kernel_size, mask=True, margin=(1.0, sep.margin))[1]

    print(f"{'mode':<18}{'n_fft':>6}{'kernel':>9}{'margin':>7}{'drum->rest dB':>15}{'chord->perc dB':>16}")
    for mode, n_fft, kernel, margin in itertools.product(
            ("plain", "strict_harmonic", "strict_percussive"), (1024, 2048), ((17, 17), (31, 31)), (2.0, 4.0)):
        if mode == "plain" and margin > 2.0:
            continue
        sep = HPSSSeparator(n_fft=n_fft, kernel_size=kernel, margin=margin, mode=mode)
        dl, cl = [], []
        for d, c in mixes:
            stft = lambda x: librosa.stft(x, n_fft=n_fft, hop_length=256)  # noqa: E731
            m = keep_mask(sep, np.abs(stft(d + c)))
            sd, sc = stft(d), stft(c)
            dl.append(10 * np.log10(np.sum(np.abs(sd * (1 - m)) ** 2) / np.sum(np.abs(sd * m) ** 2)))
            cl.append(10 * np.log10(np.sum(np.abs(sc * m) ** 2) / np.sum(np.abs(sc * (1 - m)) ** 2)))
        print(f"{mode:<18}{n_fft:>6}{str(kernel[0]) + 'x' + str(kernel[1]):>9}"
              f"{'-' if mode == 'plain' else margin:>7}{np.mean(dl):>15.1f}{np.mean(cl):>16.1f}", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=("dev-synth", "csv", "synthetic-drums"), default="dev-synth")
    p.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "dev-synth"))
    p.add_argument("--checkpoint", default=None, help="ZeroNS model (default: shipped)")
    p.add_argument("--limit", type=int, default=None, help="clips to use (random subset, fixed seed)")
    p.add_argument("--finetune-songs", type=int, default=8, help="clips to fine-tune on (0: skip)")
    p.add_argument("--finetune-steps", type=int, default=None,
                   help="fine-tuning steps (default: FinetuneConfig's)")
    p.add_argument("--finetune-scratch", action="store_true",
                   help="also fine-tune randomly initialised networks with the same recipe")
    p.add_argument("--cache", default="/tmp/musicssl_beat_eval", help="feature cache folder")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--separation", action="store_true", help="measure HPSS settings instead")
    args = p.parse_args(argv)
    if args.separation:
        separation_grid(args)
    else:
        run_eval(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
