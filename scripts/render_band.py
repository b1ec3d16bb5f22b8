"""Render band-like UNLABELED audio for self-supervised key training.

Real compositions (tunes of the music21 corpus: ABC folk collections, some with
chord symbols; ``--collections bach`` for the Bach chorales) are arranged as a
small band and synthesised with FluidSynth and a General MIDI soundfont, one
stem at a time:

* **melody** — the tune's top line on a voice patch (choir aahs, voice oohs,
  synth voice, voice lead) or a lead instrument (sax, trumpet, square/saw
  lead, overdriven guitar), moved into a singing register;
* **chords** — the tune's chord symbols when it has them, otherwise one
  triad per half bar fitted to the melody's notes (no key is read or used),
  on distorted/overdriven guitar (power chords, eighth-note chugs), clean
  electric guitar or electric piano (triads, strummed per beat);
* **bass** — the chord roots (with fifths and octave jumps) on an electric or
  synth bass patch;
* **drums** — a GM kit on MIDI channel 10: kick/snare/hi-hat patterns from
  the metre (duple, triple, compound), a fill every 4 or 8 bars, crash on
  the following downbeat.

Stems are mixed like produced music: per-stem gain, EQ tilt and compression,
a shared reverb send (:func:`musicssl.key.augment.synthetic_rir`), then bus
compression and a limiter to a loudness near -14 dBFS RMS. Every clip is
transposed by a random amount over all 12 semitones at a random tempo, so
tonics are uniform. **No key is written anywhere**: the manifest
(``OUT/manifest.csv``, columns ``path,duration_s,collection,piece_id,title,
transpose,tempo_bpm,time_signature,melody,chords,bass,seed,beats_path``) is what
``musicssl train --data OUT/manifest.csv`` reads. The drum part's beat grid is
written to ``OUT/beats/*.beats`` (``time<TAB>beat-in-bar``, column
``beats_path``), so a draw can also serve as a labelled beat set with drums
(``benchmarks/beat_eval.py --dataset csv --root OUT``); training never reads it.

Pieces listed in ``--exclude`` manifests (``piece_id`` column; suffixes such
as ``_t+3`` of transposed renders are stripped) are never used: pass the
dev-synth and render24 ``labels.csv``. Deterministic for a ``--seed``;
resumable (finished clips are kept, failed pieces are remembered in
``OUT/meta/``); every file is written atomically.

Needs: music21 and mido (``pip install musicssl[render]``) and Debian
``fluidsynth`` + ``fluid-soundfont-gm``. Example (docs/DATA_CARD.md)::

    python scripts/render_band.py work-data/band --count 80 --max-minutes 25 \\
        --exclude ../shared/data/dev-synth/labels.csv --exclude work-data/render24/labels.csv
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import math
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:       # render_symbolic.py sits next to this script
    sys.path.append(str(_HERE))

from render_symbolic import (  # noqa: E402  (after the path set-up)
    SOUNDFONTS, Candidate, RenderError, excluded_ids, find_candidates, load_score, synthesize,
)

DEFAULT_COLLECTIONS = ("nottingham-dataset", "essenFolksong", "oneills1850", "ryansMammoth", "airdsAirs",
                       "miscFolk")
#: GM programs (0-based) per role
MELODY_PROGRAMS = {52: "Choir Aahs", 53: "Voice Oohs", 54: "Synth Voice", 85: "Lead 6 (voice)",
                   65: "Alto Sax", 56: "Trumpet", 80: "Lead 1 (square)", 81: "Lead 2 (sawtooth)",
                   29: "Overdriven Guitar"}
CHORD_PROGRAMS = {30: "Distortion Guitar", 29: "Overdriven Guitar", 27: "Electric Guitar (clean)",
                  4: "Electric Piano 1", 5: "Electric Piano 2", 16: "Drawbar Organ"}
DISTORTED = {29, 30}
BASS_PROGRAMS = {33: "Electric Bass (finger)", 34: "Electric Bass (pick)", 35: "Fretless Bass",
                 38: "Synth Bass 1"}
KICK, SNARE, HAT_CLOSED, HAT_OPEN, CRASH, RIDE = 36, 38, 42, 46, 49, 51
TOMS = (50, 47, 45, 43)
STEMS = ("melody", "chords", "bass", "drums")
_SUFFIX = re.compile(r"_t[+-]?\d+$")


@dataclass
class Note:
    """One note in quarter notes (``start``, ``dur``) with a MIDI pitch and velocity (1–127)."""

    start: float
    dur: float
    pitch: int
    velocity: int = 90


@dataclass
class Tune:
    """What the arrangement needs from a score (times in quarter notes)."""

    melody: list[Note]
    chords: list[tuple[float, float, int, tuple[int, ...]]]   # (start, dur, root pc, pitch classes)
    bar_q: float
    beat_q: float
    numerator: int
    compound: bool
    length_q: float
    chord_source: str = "symbols"


# --------------------------------------------------------------------------- reading a tune
def fit_triad(weights: np.ndarray) -> tuple[int, tuple[int, ...]]:
    """The major or minor triad that best covers a pitch-class weight vector ``(12,)``: ``(root, pcs)``.

    Score = weight on chord tones − ½ weight on other tones (+ a little for the root).
    """
    best, best_score = (0, (0, 4, 7)), -np.inf
    for root in range(12):
        for third in (4, 3):
            pcs = (root, (root + third) % 12, (root + 7) % 12)
            inside = sum(weights[p] for p in pcs)
            score = inside - 0.5 * (weights.sum() - inside) + 0.1 * weights[root]
            if score > best_score + 1e-9:
                best, best_score = (root, pcs), score
    return best


def read_tune(score) -> Tune:
    """Melody (top line), chords (symbols or fitted triads) and metre of a music21 score.

    A score of two or more parts takes its melody from the first (top) part and fits its triads to the
    notes of every part; a one-line tune fits them to its melody.
    """
    from music21 import harmony, meter, stream

    if isinstance(score, stream.Opus):
        score = score.scores[0]
    score = score.stripTies()
    flat = score.flatten()
    ts = next(iter(flat.getElementsByClass(meter.TimeSignature)), None) or meter.TimeSignature("4/4")
    bar_q = float(ts.barDuration.quarterLength)
    numerator = int(ts.numerator)
    compound = ts.denominator == 8 and numerator % 3 == 0 and numerator > 3
    beat_q = 1.5 if compound else float(4 / ts.denominator) if ts.denominator <= 4 else 1.0
    # several parts (a chorale, a quartet): the melody is the top part, the harmony is fitted to all
    parts = list(score.parts) if hasattr(score, "parts") else []
    top = parts[0].flatten() if len(parts) >= 2 else flat
    tops: dict[float, Note] = {}
    for n in top.notes:
        if isinstance(n, harmony.ChordSymbol):
            continue
        start, dur = float(n.offset), float(n.quarterLength)
        if dur <= 0:
            continue
        pitch = max(p.midi for p in n.pitches)
        if start not in tops or pitch > tops[start].pitch:
            tops[start] = Note(start, dur, pitch)
    melody = [tops[k] for k in sorted(tops)]
    harmony_notes = melody
    if len(parts) >= 2:
        harmony_notes = [Note(float(n.offset), float(n.quarterLength), p.midi) for n in flat.notes
                         if not isinstance(n, harmony.ChordSymbol) and float(n.quarterLength) > 0
                         for p in n.pitches]
    if len(melody) < 8:
        raise RenderError("fewer than 8 melody notes")
    length_q = max(n.start + n.dur for n in melody)
    symbols = sorted(((float(c.getOffsetInHierarchy(score)), c) for c in
                      score.recurse().getElementsByClass(harmony.ChordSymbol) if c.pitches),
                     key=lambda item: item[0])
    chords: list[tuple[float, float, int, tuple[int, ...]]] = []
    if len(symbols) >= 2:
        for i, (start, c) in enumerate(symbols):
            end = symbols[i + 1][0] if i + 1 < len(symbols) else length_q
            if end > start:
                chords.append((start, end - start, c.root().midi % 12, tuple(sorted({p.midi % 12 for p in c.pitches}))))
    else:
        window = bar_q / 2 if bar_q >= 3 and not compound else bar_q
        if compound and bar_q >= 6:
            window = bar_q / 2
        t = 0.0
        while t < length_q:
            weights = np.zeros(12)
            for n in harmony_notes:
                overlap = min(n.start + n.dur, t + window) - max(n.start, t)
                if overlap > 0:
                    weights[n.pitch % 12] += overlap
            if weights.sum() > 0:
                root, pcs = fit_triad(weights)
                if chords and chords[-1][2] == root and chords[-1][3] == pcs:
                    s, d, r, p = chords[-1]
                    chords[-1] = (s, d + window, r, p)
                else:
                    chords.append((t, window, root, pcs))
            elif chords:
                s, d, r, p = chords[-1]
                chords[-1] = (s, d + window, r, p)
            t += window
    if not chords:
        raise RenderError("no chords")
    return Tune(melody, chords, bar_q, beat_q, numerator, compound, length_q,
                "symbols" if len(symbols) >= 2 else "fitted")


# --------------------------------------------------------------------------- the band's parts
def _register(pitches: list[int], low: int, high: int) -> int:
    """Octave shift (semitones, multiple of 12) that puts the median of ``pitches`` within ``low..high``."""
    median = float(np.median(pitches))
    shift = 0
    while median + shift < low:
        shift += 12
    while median + shift > high:
        shift -= 12
    return shift


def melody_part(tune: Tune, rng: np.random.Generator) -> list[Note]:
    shift = _register([n.pitch for n in tune.melody], 60, 72)
    return [Note(n.start, n.dur * 0.95, n.pitch + shift, int(rng.integers(80, 110))) for n in tune.melody]


def chord_part(tune: Tune, program: int, rng: np.random.Generator) -> list[Note]:
    """Power-chord chugs (distorted guitars) or strummed triads (others) around C3–C4."""
    notes = []
    step = tune.beat_q / 2 if program in DISTORTED else tune.beat_q
    for start, dur, root, pcs in tune.chords:
        base = 40 + (root - 40) % 12                      # root between E2 and D#3
        if program in DISTORTED:
            voicing = [base, base + 7, base + 12]
        else:
            voicing = sorted({48 + (p - 48) % 12 for p in pcs} | {base + 12})
        t = start
        while t < start + dur - 1e-6:
            length = min(step, start + dur - t)
            accent = 100 if abs((t / tune.beat_q) - round(t / tune.beat_q)) < 1e-6 else 80
            for i, p in enumerate(voicing):
                strum = 0.0 if program in DISTORTED else 0.02 * i
                notes.append(Note(t + strum, max(0.05, length * 0.9 - strum), p,
                                  int(min(127, accent + rng.integers(-8, 8)))))
            t += step
    return notes


def bass_part(tune: Tune, rng: np.random.Generator) -> list[Note]:
    """Chord roots on the beats (E1–D#2), a fifth or octave on some off-beats."""
    notes = []
    for start, dur, root, pcs in tune.chords:
        base = 28 + (root - 28) % 12
        fifth = base + 7 if (root + 7) % 12 in pcs else base
        t, i = start, 0
        while t < start + dur - 1e-6:
            length = min(tune.beat_q, start + dur - t)
            pitch = base if i % 2 == 0 else (fifth if rng.random() < 0.5 else base + 12 if rng.random() < 0.3 else base)
            notes.append(Note(t, length * 0.85, pitch, int(rng.integers(95, 115))))
            t += tune.beat_q
            i += 1
    return notes


def _bars(tune: Tune, total_q: float) -> list[tuple[float, int, int]]:
    """Every beat of every bar that starts before ``total_q``: ``(time in quarter notes, beat in
    bar from 0, bar from 0)``. The drum part plays on it; :func:`beat_grid` annotates it."""
    beats = max(1, round(tune.bar_q / tune.beat_q))
    grid, bar, t0 = [], 0, 0.0
    while t0 < total_q - 1e-6:
        grid += [(t0 + b * tune.beat_q, b, bar) for b in range(beats)]
        t0 += tune.bar_q
        bar += 1
    return grid


def beat_grid(tune: Tune, total_q: float) -> list[tuple[float, int]]:
    """The drum part's beats: ``(time in quarter notes, beat in bar from 1)``, bars from 0."""
    return [(t, b + 1) for t, b, _ in _bars(tune, total_q) if t < total_q - 1e-6]


def drum_part(tune: Tune, total_q: float, rng: np.random.Generator) -> list[Note]:
    """Kick/snare/hats from the metre, a fill every 4 or 8 bars, crash after it."""
    notes = []
    fill_every = int(rng.choice([4, 8]))
    beats = max(1, round(tune.bar_q / tune.beat_q))
    ride = rng.random() < 0.25
    sub = tune.beat_q / (3 if tune.compound else 2)
    for t, b, bar in _bars(tune, total_q):
        fill = (bar + 1) % fill_every == 0
        if b == 0 and bar % fill_every == 0:
            notes.append(Note(t, 1.0, CRASH, 100))
        if fill and b == beats - 1:
            n_hits = 3 if tune.compound else 4
            for j in range(n_hits):
                notes.append(Note(t + j * tune.beat_q / n_hits, 0.2, int(TOMS[j % 4] if j else SNARE), 100 + 5 * j))
            continue
        if beats == 3 and not tune.compound:      # waltz: kick on one, snare on two and three
            kick, snare = b == 0, b > 0
        else:                                      # duple/quadruple (simple or compound): backbeat
            kick, snare = b % 2 == 0, b % 2 == 1
        if kick:
            notes.append(Note(t, 0.2, KICK, int(rng.integers(100, 120))))
        if snare:
            notes.append(Note(t, 0.2, SNARE, int(rng.integers(95, 115))))
        if not tune.compound and b % 2 == 1 and rng.random() < 0.3:   # syncopated kick
            notes.append(Note(t + tune.beat_q / 2, 0.2, KICK, int(rng.integers(90, 110))))
        for s in range(3 if tune.compound else 2):
            cymbal = RIDE if ride else (HAT_OPEN if (s == 1 and b == beats - 1 and rng.random() < 0.3) else HAT_CLOSED)
            notes.append(Note(t + s * sub, 0.1, cymbal, int(rng.integers(60, 90) + (15 if s == 0 else 0))))
    return notes


def repeat_notes(notes: list[Note], period_q: float, times: int) -> list[Note]:
    return [Note(n.start + k * period_q, n.dur, n.pitch, n.velocity) for k in range(times) for n in notes]


# --------------------------------------------------------------------------- MIDI and synthesis
def write_midi(notes: list[Note], path: Path, qpm: float, program: int | None, channel: int, transpose: int) -> None:
    """One-track MIDI file (480 ticks per quarter) of ``notes`` on ``channel`` (9 = drums, not transposed)."""
    import mido

    tpq = 480
    events = []
    for n in notes:
        pitch = n.pitch + (0 if channel == 9 else transpose)
        if not 0 <= pitch <= 127:
            continue
        on = int(round(n.start * tpq))
        off = max(on + 1, int(round((n.start + n.dur) * tpq)))
        events.append((on, 1, mido.Message("note_on", channel=channel, note=pitch, velocity=max(1, min(127, n.velocity)))))
        events.append((off, 0, mido.Message("note_off", channel=channel, note=pitch, velocity=0)))
    events.sort(key=lambda e: (e[0], e[1]))
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=int(round(60_000_000 / qpm)), time=0))
    if program is not None:
        track.append(mido.Message("program_change", channel=channel, program=program, time=0))
    now = 0
    for tick, _, msg in events:
        track.append(msg.copy(time=tick - now))
        now = tick
    midi = mido.MidiFile(ticks_per_beat=tpq)
    midi.tracks.append(track)
    midi.save(str(path))


