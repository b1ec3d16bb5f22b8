"""Render scores whose file states the key into a labelled audio key/beat dataset.

Sources: the music21 corpus (or any folder of ``.abc`` / ``.krn`` /
MusicXML files). A piece is used only when its file states a major or minor
key: the ABC ``K:`` field (``K:G``, ``K:Em``, ``K:Bbmin``), a Humdrum key
token (``*G:`` major, ``*e:`` minor) or a MusicXML ``<key>`` with
``<mode>major|minor</mode>``. Modal keys (dorian, mixolydian, ``K:Hp`` …),
ambiguous ones (ABC ``K:EM``) and pieces without an explicit key are skipped.

Each chosen piece is optionally transposed by ``k`` semitones (the label
moves with it), given one constant tempo (fixed, or drawn from a range) and
one General MIDI program, exported to MIDI with music21, synthesised with
FluidSynth and a GM soundfont, cut to its first ``--seconds``, mixed to mono
and written with its beat times (from the score's measures and time
signatures at the chosen tempo). Output, in the generic manifest format that
``musicssl evaluate --dataset csv`` reads::

    OUT/labels.csv   path,key,beats_path,collection,piece_id,title,key_source,
                     source_key,transpose,program,tempo_bpm,time_signature,duration_s
    OUT/audio/*.ogg  OUT/beats/*.beats (one time in seconds per line)

``--transpose even`` picks sources and shifts so that the ``--count`` clips
cover the 24 keys evenly (``count / 24`` each; shifts in −6…+5 semitones).
Pieces listed in ``--exclude`` manifests (``piece_id`` column, e.g. the
dev-synth ``labels.csv``) are never used.

Needs: ``pip install music21`` and Debian ``fluidsynth`` + a soundfont
(``apt-get install fluidsynth fluid-soundfont-gm``). See docs/evaluation.md.

Example (the render24 set)::

    python scripts/render_symbolic.py work-data/render24 --count 48 --transpose even \\
        --tempo 90:140 --seconds 30 --exclude ../shared/data/dev-synth/labels.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from musicssl.evaluation.beat_annotations import format_beat_annotation
from musicssl.keys import Key, parse_key

#: General MIDI programs used with ``--program random`` (melodic, sustained or plucked).
GM_PROGRAMS: dict[int, str] = {
    0: "Acoustic Grand Piano", 6: "Harpsichord", 19: "Church Organ", 21: "Accordion",
    24: "Acoustic Guitar (nylon)", 40: "Violin", 48: "String Ensemble 1", 52: "Choir Aahs",
    71: "Clarinet", 73: "Flute",
}
DEFAULT_COLLECTIONS = ("oneills1850", "ryansMammoth", "airdsAirs", "miscFolk")
SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2",
              "/usr/share/sounds/sf2/TimGM6mb.sf2", "/usr/share/sounds/sf2/MuseScore_General.sf2")


class RenderError(Exception):
    """One piece could not be rendered (it is skipped)."""


@dataclass(frozen=True)
class Candidate:
    """A piece whose file states its key."""

    collection: str
    path: Path
    number: int | None      # ABC tune number (X:), None for one-piece files
    piece_id: str
    title: str
    key: Key
    key_source: str


# --- reading the key from the file ---------------------------------------------------------

_ABC_TONIC = re.compile(r"([A-Ga-g])([#b]?)([A-Za-z]*)")
_ABC_MAJOR = {"", "maj", "major", "ion", "ionian"}
_ABC_MINOR = {"m", "min", "minor", "aeo", "aeolian"}
_ABC_CLEFS = {"treble", "bass", "alto", "tenor", "perc", "none", "bass3", "alto1", "alto2"}


def abc_key(field: str) -> Key | None:
    """Key of an ABC ``K:`` field value, or None when modal, ambiguous or absent.

    ``ion``/``aeo`` (ionian/aeolian) are read as major/minor; an upper-case
    bare ``M`` (``K:EM``) is ambiguous and rejected; clef words and
    ``name=value`` settings after the key are ignored.
    """
    tokens = field.split("%")[0].split()
    if not tokens:
        return None
    m = _ABC_TONIC.fullmatch(tokens[0])
    if not m:
        return None
    letter, accidental, mode = m.groups()
    if not mode and len(tokens) > 1 and "=" not in tokens[1] and tokens[1].lower() not in _ABC_CLEFS:
        mode = tokens[1]
    if mode == "M":
        return None
    mode_l = mode.lower()
    if mode_l in _ABC_MAJOR:
        name = "major"
    elif mode_l in _ABC_MINOR:
        name = "minor"
    else:
        return None
    return parse_key(f"{letter.upper()}{accidental} {name}")


def abc_tunes(text: str) -> list[tuple[int, str, str]]:
    """``(X number, title, K: value)`` of every tune in an ABC file (K: ends the header)."""
    tunes = []
    number, title, key_field = None, "", None
    for line in text.splitlines():
        if line.startswith("X:"):
            if number is not None and key_field is not None:
                tunes.append((number, title, key_field))
            digits = re.match(r"X:\s*(\d+)", line)
            number = int(digits.group(1)) if digits else None
            title, key_field = "", None
        elif number is not None and key_field is None:
            if line.startswith("T:") and not title:
                title = line[2:].strip()
            elif line.startswith("K:"):
                key_field = line[2:].strip()
    if number is not None and key_field is not None:
        tunes.append((number, title, key_field))
    return tunes


_KERN_KEY = re.compile(r"^\*([A-Ga-g])([#-]?):(\w*)$")


def kern_key(text: str) -> Key | None:
    """Key of the first Humdrum key token (``*G:`` major, ``*e-:`` minor); None when modal/absent."""
    for line in text.splitlines():
        if line.startswith("**") or not line.startswith("*"):
            continue
        for token in line.split("\t"):
            m = _KERN_KEY.match(token.strip())
            if m:
                letter, accidental, mode = m.groups()
                if mode and mode.lower() not in ("ion", "aeo"):
                    return None
                name = "major" if letter.isupper() else "minor"
                return parse_key(f"{letter.upper()}{'b' if accidental == '-' else accidental} {name}")
    return None


def musicxml_key(text: str) -> Key | None:
    """Key of the first ``<key>`` with ``<fifths>`` and ``<mode>major|minor</mode>``."""
    block = re.search(r"<key[^>]*>(.*?)</key>", text, re.S)
    if not block:
        return None
    fifths = re.search(r"<fifths>\s*(-?\d+)\s*</fifths>", block.group(1))
    mode = re.search(r"<mode>\s*(\w+)\s*</mode>", block.group(1))
    if not fifths or not mode or mode.group(1).lower() not in ("major", "minor"):
        return None
    major = Key((7 * int(fifths.group(1))) % 12, "major")
    return major if mode.group(1).lower() == "major" else major.relative


def _read_musicxml(path: Path) -> str:
    if path.suffix == ".mxl":
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith((".xml", ".musicxml")) and not n.startswith("META-INF")]
            return z.read(names[0]).decode("utf-8", "replace") if names else ""
    return path.read_text(encoding="utf-8", errors="replace")


def find_candidates(roots: list[Path], formats: set[str]) -> list[Candidate]:
    """Pieces under ``roots`` (each a collection folder) whose file states a major/minor key."""
    out: list[Candidate] = []
    for root in roots:
        collection = root.name
        for path in sorted(root.rglob("*")):
            suffix = path.suffix.lower()
            if suffix == ".abc" and "abc" in formats:
                text = path.read_text(encoding="utf-8", errors="replace")
                for number, title, field in abc_tunes(text):
                    key = abc_key(field)
                    if key is not None:
                        out.append(Candidate(collection, path, number, f"{collection}__{path.stem}__X{number}",
                                             title, key, "abc K: field"))
            elif suffix == ".krn" and "krn" in formats:
                key = kern_key(path.read_text(encoding="utf-8", errors="replace"))
                if key is not None:
                    out.append(Candidate(collection, path, None, f"{collection}__{path.stem}", path.stem,
                                         key, "kern key token"))
            elif suffix in (".mxl", ".xml", ".musicxml") and "xml" in formats:
                key = musicxml_key(_read_musicxml(path))
                if key is not None:
                    out.append(Candidate(collection, path, None, f"{collection}__{path.stem}", path.stem,
                                         key, "musicxml <key><mode>"))
    return out


def excluded_ids(manifests: list[Path]) -> set[str]:
    """``piece_id`` values of the given manifests."""
    ids: set[str] = set()
    for manifest in manifests:
        with open(manifest, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if row.get("piece_id"):
                    ids.add(row["piece_id"].strip())
    return ids


# --- rendering ----------------------------------------------------------------------------

def _shift(source: Key, target: Key) -> int:
    """Semitones in −6…+5 taking ``source``'s tonic to ``target``'s."""
    k = (target.tonic - source.tonic) % 12
    return k - 12 if k > 5 else k


def load_score(candidate: Candidate):
    """The music21 score of a candidate."""
    from music21 import converter

    if candidate.number is not None:
        return converter.parse(candidate.path, number=candidate.number)
    return converter.parse(candidate.path)


def prepare_score(score, semitones: int, qpm: float, program: int):
    """Transpose, one constant tempo (quarter notes per minute), one GM program for every part."""
    from music21 import instrument, stream, tempo

    if isinstance(score, stream.Opus):
        score = score.scores[0]
    if semitones:
        score = score.transpose(semitones)
    for mark in list(score.recurse().getElementsByClass(tempo.TempoIndication)):
        mark.activeSite.remove(mark)
    parts = list(score.parts) or [score]
    for part in parts:
        for inst in list(part.recurse().getElementsByClass(instrument.Instrument)):
            inst.activeSite.remove(inst)
        gm = instrument.instrumentFromMidiProgram(program)
        gm.midiProgram = program
        part.insert(0, gm)
        part.insert(0, tempo.MetronomeMark(number=qpm, referent=1.0))
    return score


def beat_times(score, qpm: float, limit_s: float) -> tuple[np.ndarray, str]:
    """Beat times (s) from the first part's measures and time signatures, and the first time signature."""
    from music21 import meter

    part = score.parts[0] if score.parts else score
    seconds_per_quarter = 60.0 / qpm
    times: list[float] = []
    current = None
    first_ts = ""
    measures = list(part.getElementsByClass("Measure"))
    if not measures:
        raise RenderError("score has no measures (cannot place beats)")
    for measure in measures:
        ts = measure.timeSignature or measure.getContextByClass(meter.TimeSignature) or current
        if ts is None:
            ts = meter.TimeSignature("4/4")
        current = ts
        first_ts = first_ts or ts.ratioString
        beat_q = float(ts.beatDuration.quarterLength)
        bar_q = float(ts.barDuration.quarterLength)
        padding = float(measure.paddingLeft or 0.0)
        start_q = float(measure.offset) - padding
        end_q = float(measure.offset) + float(measure.duration.quarterLength)
        for i in range(max(1, int(round(bar_q / beat_q)))):
            q = start_q + i * beat_q
            if float(measure.offset) - 1e-6 <= q < end_q - 1e-6:
                t = q * seconds_per_quarter
                if t < limit_s:
                    times.append(t)
    return np.array(sorted(set(np.round(times, 6)))), first_ts


