"""Does a ZeroNS activation peak on the beats? The probe of ``activation_probe``, side by side.

For every annotated clip of a beat set (default: the LMMS renders of
``benchmarks/render_lmms.py``) the probe (``musicssl.evaluation.beat_metrics.
activation_probe``: on-beat / off-beat mean ratio, AUC of on-beat vs off-beat
frames at lag 0 and at the best lag within ±12 frames) is computed for:

* ``onset (mix)``         librosa's onset strength of the mix (the default tracker's
                          activation): the reference a beat model should reach
* ``onset (HPSS perc)``   the same envelope of the HPSS percussive part only
                          (is the percussive input already onset-like?)
* ``<model>``             a ZeroNS model's combined activation (as ``musicssl beats
                          --activation zerons`` computes it: calibrated polarity/lag,
                          min-max scaled branches, frame-wise max), the same with the
                          frame-wise mean (``<model> mean-combined``), and each branch's raw
                          output (``<model> perc`` / ``<model> rest``; lag 0 = uncalibrated)

Models: the shipped one (``default``), any ``--checkpoint`` (``.safetensors`` or a
training ``.ckpt``, read with ``weights_only``) and, with ``--random-init WIDTH``, an
untrained network (the floor). Scores are means over clips (first ``--trim`` s left out).
``--decode`` adds each model's ``ZeroNS + DBN`` beat scores (F-measure, CMLt, AMLt; first 5 s
trimmed, as in ``benchmarks/beat_eval.py``) without re-running the baselines.

    OMP_NUM_THREADS=1 python benchmarks/zerons_probe.py --root /work/main/work-data/lmms-beats \\
        --checkpoint run/checkpoints/last.ckpt --random-init 0.125

Separation + VQT of each clip are computed once into ``--cache``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def load_items(root: Path, limit: int | None, max_seconds: float | None):
    """[(id, audio path, beats (s))] of a manifest folder (``labels.csv``) or a manifest file."""
    from musicssl.evaluation.beat_annotations import load_beat_manifest

    manifest = root / "labels.csv" if root.is_dir() else root
    ds = load_beat_manifest(manifest).limit(limit)
    items = []
    for it in ds:
        ref = np.asarray(it.reference().times, dtype=np.float64)
        if max_seconds:
            ref = ref[ref < max_seconds]
        items.append((it.id, it.audio_path, ref))
    return items


def cached_features(items, cache_dir: Path, max_seconds: float | None, separator=None):
    """id -> (perc log-VQT (96, T), rest log-VQT (96, T)) from the ZeroNS feature cache.

    ``max_seconds`` keeps each clip's first seconds (the cache stores whole clips)."""
    from musicssl.beat.data import CacheSettings, build_cache
    from musicssl.beat.frontend import FPS

    entries = build_cache([p for _, p, _ in items], cache_dir, CacheSettings(max_seconds=3600, min_seconds=1.0),
                          separator, progress=False)
    by_source = {e.source: e for e in entries}
    keep = int(max_seconds * FPS) if max_seconds else None
    out = {}
    for ident, path, _ in items:
        e = by_source.get(str(path))
        if e is not None:
            f = np.load(cache_dir / e.file)[..., :keep].astype(np.float32)
            out[ident] = (f[0], f[1])
    return out


def load_model(spec: str, width: float = 0.125):
    """(label, BeatEstimator) for ``default``, ``random:WIDTH``, a ``.safetensors`` or a ``.ckpt``."""
    import torch

    from musicssl.beat.estimator import BeatEstimator
    from musicssl.beat.model import ZeroNS

    if spec == "default":
        return "shipped", BeatEstimator.from_checkpoint()
    if spec.startswith("random:"):
        torch.manual_seed(0)
        model = ZeroNS(width=float(spec.split(":", 1)[1]))
        return f"random init w{spec.split(':', 1)[1]}", calibrated(model, center=True)
    path = Path(spec)
    if path.suffix == ".ckpt":
        from musicssl.beat.checkpoint import read_training_checkpoint
        from musicssl.beat.config import PretrainConfig

        config, state, step = read_training_checkpoint(path)      # the one .ckpt reader (weights only)
        cfg = PretrainConfig.from_dict(config)
        model = ZeroNS(width=cfg.width, dropout=cfg.dropout)
        model.load_state_dict(state)
        return f"{path.parent.parent.name}@{step}", calibrated(model, cfg.center_outputs)
    return path.stem, BeatEstimator.from_checkpoint(path)


def calibrated(model, center: bool):
    """A BeatEstimator of ``model`` with the export's polarity and lag calibration."""
    from musicssl.beat.estimator import BeatEstimator, calibrate_lag, calibrate_polarity

    est = BeatEstimator(model.eval())
    if center:
        est.polarity = calibrate_polarity(est)
    est.lag_frames = calibrate_lag(est)
    return est