def render_stem(notes: list[Note], qpm: float, program: int | None, channel: int, transpose: int,
                soundfont: Path, sr: int, n_samples: int) -> np.ndarray:
    """FluidSynth render of one stem, mono float32 ``(n_samples,)``."""
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        midi, wav = Path(tmp) / "stem.mid", Path(tmp) / "stem.wav"
        write_midi(notes, midi, qpm, program, channel, transpose)
        synthesize(midi, wav, soundfont, sr)
        audio, _ = sf.read(wav, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)[:n_samples]
    return np.pad(audio, (0, n_samples - len(audio)))


# --------------------------------------------------------------------------- mixing
def db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def rms_db(x: np.ndarray) -> float:
    """RMS level in dBFS (−inf for silence)."""
    r = float(np.sqrt(np.mean(np.asarray(x, np.float64) ** 2)))
    return 20 * math.log10(r) if r > 0 else -math.inf


def tilt_eq(x: np.ndarray, sr: int, tilt_db: float) -> np.ndarray:
    """Spectral tilt: ``±tilt_db`` dB at the ends, pivot 1 kHz (±tilt_db/2 per ~decade), ``(n,)`` float32."""
    if tilt_db == 0:
        return x.astype(np.float32)
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1.0 / sr)
    octaves = np.log2(np.maximum(f, 20.0) / 1000.0)
    gain = 10 ** (np.clip(octaves / 5.6, -1, 1) * tilt_db / 20)
    return np.fft.irfft(spec * gain, len(x)).astype(np.float32)


