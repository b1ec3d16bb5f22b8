"""The "no key" decision measured side by side: signals without a key and music with one.

For each input the script prints the two tonality measurements of
``musicssl.key.tonality`` (harmonic fraction, peak contrast in dB), two
candidate measurements for speech that the decision does **not** use (grid
concentration and sustained share, :func:`pitch_grid` below), the decision, and the answer and confidence of the chosen estimators (the default
first; ``--estimator`` adds more). Inputs:

* made here: white, pink and brown noise, a DC offset with hiss, hiss alone
  (peak-normalised, so white noise again), a synthetic drum loop, a chord
  track and the chords with the drums;
* ``--dev-synth DIR`` (default ``../shared/data/dev-synth``): every labelled
  clip (music with a key: the no-key rate should be 0);
* ``--folder DIR`` (repeatable): any audio folder, e.g. ``work-data/lmms-beats/audio``
  (songs with heavy drums) or your own recordings;
* ``--speech``: synthetic speech, three sentences (about 12 s each) spoken by
  every text-to-speech voice installed of Debian's ``espeak-ng`` (English,
  American, a female variant, German, French, Spanish), ``flite`` (kal, awb,
  rms, slt) and ``festival`` (its default voice); missing engines are skipped.

    python benchmarks/key_no_key.py --folder work-data/lmms-beats/audio --speech
    python benchmarks/key_no_key.py --folder work-data/bandeval/audio --folder work-data/band/audio
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


SENTENCES = (
    "The quick brown fox jumps over the lazy dog while the children play in the garden near the old stone wall.",
    "Good evening and welcome to the news. Today the weather will be cloudy with a chance of rain in the afternoon.",
    "In this episode we talk about music, software and the history of the phonograph, from Edison to the present day.",
)
#: (engine, voice) pairs of ``--speech``
VOICES = ([("espeak-ng", v) for v in ("en", "en-us", "en+f3", "de", "fr", "es")]
          + [("flite", v) for v in ("kal", "awb", "rms", "slt")] + [("festival", "default")])


#: the candidate speech rule measured here (not used by musicssl): both below these
SPEECH_GRID, SPEECH_SUSTAINED = 0.20, 0.08
#: a sustained peak has a peak within this many semitones in each of the 2 STFT frames
#: (hop 512) before and after its own (about 0.1 s in all)
SUSTAIN_TOLERANCE, SUSTAIN_FRAMES = 0.15, 2


def pitch_grid(samples: np.ndarray, sr: int) -> tuple[float, float]:
    """Candidate speech measurements of mono ``samples`` (DC removed, the no-key excerpts),
    both in [0, 1], from the STFT peaks between 80 Hz and 2 kHz that the tuning estimate
    reads (``musicssl.dsp.tuning.spectral_peaks``):

    * grid concentration: resultant length of the peaks' deviations from the semitone
      grid as angles (magnitude-weighted, peaks at least as strong as their median).
      Held notes share one tuning (high); gliding pitch and noise spread evenly (low).
    * sustained share: share of peak magnitude in peaks with a peak within
      :data:`SUSTAIN_TOLERANCE` semitones in each of the :data:`SUSTAIN_FRAMES` frames
      before and after their own.
    """
    from musicssl.dsp.tuning import (
        TUNING_FMAX,
        TUNING_FMIN,
        grid_resultant,
        spectral_peaks,
    )
    from musicssl.key import tonality

    x = samples - np.float32(np.mean(samples, dtype=np.float64))
    resultant, strong_total, held_total, total = 0j, 0.0, 0.0, 0.0
    for part in tonality.excerpts(x, sr):
        freq, mag, frame = spectral_peaks(part, sr, TUNING_FMIN, TUNING_FMAX, with_frames=True)
        if not len(freq):
            continue
        part_resultant, weight = grid_resultant(freq, mag)
        resultant += part_resultant
        strong_total += weight
        held_total += float(mag[_sustained(frame, 12.0 * np.log2(freq / 440.0))].sum())
        total += float(mag.sum())
    if strong_total <= 0 or total <= 0:
        return 0.0, 0.0
    return float(abs(resultant)) / strong_total, held_total / total


def _sustained(frame: np.ndarray, semitones: np.ndarray) -> np.ndarray:
    """bool ``(n_peaks,)``: the peaks :func:`pitch_grid` counts as sustained."""
    per = 6                                                   # occupancy cells per tolerance
    cell = np.floor((semitones - semitones.min()) * (per / SUSTAIN_TOLERANCE)).astype(np.int64)
    n_frames = int(frame.max()) + 1
    occupied = np.zeros((n_frames, int(cell.max()) + 1 + 2 * per), dtype=bool)
    for d in range(2 * per + 1):                              # ± the tolerance around each peak
        occupied[frame, cell + d] = True
    held = np.ones(len(frame), dtype=bool)
    for d in [k for k in range(-SUSTAIN_FRAMES, SUSTAIN_FRAMES + 1) if k]:
        other = frame + d
        inside = (other >= 0) & (other < n_frames)
        ok = np.zeros(len(frame), dtype=bool)
        ok[inside] = occupied[other[inside], cell[inside] + per]
        held &= ok
    return held


def _speak(engine: str, voice: str, text: str, path: Path) -> None:
    if engine == "espeak-ng":
        command, stdin = ["espeak-ng", "-v", voice, "-w", str(path), text], None
    elif engine == "flite":
        command, stdin = ["flite", "-voice", voice, "-t", text, "-o", str(path)], None
    else:
        command, stdin = ["text2wave", "-o", str(path)], text.encode()
    subprocess.run(command, input=stdin, check=True, capture_output=True, timeout=120)


def speech_signals() -> dict[str, np.ndarray]:
    """Each sentence (said twice) by each installed voice of :data:`VOICES`, at SR."""
    from musicssl.io.audio import load_audio

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for engine, voice in VOICES:
            if shutil.which("text2wave" if engine == "festival" else engine) is None:
                continue
            for i, sentence in enumerate(SENTENCES):
                path = Path(tmp) / f"{engine}-{voice}-{i}.wav"
                _speak(engine, voice, f"{sentence} {sentence}", path)
                out[f"speech {engine} {voice} {i}"] = load_audio(path, sr=SR)
    return out


def main(argv=None) -> int:
    from musicssl.io.audio import load_audio
    from musicssl.key import tonality
    from musicssl.key.features import compute_features
    from musicssl.key.registry import load_estimator
    from musicssl.keys import format_key

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--estimator", action="append", default=[], help="more estimator specs to run")
    p.add_argument("--dev-synth", default=str(REPO.parent / "shared" / "data" / "dev-synth"))
    p.add_argument("--folder", action="append", default=[], help="audio folders to measure")
    p.add_argument("--speech", action="store_true", help="add text-to-speech speech (espeak-ng, flite, festival)")
    args = p.parse_args(argv)

    specs = ["default", *args.estimator]
    estimators = [load_estimator(s) for s in specs]
    for e in estimators:
        e.detect_no_key = False  # print the answer the estimator would give; the decision is its own column

    def row(name: str, source: np.ndarray) -> tuple[bool, bool]:
        """``source``: samples at SR; each estimator gets features of its own front end."""
        by_config = {}
        answers = []
        for e in estimators:
            options = getattr(e, "feature_options", {})
            config = (e.frontend_config, tuple(sorted(options.items())))
            if config not in by_config:
                by_config[config] = compute_features(source, e.frontend_config, sr=SR, **options)
            r = e.estimate_features([by_config[config]])[0]
            answers.append(f"{format_key(r.key):<9} {r.confidence:5.3f}")
        features = next(iter(by_config.values()))
        reason = features.no_key_reason
        grid, held = pitch_grid(source, SR)
        print(f"{name[:34]:<34} {features.harmonic_fraction:6.3f} {features.peak_contrast:7.2f} "
              f"{grid:6.3f} {held:6.3f}  "
              f"{'NO KEY' if reason else 'key':<7} " + "  ".join(answers), flush=True)
        return reason is not None, grid < SPEECH_GRID and held < SPEECH_SUSTAINED

    print(f"thresholds: harmonic fraction < {tonality.MIN_HARMONIC_FRACTION}, "
          f"peak contrast < {tonality.MIN_PEAK_CONTRAST_DB} dB -> no key; candidate speech rule "
          f"(not used): grid concentration < {SPEECH_GRID} and sustained share < {SPEECH_SUSTAINED}")
    print(f"{'input':<34} {'harm':>6} {'contr':>7} {'grid':>6} {'sust':>6}  {'decision':<7} "
          + "  ".join(f"{s[:15]:<15}" for s in specs))
    signals = made_signals()
    if args.speech:
        speech = speech_signals()
        if not speech:
            print("(no espeak-ng, flite or festival: speech skipped)")
        signals.update(speech)
    spoken = []
    for name, x in signals.items():
        no_key, speech_rule = row(name, x.astype(np.float32))
        if name.startswith("speech"):
            spoken.append((no_key, speech_rule))
    if spoken:
        print(f"speech: {sum(n for n, _ in spoken)} of {len(spoken)} clips answered 'no key'; "
              f"the candidate speech rule would catch {sum(r for _, r in spoken)}")

    groups: dict[str, list[Path]] = {}
    dev = Path(args.dev_synth)
    if (dev / "labels.csv").is_file():
        import csv

        with open(dev / "labels.csv", newline="") as f:
            groups["dev-synth"] = [dev / r["path"] for r in csv.DictReader(f)]
    from musicssl.io.files import find_audio_files

    for folder in args.folder:
        groups[str(folder)] = find_audio_files([folder])
    for group, paths in groups.items():
        flagged, by_rule, harm, contr, grids = [], [], [], [], []
        for path in paths:
            samples = load_audio(path, sr=SR)            # decoded once for both measurements
            f = compute_features(samples, estimators[0].frontend_config, sr=SR)
            harm.append(f.harmonic_fraction)
            contr.append(f.peak_contrast)
            grid, held = pitch_grid(samples, SR)
            grids.append((grid, held))
            if f.no_key_reason:
                flagged.append(path.name)
            if grid < SPEECH_GRID and held < SPEECH_SUSTAINED:
                by_rule.append(f"{path.name} ({grid:.3f}, {held:.3f})")
        print(f"\n{group}: {len(paths)} files, {len(flagged)} answered 'no key' "
              f"({100 * len(flagged) / max(1, len(paths)):.1f} %); harmonic fraction min {min(harm):.3f}, "
              f"peak contrast min {min(contr):.2f} dB; grid concentration min {min(g for g, _ in grids):.3f}, "
              f"sustained share min {min(h for _, h in grids):.3f}; the candidate speech rule would "
              f"flag {len(by_rule)}")
        for name in flagged[:20]:
            print(f"   no key: {name}")
        for name in by_rule[:20]:
            print(f"   speech rule: {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