def end_with_sound_off(midi_path: Path) -> None:
    """Rewrite a Standard MIDI File so every track ends with *all notes off* and *all sound
    off* (controllers 123 and 120) on all 16 channels, at its end-of-track time.

    FluidSynth's file renderer stops only when no voice sounds. music21's MIDI export
    sometimes writes a note-off before the note-on of the same pitch and tick, so a
    voice is held to the end; on a looping patch (organ, strings) it never decays and
    the render never ends (seen: 6 of 56 render24 pieces skipped after two 60 s timeouts).
    Done on the bytes (chunk by chunk), so meta events no parser accepts (music21 writes
    key signatures of 8 sharps) pass through unchanged.
    """
    data = midi_path.read_bytes()
    if data[:4] != b"MThd":
        raise RenderError(f"{midi_path.name}: not a Standard MIDI File")
    silence = b"".join(bytes([0xB0 | channel, control, 0, 0]) for channel in range(16) for control in (123, 120))
    out, pos = [], 0
    while pos + 8 <= len(data):
        kind, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "big")
        body = data[pos + 8:pos + 8 + size]
        if kind == b"MTrk" and body.endswith(b"\xff\x2f\x00"):
            # the end-of-track's delta now precedes the first controller; each event after
            # it (and the end of track) follows with delta 0
            body = body[:-3] + silence + b"\xff\x2f\x00"
        out.append(kind + len(body).to_bytes(4, "big") + body)
        pos += 8 + size
    midi_path.write_bytes(b"".join(out) + data[pos:])


