"""Key accuracy of detuned recordings, with and without tuning compensation.

Each labelled clip is resampled so that its pitch moves by ``c`` cents
(played back at the original rate: ``c = +30`` sounds 30 cents sharp) for
every shift (0, ±15, ±30, ±45 by default). Per clip and shift the tuning is
estimated once (``musicssl.dsp.tuning``) and two CQTs are computed: the
plain one (A = 440 Hz grid) and the compensated one (bins moved by the
estimate), exactly as ``compute_features(tuning="report"|"compensate")``
does. Every estimator scores both, side by side. The tuning estimate counts
as right when it lies within ``--tolerance`` cents of the applied shift
(the clips are assumed to be rendered at A = 440 Hz; the 0-cent row shows
how far that holds) and, not assuming that, within the tolerance of the
shift plus the estimate of the unshifted clip ("relative": the estimator's
consistency; some soundfont instruments are themselves a few cents off).
``--tuning-only`` skips the key models and scores the tuning estimate beside
librosa's ``estimate_tuning`` (the reference) on every clip. Usage::

    OMP_NUM_THREADS=1 python benchmarks/key_tuning.py --limit 60
    OMP_NUM_THREADS=1 python benchmarks/key_tuning.py --tuning-only
    python benchmarks/key_tuning.py default skey-debian ../shared/fixtures/skey.pt krumhansl
    python benchmarks/key_tuning.py --dataset csv --manifest work-data/render24/labels.csv
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from musicssl.evaluation.datasets import load_dataset
from musicssl.evaluation.key_metrics import score_key, summarize
from musicssl.io.audio import load_audio, prepare_audio
from musicssl.dsp.tuning import estimate_tuning_cents
from musicssl.key.features import compute_features
from musicssl.key.registry import load_estimator

DEFAULT_ESTIMATORS = ("default", "skey-debian", "../shared/fixtures/skey.pt")
DEFAULT_SHIFTS = (0.0, -15.0, 15.0, -30.0, 30.0, -45.0, 45.0)


def detune(samples: np.ndarray, sr: int, cents: float) -> np.ndarray:
    """``samples`` resampled so that, played at ``sr``, every pitch is ``cents`` higher."""
    if cents == 0:
        return samples
    return prepare_audio(samples, sr * 2.0 ** (cents / 1200.0), sr)


def cents_error(estimate: float, truth: float) -> float:
    """Distance in cents on the semitone circle (a deviation of +50 equals -50)."""
    return abs((estimate - truth + 50.0) % 100.0 - 50.0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("estimators", nargs="*", default=list(DEFAULT_ESTIMATORS),
                   help="model names, checkpoint paths or templates (default: the default model, "
                        "the network alone, the released checkpoint)")
    p.add_argument("--dataset", default="dev-synth", help="dataset format (see musicssl evaluate)")
    p.add_argument("--manifest", default="../shared/data/dev-synth", help="dataset folder or manifest")
    p.add_argument("--limit", type=int, default=None, help="every k-th clip so that about N are used")
    p.add_argument("--shifts", type=float, nargs="+", default=list(DEFAULT_SHIFTS), help="detunings in cents")
    p.add_argument("--tolerance", type=float, default=5.0, help="cents within which a tuning estimate is right")
    p.add_argument("--tuning-only", action="store_true",
                   help="only the tuning estimate, beside librosa.estimate_tuning (no key models)")
    args = p.parse_args(argv)
    if args.tuning_only:
        return tuning_only(args)

    items = load_dataset(args.dataset, args.manifest).items
    if args.limit and args.limit < len(items):     # spread the subset over the whole (sorted) list
        items = [items[int(i)] for i in np.linspace(0, len(items) - 1, args.limit).round()]
    estimators = {name: load_estimator(name) for name in args.estimators}
    configs = {e.frontend_config for e in estimators.values()}
    sr = configs.pop().sr
    if any(c.sr != sr for c in configs):
        raise SystemExit("all estimators must share one sample rate")

    t0 = time.perf_counter()
    audio = [load_audio(item.path, sr=sr, offset=item.offset, duration=item.duration) for item in items]
    configs = {e.frontend_config for e in estimators.values()}
    base = [estimate_tuning_cents(samples, sr) for samples in audio]     # each clip as rendered
    rows = []
    for shift in args.shifts:
        plain = {c: [] for c in configs}
        tuned = {c: [] for c in configs}
        errors, relative = [], []
        for item, samples, b in zip(items, audio, base):
            x = detune(samples, sr, shift)
            cents = estimate_tuning_cents(x, sr)
            errors.append(cents_error(cents, shift))
            relative.append(cents_error(cents, shift + b))
            for c in configs:         # without compensation, and compensated by the estimate above
                plain[c].append(compute_features(x, c, sr=sr, tuning="off", chroma=True))
                tuned[c].append(compute_features(x, c, sr=sr, tuning=cents, chroma=True))
        errors = np.asarray(errors)
        scores = {}
        for name, estimator in estimators.items():
            for label, feats in (("off", plain), ("on", tuned)):
                results = estimator.estimate_features(feats[estimator.frontend_config])
                scores[name, label] = summarize([score_key(item.key, r.key) for item, r in zip(items, results)])
        within = float(np.mean(errors <= args.tolerance))
        within_rel = float(np.mean(np.asarray(relative) <= args.tolerance))
        rows.append((shift, within, float(np.median(errors)), scores, within_rel))
        line = "  ".join(f"{name}: {100 * scores[name, 'off'].accuracy:5.1f} -> {100 * scores[name, 'on'].accuracy:5.1f}"
                         for name in estimators)
        print(f"shift {shift:+5.0f} c  tuning within {args.tolerance:g} c: {100 * within:5.1f} % "
              f"(relative {100 * within_rel:5.1f} %)  "
              f"(median error {np.median(errors):.1f} c)  accuracy off -> on  {line}  "
              f"[{time.perf_counter() - t0:.0f} s]", flush=True)

    names = list(estimators)
    print(f"\n{len(items)} clips of {args.manifest}; accuracy = exact key (%), MIREX in brackets; "
          f"'off' = plain A440 CQT, 'on' = CQT moved by the estimated tuning\n")
    header = "| shift (cents) | tuning within %g c | relative | median error (c) | " % args.tolerance
    header += " | ".join(f"{n} off | {n} on" for n in names) + " |"
    print(header)
    print("|" + "---|" * (4 + 2 * len(names)))
    for shift, within, median, scores, within_rel in rows:
        cells = []
        for n in names:
            for label in ("off", "on"):
                s = scores[n, label]
                cells.append(f"{100 * s.accuracy:.1f} ({100 * s.mirex:.1f})")
        print(f"| {shift:+.0f} | {100 * within:.1f} % | {100 * within_rel:.1f} % | {median:.1f} | "
              + " | ".join(cells) + " |")
    shifted = [r for r in rows if r[0] != 0]
    if shifted:
        within_all = np.mean([r[1] for r in shifted])
        within_rel_all = np.mean([r[4] for r in shifted])
        print(f"\ntuning within {args.tolerance:g} c over the shifted versions: {100 * within_all:.1f} % of clips "
              f"(of the shift: assumes A440 renders), {100 * within_rel_all:.1f} % (relative to the unshifted estimate)")
    for n in names:
        off = np.mean([r[3][n, "off"].accuracy for r in shifted]) if shifted else float("nan")
        on = np.mean([r[3][n, "on"].accuracy for r in shifted]) if shifted else float("nan")
        print(f"{n}: mean accuracy over the shifted versions {100 * off:.1f} % without, {100 * on:.1f} % with compensation")
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


def tuning_only(args) -> int:
    """Tuning estimates of musicssl and of librosa.estimate_tuning, side by side."""
    import librosa

    items = load_dataset(args.dataset, args.manifest).items
    if args.limit and args.limit < len(items):
        items = [items[int(i)] for i in np.linspace(0, len(items) - 1, args.limit).round()]
    sr = 22050
    estimators = {"musicssl": lambda x: estimate_tuning_cents(x, sr),
                  "librosa.estimate_tuning": lambda x: 100.0 * float(
                      librosa.estimate_tuning(y=x, sr=sr, bins_per_octave=12, resolution=0.01))}
    absolute = {n: [] for n in estimators}
    relative = {n: [] for n in estimators}
    t0 = time.perf_counter()
    for item in items:
        samples = load_audio(item.path, sr=sr, offset=item.offset, duration=item.duration)
        base = {n: f(samples) for n, f in estimators.items()}
        for shift in args.shifts:
            if shift == 0:
                continue
            x = detune(samples, sr, shift)
            for n, f in estimators.items():
                e = f(x)
                absolute[n].append(cents_error(e, shift))
                relative[n].append(cents_error(e, shift + base[n]))
    shifts = ", ".join(f"{s:+g}" for s in args.shifts if s != 0)
    print(f"{len(items)} clips x shifts {shifts} cents = {len(absolute['musicssl'])} versions "
          f"({time.perf_counter() - t0:.0f} s)\n")
    print(f"| estimator | within {args.tolerance:g} c of the shift | within {args.tolerance:g} c of shift + "
          f"unshifted estimate | median error (c) |\n|---|---|---|---|")
    for n in estimators:
        a, r = np.asarray(absolute[n]), np.asarray(relative[n])
        print(f"| {n} | {100 * np.mean(a <= args.tolerance):.1f} % | {100 * np.mean(r <= args.tolerance):.1f} % "
              f"| {np.median(a):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
