"""Make the example recording shipped for ``make demo``.

The piece is the "Ode to Joy" theme from the finale of Beethoven's Ninth
Symphony (1824, public domain), written here note by note in D major (the
key of the theme in the symphony) with a simple piano harmonisation of our
own (I, V, V7 and V/V chords; the last cadence is V-I in D). The key,
**D major**, is stated by the score: two sharps, every melody and chord note
diatonic to D major, phrases ending on D over a D major chord.

Steps: a standard MIDI file is built with a tiny writer below (no extra
packages), rendered by FluidSynth with the FluidR3 General MIDI sound font,
mixed to mono, peak-normalised to -1 dBFS, faded out, and stored as Ogg
Vorbis at 22 050 Hz.

Requirements: ``apt-get install fluidsynth fluid-soundfont-gm`` (Debian).
Usage: ``python scripts/make_example.py [--out src/musicssl/data/examples]``
"""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

SOUND_FONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2")
NAME = "ode_to_joy_d_major"
SAMPLE_RATE = 22050
TEMPO_BPM = 138
TICKS_PER_BEAT = 480

# MIDI note numbers of D major
A2, D3, E3, Fs3, G3, A3, Cs4, D4, E4, Fs4, G4, A4 = 45, 50, 52, 54, 55, 57, 61, 62, 64, 66, 67, 69
Gs3 = 56

# Melody: (pitch, beats). 16 bars of 4/4 (the theme: A A' B A').
PHRASE_START = [(Fs4, 1), (Fs4, 1), (G4, 1), (A4, 1),
                (A4, 1), (G4, 1), (Fs4, 1), (E4, 1),
                (D4, 1), (D4, 1), (E4, 1), (Fs4, 1)]
HALF_CADENCE = [(Fs4, 1.5), (E4, 0.5), (E4, 2)]
FULL_CADENCE = [(E4, 1.5), (D4, 0.5), (D4, 2)]
BRIDGE = [(E4, 1), (E4, 1), (Fs4, 1), (D4, 1),
          (E4, 1), (Fs4, 0.5), (G4, 0.5), (Fs4, 1), (D4, 1),
          (E4, 1), (Fs4, 0.5), (G4, 0.5), (Fs4, 1), (E4, 1),
          (D4, 1), (E4, 1), (A3, 2)]
MELODY = PHRASE_START + HALF_CADENCE + PHRASE_START + FULL_CADENCE + BRIDGE + PHRASE_START + FULL_CADENCE

# Harmony: one chord per half bar (2 beats): (bass, upper voices)
D_MAJ = (D3, (Fs3, A3))
A_MAJ = (A2, (E3, Cs4))
A7 = (A2, (G3, Cs4))
E7 = (E3, (Gs3, D4))
HARMONY = ([D_MAJ, D_MAJ, A7, A_MAJ, D_MAJ, D_MAJ, D_MAJ, A_MAJ]     # bars 1-4, half cadence
           + [D_MAJ, D_MAJ, A7, A_MAJ, D_MAJ, D_MAJ, A7, D_MAJ]     # bars 5-8, V7-I
           + [A_MAJ, D_MAJ, A7, D_MAJ, A7, D_MAJ, E7, A_MAJ]        # bars 9-12, V/V-V
           + [D_MAJ, D_MAJ, A7, A_MAJ, D_MAJ, D_MAJ, A7, D_MAJ])    # bars 13-16, V7-I
assert len(HARMONY) == 2 * 16 and sum(b for _, b in MELODY) == 4 * 16