def synthesize(midi_path: Path, wav_path: Path, soundfont: Path, sr: int, timeout_s: float = 60.0,
               attempts: int = 2) -> None:
    """FluidSynth: MIDI → WAV at ``sr`` (the MIDI file is first ended by :func:`end_with_sound_off`).

    A run that exceeds ``timeout_s`` is retried once: FluidSynth occasionally hung on a
    heavily loaded machine on files that rendered in 2 s when retried.
    """
    end_with_sound_off(midi_path)
    cmd = ["fluidsynth", "-ni", "-q", "-g", "0.7", "-r", str(sr), "-F", str(wav_path), str(soundfont), str(midi_path)]
    for attempt in range(attempts):
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
            return
        except subprocess.CalledProcessError as exc:
            raise RenderError(f"fluidsynth failed: {exc.stderr.decode(errors='replace')[-300:]}") from exc
        except subprocess.TimeoutExpired:
            print(f"fluidsynth timed out on {midi_path.name} (attempt {attempt + 1})", file=sys.stderr)
    raise RenderError(f"fluidsynth did not finish within {timeout_s:.0f} s ({attempts} attempts)")


def truncate_score(score, quarters: float):
    """Drop measures starting after ``quarters`` (renders only what the clip keeps)."""
    for part in list(score.parts) or [score]:
        for measure in list(part.getElementsByClass("Measure")):
            if float(measure.offset) > quarters:
                part.remove(measure)
    return score