def compress(x: np.ndarray, sr: int, threshold_db: float, ratio: float, attack_s: float = 0.01,
             release_s: float = 0.15) -> np.ndarray:
    """Feed-forward RMS compressor (10 ms frames, attack/release smoothing, no make-up gain); ``(n,)`` float32."""
    hop = max(1, int(0.01 * sr))
    n_frames = int(math.ceil(len(x) / hop))
    padded = np.pad(x.astype(np.float64), (0, n_frames * hop - len(x)))
    level = 10 * np.log10(np.mean(padded.reshape(n_frames, hop) ** 2, axis=1) + 1e-12)
    reduction = np.maximum(0.0, level - threshold_db) * (1 - 1 / ratio)
    a_att, a_rel = math.exp(-0.01 / attack_s), math.exp(-0.01 / release_s)
    smooth = np.empty_like(reduction)
    acc = 0.0
    for i, r in enumerate(reduction):   # ≤ 100 frames per second: cheap
        a = a_att if r > acc else a_rel
        acc = a * acc + (1 - a) * r
        smooth[i] = acc
    gain_db = -np.interp(np.arange(len(x)) / hop, np.arange(n_frames), smooth)
    return (x * 10 ** (gain_db / 20)).astype(np.float32)


def mix_stems(stems: dict[str, np.ndarray], sr: int, rng: np.random.Generator, target_db: float = -14.0
              ) -> tuple[np.ndarray, dict]:
    """Produced-music mix of the stems: ``(n,)`` float32 peak ≤ 0.98 and the settings used."""
    from scipy.signal import fftconvolve

    from musicssl.key.augment import synthetic_rir

    levels = {"melody": -16.0, "chords": -19.0, "bass": -18.0, "drums": -15.0}
    settings: dict = {}
    bus = np.zeros_like(next(iter(stems.values())), dtype=np.float64)
    send = np.zeros_like(bus)
    for name, x in stems.items():
        if rms_db(x) == -math.inf:
            continue
        gain_db = levels[name] + float(rng.uniform(-3, 3))
        x = x * db_to_gain(gain_db - rms_db(x))
        x = tilt_eq(x, sr, float(rng.uniform(-3, 3)))
        x = compress(x, sr, threshold_db=gain_db + 4, ratio=float(rng.uniform(2, 5)))
        bus += x
        if name in ("melody", "chords"):
            send += x * float(rng.uniform(0.2, 0.5))
        settings[name] = round(gain_db, 1)
    rt60 = float(rng.uniform(0.4, 2.0))
    wet = fftconvolve(send, synthetic_rir(rng, sr, rt60))[: len(bus)]
    bus += wet * db_to_gain(float(rng.uniform(-6, 0)))
    settings["reverb_rt60_s"] = round(rt60, 2)
    bus = compress(bus.astype(np.float32), sr, threshold_db=rms_db(bus) + 2, ratio=3.0)
    bus = bus * db_to_gain(target_db + float(rng.uniform(-2, 2)) - rms_db(bus))
    out = np.tanh(bus / 0.98) * 0.98                     # soft limiter
    return out.astype(np.float32), settings


