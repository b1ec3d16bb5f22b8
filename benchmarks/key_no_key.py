"""The "no key" decision measured side by side: signals without a key and music with one.

For each input the script prints the two tonality measurements of
``musicssl.key.tonality`` (harmonic fraction, peak contrast in dB), the
decision, and the answer and confidence of the chosen estimators (the default
first; ``--estimator`` adds more). Inputs:

* made here: white, pink and brown noise, a DC offset with hiss, hiss alone
  (peak-normalised, so white noise again), a synthetic drum loop, a chord
  track and the chords with the drums;
* ``--dev-synth DIR`` (default ``../shared/data/dev-synth``): every labelled
  clip (music with a key: the no-key rate should be 0);
* ``--folder DIR`` (repeatable): any audio folder, e.g. ``work-data/lmms-beats/audio``
  (songs with heavy drums) or your own recordings;
* ``--speech`` (needs Debian's ``espeak-ng``): synthetic speech.

    python benchmarks/key_no_key.py --folder work-data/lmms-beats/audio --speech
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # beat_synth: drums and chords
SR = 22050


def made_signals(seconds: float = 30.0, seed: int = 0) -> dict[str, np.ndarray]:
    """Signals without a key (noise, DC, drums) and two with one (chords, chords + drums)."""
    from beat_synth import chord_track, drum_track

    rng = np.random.default_rng(seed)
    n = int(seconds * SR)

    def coloured(alpha: float) -> np.ndarray:
        spectrum = np.fft.rfft(rng.standard_normal(n))
        freqs = np.fft.rfftfreq(n, 1 / SR)
        freqs[0] = freqs[1]
        return np.fft.irfft(spectrum / freqs ** (alpha / 2), n)

    drums = drum_track(seconds, 100, sr=SR)[0]
    chords = chord_track(seconds, sr=SR)
    return {"white noise": coloured(0.0), "pink noise": coloured(1.0), "brown noise": coloured(2.0),
            "DC offset + hiss": 0.5 + 1e-4 * rng.standard_normal(n), "hiss": 1e-4 * rng.standard_normal(n),
            "drum loop": drums, "chords": chords, "chords + drums": 0.5 * chords + 0.5 * drums}


def speech_signal() -> np.ndarray | None:
    if shutil.which("espeak-ng") is None:
        return None
    from musicssl.io.audio import load_audio

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        text = "The quick brown fox jumps over the lazy dog. " * 6
        subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
        return load_audio(path, sr=SR)


def main(argv=None) -> int:
    from musicssl.key import tonality
    from musicssl.key.features import compute_features
    from musicssl.key.registry import load_estimator
    from musicssl.keys import format_key

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--estimator", action="append", default=[], help="more estimator specs to run")
    p.add_argument("--dev-synth", default=str(REPO.parent / "shared" / "data" / "dev-synth"))
    p.add_argument("--folder", action="append", default=[], help="audio folders to measure")
    p.add_argument("--speech", action="store_true", help="add espeak-ng speech")
    args = p.parse_args(argv)

    specs = ["default", *args.estimator]
    estimators = [load_estimator(s) for s in specs]
    for e in estimators:
        e.detect_no_key = False  # print the answer the estimator would give; the decision is its own column

    def row(name: str, source) -> tuple[str, bool]:
        """``source``: samples at SR or a path; each estimator gets features of its own front end."""
        by_config = {}
        answers = []
        for e in estimators:
            options = getattr(e, "feature_options", {})
            config = (e.frontend_config, tuple(sorted(options.items())))
            if config not in by_config:
                by_config[config] = (compute_features(source, e.frontend_config, sr=SR, **options)
                                     if isinstance(source, np.ndarray)
                                     else compute_features(source, e.frontend_config, **options))
            r = e.estimate_features([by_config[config]])[0]
            answers.append(f"{format_key(r.key):<9} {r.confidence:5.3f}")
        features = next(iter(by_config.values()))
        reason = features.no_key_reason
        print(f"{name[:34]:<34} {features.harmonic_fraction:6.3f} {features.peak_contrast:7.2f}  "
              f"{'NO KEY' if reason else 'key':<7} " + "  ".join(answers), flush=True)
        return name, reason is not None

    print(f"thresholds: harmonic fraction < {tonality.MIN_HARMONIC_FRACTION}, "
          f"peak contrast < {tonality.MIN_PEAK_CONTRAST_DB} dB -> no key")
    print(f"{'input':<34} {'harm':>6} {'contr':>7}  {'decision':<7} " + "  ".join(f"{s[:15]:<15}" for s in specs))
    signals = made_signals()
    if args.speech:
        speech = speech_signal()
        if speech is None:
            print("(no espeak-ng: speech skipped)")
        else:
            signals["speech (espeak-ng)"] = speech
    for name, x in signals.items():
        row(name, x.astype(np.float32))

    groups: dict[str, list[Path]] = {}
    dev = Path(args.dev_synth)
    if (dev / "labels.csv").is_file():
        import csv

        with open(dev / "labels.csv", newline="") as f:
            groups["dev-synth"] = [dev / r["path"] for r in csv.DictReader(f)]
    from musicssl.io.files import find_audio_files

    for folder in args.folder:
        groups[Path(folder).name] = find_audio_files([folder])
    for group, paths in groups.items():
        flagged, harm, contr = [], [], []
        for path in paths:
            f = compute_features(path, estimators[0].frontend_config)
            harm.append(f.harmonic_fraction)
            contr.append(f.peak_contrast)
            if f.no_key_reason:
                flagged.append(path.name)
        print(f"\n{group}: {len(paths)} files, {len(flagged)} answered 'no key' "
              f"({100 * len(flagged) / max(1, len(paths)):.1f} %); harmonic fraction min {min(harm):.3f}, "
              f"peak contrast min {min(contr):.2f} dB")
        for name in flagged[:20]:
            print(f"   no key: {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