def render_piece(candidate: Candidate, semitones: int, qpm: float, program: int, out_dir: Path,
                 soundfont: Path, seconds: float, min_seconds: float, sr: int, fmt: str) -> dict:
    """Render one clip; returns its manifest row. Raises RenderError when unusable."""
    import soundfile as sf

    try:
        score = prepare_score(load_score(candidate), semitones, qpm, program)
        score = truncate_score(score, (seconds + 2.0) * qpm / 60.0)
    except RenderError:
        raise
    except Exception as exc:  # music21 raises many kinds of errors on odd files
        raise RenderError(f"music21 could not read/transpose it: {type(exc).__name__}: {exc}") from exc
    key = candidate.key.transpose(semitones)
    suffix = f"_t{semitones:+d}" if semitones else ""
    clip_id = f"{candidate.piece_id}{suffix}"
    with tempfile.TemporaryDirectory() as tmp:
        midi = Path(tmp) / "piece.mid"
        wav = Path(tmp) / "piece.wav"
        try:
            score.write("midi", fp=str(midi))
        except Exception as exc:
            raise RenderError(f"MIDI export failed: {type(exc).__name__}: {exc}") from exc
        synthesize(midi, wav, soundfont, sr)
        audio, rate = sf.read(wav, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)[: int(seconds * rate)]
    if len(audio) < min_seconds * rate:
        raise RenderError(f"only {len(audio) / rate:.1f} s long (need {min_seconds} s)")
    peak = float(np.abs(audio).max())
    if peak <= 1e-4:
        raise RenderError("rendered audio is silent")
    audio = 0.9 * audio / peak
    duration = len(audio) / rate
    beats, ts = beat_times(score, qpm, duration)
    if len(beats) < 4:
        raise RenderError("fewer than 4 beats")
    audio_rel = Path("audio") / f"{clip_id}.{fmt}"
    beats_rel = Path("beats") / f"{clip_id}.beats"
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    (out_dir / "beats").mkdir(parents=True, exist_ok=True)
    sf.write(out_dir / audio_rel, audio, rate, format={"ogg": "OGG", "flac": "FLAC", "wav": "WAV"}[fmt],
             **({"subtype": "VORBIS"} if fmt == "ogg" else {}))
    (out_dir / beats_rel).write_text(format_beat_annotation(beats))
    return {"path": str(audio_rel), "key": str(key), "beats_path": str(beats_rel),
            "collection": candidate.collection, "piece_id": clip_id, "title": candidate.title,
            "key_source": candidate.key_source, "source_key": str(candidate.key), "transpose": semitones,
            "program": f"{program}:{GM_PROGRAMS.get(program, 'GM program')}", "tempo_bpm": round(qpm, 1),
            "time_signature": ts, "duration_s": round(duration, 3)}