# --------------------------------------------------------------------------- one clip
@dataclass
class ClipPlan:
    """Random choices for one clip, all drawn from ``(seed, index)``."""

    transpose: int
    qpm: float
    melody_program: int
    chord_program: int
    bass_program: int


def plan_clip(seed: int, index: int) -> tuple[ClipPlan, np.random.Generator]:
    rng = np.random.default_rng([seed, index])
    plan = ClipPlan(transpose=int(rng.integers(0, 12)) - 6, qpm=float(rng.uniform(80, 150)),
                    melody_program=int(rng.choice(list(MELODY_PROGRAMS))),
                    chord_program=int(rng.choice(list(CHORD_PROGRAMS))),
                    bass_program=int(rng.choice(list(BASS_PROGRAMS))))
    return plan, rng


def render_clip(candidate: Candidate, plan: ClipPlan, rng: np.random.Generator, soundfont: Path, *,
                sr: int = 22050, min_seconds: float = 40.0, max_seconds: float = 90.0
                ) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """``(mix (n,), stems {name: (n,)}, info)`` of one piece arranged and mixed as a band."""
    try:
        tune = read_tune(load_score(candidate))
    except RenderError:
        raise
    except Exception as exc:   # music21 raises many kinds of errors on odd files
        raise RenderError(f"music21 could not read it: {type(exc).__name__}: {exc}") from exc
    seconds_per_q = 60.0 / plan.qpm
    period_q = math.ceil(tune.length_q / tune.bar_q - 1e-6) * tune.bar_q
    if period_q * seconds_per_q < 8:
        raise RenderError(f"too short: {period_q * seconds_per_q:.1f} s")
    times = max(1, math.ceil(min_seconds / (period_q * seconds_per_q)))
    total_q = min(period_q * times, max_seconds / seconds_per_q)
    n = int(total_q * seconds_per_q * sr)
    parts = {
        "melody": (repeat_notes(melody_part(tune, rng), period_q, times), plan.melody_program, 0),
        "chords": (repeat_notes(chord_part(tune, plan.chord_program, rng), period_q, times), plan.chord_program, 1),
        "bass": (repeat_notes(bass_part(tune, rng), period_q, times), plan.bass_program, 2),
        "drums": (drum_part(tune, total_q, rng), None, 9),
    }
    stems = {}
    for name, (notes, program, channel) in parts.items():
        notes = [x for x in notes if x.start < total_q]
        stems[name] = render_stem(notes, plan.qpm, program, channel, plan.transpose, soundfont, sr, n)
    if rms_db(stems["melody"]) < -60 or rms_db(stems["drums"]) < -60:
        raise RenderError("a stem rendered silent")
    mix, settings = mix_stems(stems, sr, rng)
    info = {"time_signature": f"{tune.numerator}/{int(round(4 * tune.numerator / tune.bar_q))}",
            "chord_source": tune.chord_source,
            "beats": [(round(q * seconds_per_q, 6), b) for q, b in beat_grid(tune, total_q)],
            "mix": settings}
    return mix, stems, info