def probe_estimator(est, feats: dict, refs: dict, trim: float = 1.0,
                    decode: bool = False) -> dict[str, dict[str, float]]:
    """Mean probe scores of ``est``'s combined activation and of its two raw branch outputs;
    ``decode``: the combined activation's row also gets the DBN's beat scores (F-measure, CMLt,
    AMLt, first 5 s trimmed, as ``benchmarks/beat_eval.py``'s ``ZeroNS + DBN``)."""
    from musicssl.evaluation.beat_metrics import evaluate_beats

    from musicssl.beat.frontend import FPS
    from musicssl.evaluation.beat_metrics import activation_probe, summarize
    from musicssl.errors import AnnotationError

    rows: dict[str, list] = {"act": [], "mean": [], "perc": [], "rest": []}
    combine = est.combine
    for ident, (fp, fa) in feats.items():
        p, a = est.network_outputs(fp, fa)
        est.combine = "mean"
        act_mean = est.combine_outputs(p, a)
        est.combine = combine
        act = est.combine_outputs(p, a)
        beat_scores = {}
        if decode:
            sc = evaluate_beats(refs[ident], est.decode(act, "dbn")[0], information_gain=False)
            beat_scores = {k: sc[k] for k in ("F-measure", "CMLt", "AMLt")}
        for name, x in (("act", act), ("mean", act_mean), ("perc", p), ("rest", a)):
            try:
                row = activation_probe(x, refs[ident], FPS, trim=trim)
            except AnnotationError:  # a flat output: no preference at all
                row = {"beat_peak_ratio": 1.0, "beat_auc": 0.5, "beat_auc_best_lag": 0.5, "best_lag_frames": 0.0}
            rows[name].append(dict(row, **beat_scores) if name == "act" else row)
    return {k: summarize(v) for k, v in rows.items()}


def onset_rows(items, feats_ids, trim: float, separator) -> dict[str, dict[str, float]]:
    from musicssl.beat.frontend import FPS, SAMPLE_RATE
    from musicssl.beat.onset import onset_envelope
    from musicssl.evaluation.beat_metrics import activation_probe, summarize
    from musicssl.io.audio import load_audio

    mix, perc = [], []
    for ident, path, ref in items:
        if ident not in feats_ids:
            continue
        x = load_audio(path, sr=SAMPLE_RATE)[: feats_ids[ident] * 256]
        mix.append(activation_probe(onset_envelope(x), ref, FPS, trim=trim))
        perc.append(activation_probe(onset_envelope(separator(x, SAMPLE_RATE)[0]), ref, FPS, trim=trim))
    return {"onset (mix)": summarize(mix), "onset (HPSS perc)": summarize(perc)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="/work/main/work-data/lmms-beats", help="folder with labels.csv")
    p.add_argument("--checkpoint", action="append", default=[], help="model to probe (repeatable)")
    p.add_argument("--no-default", action="store_true", help="leave out the shipped model")
    p.add_argument("--random-init", type=float, default=None, metavar="WIDTH", help="add an untrained net")
    p.add_argument("--no-onset", action="store_true", help="leave out the onset references")
    p.add_argument("--limit", type=int, default=None, help="first N clips")
    p.add_argument("--max-seconds", type=float, default=None, help="first N s of each clip")
    p.add_argument("--trim", type=float, default=1.0, help="seconds left out at the start")
    p.add_argument("--cache", default="/tmp/musicssl_zerons_probe", help="feature cache folder")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--decode", action="store_true",
                   help="also decode each model's activation with the DBN and score the beats")
    args = p.parse_args(argv)

    import torch

    from musicssl.beat.separation import get_separator
    from musicssl.evaluation.beat_metrics import PROBE_METRICS, format_table

    torch.set_num_threads(args.threads)
    t0 = time.monotonic()
    root = Path(args.root)
    items = load_items(root, args.limit, args.max_seconds)
    sep = get_separator("hpss")
    feats = cached_features(items, Path(args.cache) / root.resolve().name, args.max_seconds, sep)
    refs = {i: r for i, _, r in items}
    print(f"{len(feats)} clips of {root} ready ({time.monotonic() - t0:.0f} s)", flush=True)
    rows: dict[str, dict[str, float]] = {}
    if not args.no_onset:
        rows.update(onset_rows(items, {k: v[0].shape[-1] for k, v in feats.items()}, args.trim, sep))
    specs = ([] if args.no_default else ["default"]) + list(args.checkpoint)
    if args.random_init:
        specs.append(f"random:{args.random_init}")
    for spec in specs:
        label, est = load_model(spec)
        res = probe_estimator(est, feats, refs, args.trim, decode=args.decode)
        rows[label] = res["act"]
        rows[f"{label} mean-combined"] = res["mean"]
        rows[f"{label} perc"] = res["perc"]
        rows[f"{label} rest"] = res["rest"]
        print(f"  probed {label} ({time.monotonic() - t0:.0f} s)", flush=True)
    print()
    print(f"{root.name}: {len(feats)} clips, probe window ±35 ms, first {args.trim:g} s left out")
    print(format_table(rows, list(PROBE_METRICS) + (["F-measure", "CMLt", "AMLt"] if args.decode else []),
                       label="activation"))
    if args.json:
        Path(args.json).write_text(json.dumps({"root": str(root), "n_clips": len(feats), "rows": rows,
                                               "wall_seconds": round(time.monotonic() - t0, 1)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