# --- planning -----------------------------------------------------------------------------

def plan_targets(count: int, transpose: str, rng: random.Random) -> list[Key] | None:
    """Target keys for ``--transpose even`` (``count / 24`` per key, shuffled); None otherwise."""
    if transpose != "even":
        return None
    if count % 24:
        raise SystemExit("--count must be a multiple of 24 with --transpose even")
    targets = [Key(t, m) for m in ("major", "minor") for t in range(12) for _ in range(count // 24)]
    rng.shuffle(targets)
    return targets


def jobs_for(candidates: list[Candidate], targets: list[Key] | None, transpose: str):
    """Yield ``(candidate, semitones, target)``; ``send(True)`` after a success.

    With targets, each target takes the next unused source of its mode (the
    shift moves its tonic onto the target's) until one renders.
    """
    if targets is None:
        shift = 0 if transpose == "none" else int(transpose)
        for c in candidates:
            yield c, shift, None
        return
    pools = {"major": [c for c in candidates if c.key.is_major],
             "minor": [c for c in candidates if not c.key.is_major]}
    for target in targets:
        pool = pools[target.mode]
        while pool:
            candidate = pool.pop()
            ok = yield candidate, _shift(candidate.key, target), target
            if ok:
                yield None  # acknowledge send()
                break
        else:
            print(f"no source left for {target}", file=sys.stderr)


def parse_tempo(text: str) -> tuple[float, float]:
    if ":" in text:
        lo, hi = (float(v) for v in text.split(":", 1))
    else:
        lo = hi = float(text)
    if not 20 <= lo <= hi <= 400:
        raise SystemExit(f"--tempo must be BPM or LOW:HIGH within 20..400, got {text}")
    return lo, hi


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="output folder (labels.csv, audio/, beats/)")
    ap.add_argument("--source", type=Path, action="append", default=None,
                    help="collection folder(s) of .abc/.krn/MusicXML (default: music21 corpus collections)")
    ap.add_argument("--collections", default=",".join(DEFAULT_COLLECTIONS),
                    help="music21 corpus collections when --source is not given")
    ap.add_argument("--formats", default="abc,krn,xml", help="file kinds to use: abc, krn, xml")
    ap.add_argument("--count", type=int, default=48, help="number of clips (default 48)")
    ap.add_argument("--transpose", default="even", help="even | none | SEMITONES (default even)")
    ap.add_argument("--tempo", default="90:140", help="quarter notes per minute: BPM or LOW:HIGH (random)")
    ap.add_argument("--program", default="random",
                    help="GM program number(s), comma-separated, or 'random' (from a melodic set)")
    ap.add_argument("--seconds", type=float, default=30.0, help="clip length: first N seconds (default 30)")
    ap.add_argument("--min-seconds", type=float, default=20.0, help="skip pieces shorter than this")
    ap.add_argument("--soundfont", type=Path, default=None, help="GM .sf2 (default: first Debian one found)")
    ap.add_argument("--exclude", type=Path, action="append", default=[],
                    help="manifest(s) with a piece_id column whose pieces are not used (e.g. dev-synth labels.csv)")
    ap.add_argument("--sr", type=int, default=22050, help="sample rate (default 22050)")
    ap.add_argument("--audio-format", choices=("ogg", "flac", "wav"), default="ogg")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    if shutil.which("fluidsynth") is None:
        raise SystemExit("fluidsynth not found: apt-get install fluidsynth fluid-soundfont-gm")
    soundfont = args.soundfont or next((Path(p) for p in SOUNDFONTS if Path(p).is_file()), None)
    if soundfont is None or not soundfont.is_file():
        raise SystemExit("no General MIDI soundfont found: apt-get install fluid-soundfont-gm (or --soundfont)")
    if args.source:
        roots = args.source
    else:
        try:
            import music21
        except ImportError:
            raise SystemExit("music21 is needed: pip install music21") from None
        corpus = Path(music21.__file__).parent / "corpus"
        roots = [corpus / c.strip() for c in args.collections.split(",") if c.strip()]
    missing = [r for r in roots if not r.is_dir()]
    if missing:
        raise SystemExit(f"source folder(s) not found: {', '.join(map(str, missing))}")
    programs = list(GM_PROGRAMS) if args.program == "random" else [int(p) for p in args.program.split(",")]
    lo, hi = parse_tempo(args.tempo)
    rng = random.Random(args.seed)

    t0 = time.time()
    candidates = find_candidates(roots, {f.strip() for f in args.formats.split(",")})
    excluded = excluded_ids(args.exclude)
    candidates = [c for c in candidates if c.piece_id not in excluded]
    print(f"{len(candidates)} candidate pieces with a stated major/minor key "
          f"({sum(c.key.is_major for c in candidates)} major), {len(excluded)} excluded ids "
          f"[{time.time() - t0:.1f} s]", file=sys.stderr)
    rng.shuffle(candidates)
    targets = plan_targets(args.count, args.transpose, rng)
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    failures = 0
    jobs = jobs_for(candidates, targets, args.transpose)
    for candidate, semitones, _target in jobs:
        if len(rows) >= args.count:
            break
        qpm = rng.uniform(lo, hi) if hi > lo else lo
        program = rng.choice(programs)
        try:
            row = render_piece(candidate, semitones, qpm, program, args.out, soundfont, args.seconds,
                               args.min_seconds, args.sr, args.audio_format)
        except RenderError as exc:
            failures += 1
            print(f"skip {candidate.piece_id}: {exc}", file=sys.stderr)
            continue
        if targets is not None:
            jobs.send(True)
        rows.append(row)
        print(f"[{len(rows)}/{args.count}] {row['piece_id']} {row['source_key']} -> {row['key']} "
              f"({row['program']}, {row['tempo_bpm']} qpm) [{time.time() - t0:.0f} s]", file=sys.stderr)
    rows.sort(key=lambda r: r["piece_id"])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["path", "key"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (args.out / "labels.csv").write_text(buffer.getvalue(), encoding="utf-8")
    print(f"wrote {len(rows)} clips ({failures} pieces skipped) to {args.out / 'labels.csv'} "
          f"in {time.time() - t0:.0f} s", file=sys.stderr)
    return 0 if len(rows) == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