# --------------------------------------------------------------------------- the run
MANIFEST_FIELDS = ["path", "duration_s", "collection", "piece_id", "title", "transpose", "tempo_bpm",
                   "time_signature", "melody", "chords", "bass", "seed", "beats_path"]


def clip_id(index: int, candidate: Candidate) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.+-]", "_", candidate.piece_id)
    return f"band{index:05d}_{safe}"


def _atomic_bytes(path: Path, data: bytes) -> None:
    from musicssl.io.atomic import atomic_open

    with atomic_open(path, "wb") as handle:
        handle.write(data)


def write_manifest(out: Path) -> list[dict]:
    """``OUT/manifest.csv`` rebuilt from every finished clip's ``meta/*.json`` (sorted by path)."""
    from musicssl.io.atomic import atomic_write_text

    rows = []
    for meta in sorted((out / "meta").glob("*.json")):
        record = json.loads(meta.read_text())
        if (out / record["path"]).is_file():
            rows.append({k: record.get(k, "") for k in MANIFEST_FIELDS})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "manifest.csv", buffer.getvalue())
    return rows


_BWV_IN_TITLE = re.compile(r"\(BWV\s*([^)]*)\)", re.IGNORECASE)
_BWV_IN_ID = re.compile(r"bwv(\d+(?:\.\d+)?)", re.IGNORECASE)