def _vlq(value: int) -> bytes:
    """MIDI variable-length quantity."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def build_midi() -> bytes:
    """Format-0 standard MIDI file of the arrangement."""
    events: list[tuple[int, int, bytes]] = []  # (tick, order, message): note-offs before note-ons

    def note(start_beats: float, beats: float, pitch: int, velocity: int, channel: int) -> None:
        on = int(round(start_beats * TICKS_PER_BEAT))
        off = int(round((start_beats + beats) * TICKS_PER_BEAT)) - 10
        events.append((on, 1, bytes([0x90 | channel, pitch, velocity])))
        events.append((off, 0, bytes([0x80 | channel, pitch, 0])))

    beat = 0.0
    for pitch, beats in MELODY:
        note(beat, beats, pitch, 96, 0)
        beat += beats
    melody_beats = beat
    for i, (bass, upper) in enumerate(HARMONY):
        start = 2.0 * i
        note(start, 2.0, bass, 70, 1)
        for pitch in upper:  # repeated quarter-note chords
            note(start, 1.0, pitch, 52, 1)
            note(start + 1.0, 1.0, pitch, 46, 1)
    # final tonic chord held for a bar
    for pitch, velocity, channel in ((D3, 70, 1), (A3, 55, 1), (D4, 55, 1), (Fs4, 80, 0)):
        note(melody_beats, 4.0, pitch, velocity, channel)

    track = bytearray()
    tempo = int(round(60_000_000 / TEMPO_BPM))
    header_events = [
        b"\xff\x51\x03" + tempo.to_bytes(3, "big"),  # tempo
        b"\xff\x58\x04\x04\x02\x18\x08",              # 4/4
        b"\xff\x59\x02\x02\x00",                      # key signature: 2 sharps, major
        b"\xc0\x00", b"\xc1\x00",                      # both channels: acoustic grand piano
    ]
    for message in header_events:
        track += _vlq(0) + message
    last = 0
    for tick, _, message in sorted(events, key=lambda e: (e[0], e[1])):
        track += _vlq(tick - last) + message
        last = tick
    track += _vlq(TICKS_PER_BEAT) + b"\xff\x2f\x00"
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, TICKS_PER_BEAT)
    return header + b"MTrk" + struct.pack(">I", len(track)) + bytes(track)


def render(midi: bytes, sound_font: str) -> np.ndarray:
    """Render with FluidSynth; mono float32 at :data:`SAMPLE_RATE`."""
    fluidsynth = shutil.which("fluidsynth")
    if fluidsynth is None:
        sys.exit("fluidsynth not found: apt-get install fluidsynth fluid-soundfont-gm")
    with tempfile.TemporaryDirectory() as tmp:
        mid, wav = Path(tmp) / f"{NAME}.mid", Path(tmp) / f"{NAME}.wav"
        mid.write_bytes(midi)
        subprocess.run([fluidsynth, "-ni", "-q", "-g", "0.6", "-r", str(SAMPLE_RATE), "-F", str(wav),
                        sound_font, str(mid)], check=True, capture_output=True)
        audio, sr = sf.read(wav, dtype="float32", always_2d=True)
    assert sr == SAMPLE_RATE, sr
    return audio.mean(axis=1)


def finish(audio: np.ndarray, max_seconds: float = 30.0, fade_seconds: float = 1.5) -> np.ndarray:
    """Trim trailing silence, cap the length, fade out, peak-normalise to -1 dBFS."""
    loud = np.flatnonzero(np.abs(audio) > 1e-3)
    audio = audio[: loud[-1] + 1] if loud.size else audio
    audio = audio[: int(max_seconds * SAMPLE_RATE)].copy()
    fade = int(fade_seconds * SAMPLE_RATE)
    audio[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32) ** 2
    return (audio * (10 ** (-1 / 20) / np.max(np.abs(audio)))).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1]
                        / "src" / "musicssl" / "data" / "examples")
    parser.add_argument("--midi", action="store_true", help="also keep the .mid file")
    args = parser.parse_args(argv)
    sound_font = next((s for s in SOUND_FONTS if Path(s).is_file()), None)
    if sound_font is None:
        sys.exit("no General MIDI sound font found: apt-get install fluid-soundfont-gm")
    midi = build_midi()
    audio = finish(render(midi, sound_font))
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"{NAME}.ogg"
    sf.write(target, audio, SAMPLE_RATE, format="OGG", subtype="VORBIS", compression_level=0.6)
    if args.midi:
        (args.out / f"{NAME}.mid").write_bytes(midi)
    print(f"{target}: {len(audio) / SAMPLE_RATE:.1f} s, {target.stat().st_size / 1024:.0f} KiB, "
          f"sound font {sound_font}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