def _title_words(text: str, words: int = 3) -> str:
    """First ``words`` words of a title, lower case, accents, entities and punctuation removed."""
    import html
    import unicodedata

    plain = unicodedata.normalize("NFKD", html.unescape(text)).encode("ascii", "ignore").decode()
    return " ".join(re.findall(r"[a-z]+", plain.lower())[:words])


def excluded_chorales(manifests: list[Path]) -> tuple[set[str], set[str]]:
    """Bach chorales named in manifests: ``(BWV numbers such as '38.6', first words of their titles)``.

    An evaluation set may hold chorales of another edition (dev-synth: C. Sapp's, ids ``bach370__chorNNN``,
    titles ``"Aus tiefer Not schrei ich zu dir (BWV 38/6)"``); music21's own chorales (``bach/bwv38.6``)
    are then matched by BWV number and, for other harmonisations of the same hymn tune, by title.
    """
    numbers: set[str] = set()
    titles: set[str] = set()
    for manifest in manifests:
        with open(manifest, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                title, piece = row.get("title") or "", row.get("piece_id") or ""
                found = _BWV_IN_TITLE.search(title)
                if found:
                    numbers.update(n.replace("/", ".") for n in re.findall(r"\d+(?:/\d+)?", found.group(1)))
                    titles.add(_title_words(title[:found.start()]))
                if piece.startswith("bach"):
                    numbers.update(_BWV_IN_ID.findall(piece))
    titles.discard("")
    return numbers, titles


@functools.lru_cache(maxsize=1)
def _chorale_titles() -> dict[str, str]:
    """music21's chorale list: BWV number (``'38.6'``) → first words of the hymn's title."""
    from music21.corpus import chorales

    return {str(k): _title_words(v.get("title") or "") for k, v in chorales.ChoraleListRKBWV().byBWV.items()}


def _is_excluded_chorale(candidate: Candidate, numbers: set[str], titles: set[str]) -> bool:
    """Whether a music21 ``bach`` piece is a chorale (or a harmonisation of a hymn) named in the exclusions."""
    if not numbers and not titles:
        return False
    found = _BWV_IN_ID.search(candidate.path.stem)
    if candidate.collection != "bach" or not found:
        return False
    number = found.group(1)
    if number in numbers:
        return True
    title = _chorale_titles().get(number) or _chorale_titles().get(number.split(".")[0])
    return bool(title) and title in titles


def candidate_pool(collections: list[str], exclude: list[Path], seed: int) -> tuple[list[Candidate], int]:
    """Shuffled (by ``seed``) ABC/kern/MusicXML pieces of the music21 corpus minus the excluded ids."""
    import music21

    corpus = Path(music21.__file__).parent / "corpus"
    roots = [corpus / c for c in collections]
    missing = [str(r) for r in roots if not r.is_dir()]
    if missing:
        raise SystemExit(f"music21 corpus collection(s) not found: {', '.join(missing)}")
    excluded = {_SUFFIX.sub("", i) for i in excluded_ids(exclude)}
    numbers, titles = excluded_chorales(list(exclude))
    pool = [c for c in find_candidates(roots, {"abc", "krn", "xml"}) if c.piece_id not in excluded
            and not _is_excluded_chorale(c, numbers, titles)]
    order = np.random.default_rng([seed, 1]).permutation(len(pool))
    return [pool[i] for i in order], len(excluded)


def find_soundfont(path: Path | None) -> Path:
    soundfont = path or next((Path(p) for p in SOUNDFONTS if Path(p).is_file()), None)
    if soundfont is None or not soundfont.is_file():
        raise SystemExit("no General MIDI soundfont found: apt-get install fluid-soundfont-gm (or --soundfont)")
    return soundfont


def run(out: Path, *, count: int, seed: int = 0, collections: list[str] = list(DEFAULT_COLLECTIONS),
        exclude: list[Path] = (), soundfont: Path | None = None, sr: int = 22050, min_seconds: float = 40.0,
        max_seconds: float = 90.0, max_minutes: float | None = None, shard: tuple[int, int] = (0, 1),
        log=print) -> list[dict]:
    """Render until ``count`` clips exist in ``out`` (or the time box ends); returns the manifest rows.

    ``shard=(k, n)`` takes only the pool's places ``i`` with ``i % n == k`` (and counts only their clips):
    ``n`` processes with the same ``out`` and ``seed`` and ``k = 0 … n-1`` render one draw in parallel.
    """
    import soundfile as sf

    from musicssl.evaluation.beat_annotations import format_beat_annotation

    if shutil.which("fluidsynth") is None:
        raise SystemExit("fluidsynth not found: apt-get install fluidsynth fluid-soundfont-gm")
    soundfont = find_soundfont(soundfont)
    pool, n_excluded = candidate_pool(list(collections), list(exclude), seed)
    log(f"{len(pool)} candidate pieces, {n_excluded} excluded ids")
    (out / "audio").mkdir(parents=True, exist_ok=True)
    (out / "meta").mkdir(parents=True, exist_ok=True)
    (out / "beats").mkdir(parents=True, exist_ok=True)
    started = time.time()
    done = 0
    shard_k, shard_n = shard
    if not 0 <= shard_k < shard_n:
        raise SystemExit(f"--shard {shard_k}/{shard_n}: need 0 <= K < N")
    for index, candidate in enumerate(pool):
        if index % shard_n != shard_k:
            continue
        if done >= count:
            break
        if max_minutes is not None and time.time() - started > 60 * max_minutes:
            log(f"time box of {max_minutes} min reached")
            break
        cid = clip_id(index, candidate)
        meta, failed = out / "meta" / f"{cid}.json", out / "meta" / f"{cid}.failed"
        if meta.is_file():
            done += 1
            continue
        if failed.is_file():
            continue
        plan, rng = plan_clip(seed, index)
        try:
            mix, _, info = render_clip(candidate, plan, rng, soundfont, sr=sr, min_seconds=min_seconds,
                                       max_seconds=max_seconds)
        except RenderError as exc:
            _atomic_bytes(failed, str(exc).encode())
            log(f"skip {candidate.piece_id}: {exc}")
            continue
        rel, beats_rel = Path("audio") / f"{cid}.ogg", Path("beats") / f"{cid}.beats"
        buffer = io.BytesIO()
        sf.write(buffer, mix, sr, format="OGG", subtype="VORBIS")
        _atomic_bytes(out / rel, buffer.getvalue())
        times, numbers = zip(*info["beats"])
        _atomic_bytes(out / beats_rel, format_beat_annotation(times, numbers, decimals=6).encode())
        record = {"path": str(rel), "duration_s": round(len(mix) / sr, 3), "collection": candidate.collection,
                  "piece_id": candidate.piece_id, "title": candidate.title, "transpose": plan.transpose,
                  "tempo_bpm": round(plan.qpm, 1), "time_signature": info["time_signature"],
                  "melody": f"{plan.melody_program}:{MELODY_PROGRAMS[plan.melody_program]}",
                  "chords": f"{plan.chord_program}:{CHORD_PROGRAMS[plan.chord_program]}",
                  "bass": f"{plan.bass_program}:{BASS_PROGRAMS[plan.bass_program]}", "seed": seed,
                  "beats_path": str(beats_rel),
                  "chord_source": info["chord_source"], "mix": info["mix"]}
        _atomic_bytes(meta, json.dumps(record, indent=1).encode())
        done += 1
        hours = sum(json.loads(m.read_text())["duration_s"] for m in (out / "meta").glob("*.json")) / 3600 \
            if done % 10 == 0 else None
        log(f"[{done}/{count}] {cid} {record['duration_s']:.0f} s {record['melody']} / {record['chords']} "
            f"[{time.time() - started:.0f} s]" + (f" total {hours:.2f} h" if hours is not None else ""))
    rows = write_manifest(out)
    log(f"{len(rows)} clips, {sum(float(r['duration_s']) for r in rows) / 3600:.2f} h in {out / 'manifest.csv'} "
        f"[{time.time() - started:.0f} s]")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="output folder (manifest.csv, audio/, meta/)")
    ap.add_argument("--count", type=int, default=80, help="clips to have in OUT at the end (default 80)")
    ap.add_argument("--max-minutes", type=float, default=None, help="stop starting new clips after this")
    ap.add_argument("--collections", default=",".join(DEFAULT_COLLECTIONS), help="music21 corpus collections")
    ap.add_argument("--exclude", type=Path, action="append", default=[],
                    help="manifest(s) with a piece_id column whose pieces are never used (dev-synth, render24)")
    ap.add_argument("--soundfont", type=Path, default=None, help="GM .sf2 (default: first Debian one found)")
    ap.add_argument("--sr", type=int, default=22050, help="sample rate (default 22050)")
    ap.add_argument("--min-seconds", type=float, default=40.0, help="short tunes are repeated up to this")
    ap.add_argument("--max-seconds", type=float, default=90.0, help="clips are cut to this")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shard", default="0/1", metavar="K/N",
                    help="render only every N-th piece from the K-th (0-based; run K = 0 … N-1 in parallel "
                         "with the same OUT, --seed and --count per shard)")
    args = ap.parse_args(argv)
    fields = args.shard.split("/")
    if len(fields) != 2 or not all(f.strip().isdigit() for f in fields):
        ap.error(f"--shard wants K/N, got {args.shard!r}")
    shard = (int(fields[0]), int(fields[1]))
    if not args.exclude:
        print("warning: no --exclude given; pass the labels.csv of every evaluation set", file=sys.stderr)
    run(args.out, count=args.count, seed=args.seed, collections=[c.strip() for c in args.collections.split(",")
                                                                  if c.strip()],
        exclude=args.exclude, soundfont=args.soundfont, sr=args.sr, min_seconds=args.min_seconds,
        max_seconds=args.max_seconds, max_minutes=args.max_minutes, shard=shard,
        log=lambda m: print(m, file=sys.stderr, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
