"""Render LMMS demo projects into a beat-annotated real-music evaluation set.

An LMMS project states its tempo exactly (``<head bpm=...>``) and its songs
start on bar 1 at t = 0, so a render of a project without tempo automation
has a known beat grid: beat ``k`` at ``k * 60 / bpm`` seconds (for a time
signature ``n/4``; beat-in-bar ``k % n + 1``). This script

1. finds ``.mmpz`` (4-byte big-endian length + zlib XML) and ``.mmp`` (XML)
   projects under the given folders (default: the demo folder of Debian's
   ``lmms-common`` package);
2. reads tempo and time signature and skips projects whose tempo is automated
   or controller-driven, or whose time signature is not ``n/4``;
3. drops every song-level clip that starts after the first ``--seconds`` (so
   LMMS renders little more than what is kept), renders the rest headless with
   ``lmms render``, mixes to mono and keeps the first ``--seconds``; trailing
   silence (song shorter than that) is cut off; near-silent renders, renders
   shorter than ``--min-seconds`` and renders with a silent intro longer than
   ``--max-intro`` are dropped;
4. writes ``OUT/audio/<project>.flac``, ``OUT/beats/<project>.beats``
   (``time<TAB>beat-in-bar`` lines, beats inside the audio only) and
   ``OUT/labels.csv`` (path, beats_path, bpm, time_signature, project,
   source, duration_s), the manifest ``musicssl evaluate-beats --dataset csv``
   reads;
5. checks each grid against the audio without listening, with librosa's onset
   strength: its mean at the annotated beats over that at the half-beat and at
   the quarter-beat offsets (``on/half``, ``on/qtr``; above 1 when the beats
   carry the strongest onsets; off-beat-heavy music has ``on/half`` near or
   below 1) and the grid shift within ±max(50 ms, 1/12 beat) that maximises it (``lag``;
   a few tens of ms late, not 0, because onset detectors peak after a note
   starts). A clip is flagged when ``on/qtr`` is low or ``lag`` is outside
   ``LAG_OK_MS``. The renders themselves start sounding
   at sample 0, so no render latency is compensated.

Needs Debian's ``lmms`` (``apt-get install lmms``). Example::

    python scripts/render_lmms.py --out work-data/lmms-beats \\
        /usr/share/lmms/projects/demos /usr/share/lmms/projects/shorties
    musicssl evaluate-beats --dataset csv work-data/lmms-beats/labels.csv \\
        --tracker zerons --tracker librosa
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from musicssl.evaluation.beat_annotations import format_beat_annotation

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DEMO_DIR = Path("/usr/share/lmms/projects/demos")
#: LMMS ticks in one whole note (a 4/4 bar); a 1/d beat lasts ``TICKS_PER_WHOLE / d`` ticks.
TICKS_PER_WHOLE = 192
#: Element names of clips (LMMS "track content objects") placed on the song timeline.
SONG_CLIP_TAGS = ("pattern", "bbtco", "sampletco", "automationpattern")
SILENCE_DBFS = -50.0     # a frame quieter than this (RMS, dB re full scale) is silent
FRAME_S = 0.05           # frame length for the silence measurements
ONSET_SR = 22050
ONSET_HOP = 256
#: onset-strength frames looked at around a time (-1…+3 frames, -12…+35 ms: onset
#: detectors peak a little after a note starts, later for soft attacks)
ONSET_SLACK = (-1, 3)
#: a kept clip whose best grid shift falls outside this range (ms) is flagged
LAG_OK_MS = (-25.0, 60.0)


class ProjectError(Exception):
    """A project is unreadable or unusable (it is skipped with this reason)."""


@dataclass(frozen=True)
class ProjectInfo:
    """What the beat grid of a project depends on."""

    name: str
    bpm: float
    numerator: int
    denominator: int
    tempo_automation: str | None   # why the tempo is not constant, None when it is

    @property
    def time_signature(self) -> str:
        return f"{self.numerator}/{self.denominator}"

    @property
    def seconds_per_beat(self) -> float:
        return 60.0 / self.bpm

    def skip_reason(self) -> str | None:
        """Why this project cannot give an exact constant-tempo grid, None if it can."""
        if self.tempo_automation:
            return self.tempo_automation
        if self.denominator != 4 or self.numerator < 1:
            return f"time signature {self.time_signature} is not n/4"
        return None


# ---------------------------------------------------------------------------
# project files


def decode_project_bytes(data: bytes, compressed: bool, source: str = "<bytes>") -> ET.Element:
    """The XML root of a project file's bytes (``compressed``: the ``.mmpz`` layout)."""
    if compressed:
        if len(data) < 4:
            raise ProjectError(f"{source}: too short for an .mmpz file")
        expected = struct.unpack(">I", data[:4])[0]
        try:
            data = zlib.decompress(data[4:])
        except zlib.error as exc:
            raise ProjectError(f"{source}: not zlib data after the length prefix ({exc})") from None
        if len(data) != expected:
            raise ProjectError(f"{source}: length prefix says {expected} bytes, got {len(data)}")
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise ProjectError(f"{source}: invalid XML ({exc})") from None


def read_project(path: Path) -> ET.Element:
    """The XML root of an ``.mmp`` or ``.mmpz`` file."""
    return decode_project_bytes(path.read_bytes(), path.suffix.lower() == ".mmpz", str(path))


def _number(text: str | None, what: str) -> float:
    try:
        value = float(text) if text is not None else float("nan")
    except ValueError:
        value = float("nan")
    if not np.isfinite(value) or value <= 0:
        raise ProjectError(f"{what} is {text!r}, expected a positive number")
    return value


def _head_model(head: ET.Element, name: str) -> tuple[str | None, ET.Element | None]:
    """A ``<head>`` model's value and, when it is saved as a child element
    (LMMS does that once the model has an id, i.e. is automated or controlled),
    that element."""
    element = head.find(name)
    if element is not None:
        return element.get("value"), element
    return head.get(name), None


def _song_automation_patterns(root: ET.Element) -> list[ET.Element]:
    """Automation patterns on the song timeline: in song-level tracks and the
    song's global automation track (``<song><track type="6">``)."""
    song = root.find("song")
    if song is None:
        return []
    patterns = []
    for container in [song.find("trackcontainer"), song]:
        if container is None:
            continue
        for track in container.findall("track"):
            patterns.extend(track.findall("automationpattern"))
    return patterns


def tempo_automation_reason(root: ET.Element, bpm: float) -> str | None:
    """Why the project's tempo can change during the song, or None.

    LMMS 1.2 saves an automated or controller-driven tempo as ``<head><bpm
    value=... id=...>`` (with a ``<connection>`` child for a controller) and the
    automation pattern that drives it names that id in an ``<object id=...>``
    child. Older projects put a song-global "Tempo" pattern with objects in the
    global automation track. A pattern with no ``<object>`` drives nothing (the
    demo projects carry such an empty "Tempo" pattern) and is ignored; a
    connected pattern whose points all equal ``bpm`` does not change the tempo.
    """
    head = root.find("head")
    _, bpm_element = _head_model(head, "bpm") if head is not None else (None, None)
    bpm_id = bpm_element.get("id") if bpm_element is not None else None
    if bpm_element is not None and bpm_element.find("connection") is not None:
        return "tempo driven by a controller"
    values: list[float] = []
    for pattern in _song_automation_patterns(root):
        targets = {o.get("id") for o in pattern.findall("object")}
        if not targets:
            continue
        global_tempo = pattern.get("name", "").strip().lower() == "tempo" and \
            pattern in _global_track_patterns(root)
        if (bpm_id is not None and bpm_id in targets) or global_tempo:
            values.extend(float(t.get("value", "nan")) for t in pattern.findall("time"))
    changing = [v for v in values if not np.isclose(v, bpm)]
    if changing:
        low, high = min(values + [bpm]), max(values + [bpm])
        return f"tempo automation ({low:g}-{high:g} BPM)"
    return None


def _global_track_patterns(root: ET.Element) -> list[ET.Element]:
    song = root.find("song")
    if song is None:
        return []
    return [p for track in song.findall("track") if track.get("type") == "6"
            for p in track.findall("automationpattern")]


def project_info(root: ET.Element, name: str) -> ProjectInfo:
    """Tempo, time signature and tempo-automation status of a project root."""
    head = root.find("head")
    if head is None:
        raise ProjectError(f"{name}: no <head> element (not an LMMS project?)")
    bpm_text, _ = _head_model(head, "bpm")
    bpm = _number(bpm_text, f"{name}: tempo (head bpm)")
    num_text, _ = _head_model(head, "timesig_numerator")
    den_text, _ = _head_model(head, "timesig_denominator")
    numerator = _number(num_text or "4", f"{name}: timesig_numerator")
    denominator = _number(den_text or "4", f"{name}: timesig_denominator")
    if not (numerator.is_integer() and denominator.is_integer()):
        raise ProjectError(f"{name}: time signature {num_text}/{den_text} is not whole numbers")
    return ProjectInfo(name, bpm, int(numerator), int(denominator),
                       tempo_automation_reason(root, bpm))


def truncate_song(root: ET.Element, end_tick: int) -> int:
    """Remove song-timeline clips that start at or after ``end_tick``, in place;
    returns how many were removed. Clips inside beat/bassline tracks keep their
    own (pattern-relative) positions and are left alone."""
    song = root.find("song")
    if song is None:
        return 0
    removed = 0
    for container in [song.find("trackcontainer"), song]:
        if container is None:
            continue
        for track in container.findall("track"):
            for clip in [c for c in track if c.tag in SONG_CLIP_TAGS]:
                if int(float(clip.get("pos", "0"))) >= end_tick:
                    track.remove(clip)
                    removed += 1
    return removed


def beat_grid(bpm: float, numerator: int, duration: float) -> tuple[np.ndarray, np.ndarray]:
    """Beat times ``k * 60 / bpm`` in ``[0, duration)`` (s) and their beat-in-bar numbers."""
    period = 60.0 / bpm
    count = int(np.ceil(duration / period - 1e-9))
    times = np.arange(count) * period
    times = times[times < duration]
    return times, np.arange(len(times)) % numerator + 1


def find_projects(folders: list[Path]) -> list[Path]:
    """``.mmp`` / ``.mmpz`` files under the folders, sorted, without duplicates."""
    found: dict[Path, None] = {}
    for folder in folders:
        if not folder.is_dir():
            raise SystemExit(f"error: project folder {folder} does not exist")
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix.lower() in (".mmp", ".mmpz"):
                found[path.resolve()] = None
    return list(found)


def default_demo_folder() -> Path:
    """The demo folder installed by Debian's lmms-common package."""
    try:
        listing = subprocess.run(["dpkg", "-L", "lmms-common"], capture_output=True,
                                 text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return DEFAULT_DEMO_DIR
    demo_dirs = [Path(p) for p in listing if p.rstrip("/").endswith("/projects/demos")]
    return demo_dirs[0] if demo_dirs else DEFAULT_DEMO_DIR


def package_version(path: Path) -> str:
    """``package version`` of the Debian package that owns ``path``, or "unknown"."""
    try:
        owner = subprocess.run(["dpkg", "-S", str(path)], capture_output=True, text=True,
                               check=True).stdout.split(":", 1)[0].strip()
        version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", owner], capture_output=True,
                                 text=True, check=True).stdout.strip()
        return f"{owner} {version}"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# ---------------------------------------------------------------------------
# rendering and audio checks


def render(root: ET.Element, out_wav: Path, lmms: str, timeout: float) -> None:
    """Render a project (XML root) to a WAV file with the lmms CLI."""
    with tempfile.TemporaryDirectory(prefix="render_lmms_") as tmp:
        project = Path(tmp) / "project.mmp"
        ET.ElementTree(root).write(project, encoding="utf-8", xml_declaration=True)
        env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
        cmd = [lmms, "--allowroot", "render", str(project), "--format", "wav",
               "--oversampling", "1", "--output", str(out_wav)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ProjectError(f"render took longer than {timeout:g} s") from None
        if done.returncode != 0 or not out_wav.is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise ProjectError(f"lmms render failed (exit {done.returncode}): {' | '.join(tail)}")


def frame_dbfs(y: np.ndarray, sr: int) -> np.ndarray:
    """RMS level (dB re full scale) of consecutive ``FRAME_S`` frames of mono ``y``."""
    size = max(1, int(FRAME_S * sr))
    n = len(y) // size
    frames = y[: n * size].reshape(n, size)
    return 20 * np.log10(np.sqrt(np.mean(frames**2, axis=1)) + 1e-12)


def sound_span(y: np.ndarray, sr: int) -> tuple[float, float] | None:
    """(first, last) time in seconds with sound above ``SILENCE_DBFS``; None if none."""
    loud = np.flatnonzero(frame_dbfs(y, sr) > SILENCE_DBFS)
    if len(loud) == 0:
        return None
    return loud[0] * FRAME_S, (loud[-1] + 1) * FRAME_S


def grid_check(y: np.ndarray, sr: int, beats: np.ndarray, period: float) -> GridCheck:
    """Compare librosa onset strength on the beat grid with that off it (see module docstring)."""
    import librosa

    y22 = librosa.resample(y, orig_sr=sr, target_sr=ONSET_SR) if sr != ONSET_SR else y
    env = librosa.onset.onset_strength(y=y22, sr=ONSET_SR, hop_length=ONSET_HOP)
    fps = ONSET_SR / ONSET_HOP

    def strength_at(times: np.ndarray) -> float:
        frames = np.round(times * fps).astype(int)
        frames = frames[(frames >= -ONSET_SLACK[0]) & (frames < len(env) - ONSET_SLACK[1])]
        window = np.stack([env[frames + d] for d in range(ONSET_SLACK[0], ONSET_SLACK[1] + 1)])
        return float(np.mean(window.max(axis=0)))

    on = strength_at(beats)
    half = strength_at(beats + period / 2)
    quarter = (strength_at(beats + period / 4) + strength_at(beats + 3 * period / 4)) / 2
    # a third of a sixteenth note (at least 50 ms): not as far as swung or
    # anticipated notes just before the beat
    reach = min(0.150, max(0.050, period / 12))
    lags = np.arange(-reach, reach + 1e-9, 1 / fps)
    lag = float(lags[int(np.argmax([strength_at(beats + lag) for lag in lags]))])
    return GridCheck(on / max(half, 1e-9), on / max(quarter, 1e-9), 1000 * lag)


@dataclass(frozen=True)
class GridCheck:
    """How well the onsets of a render sit on its annotated beat grid."""

    half_ratio: float     # onset strength at beats / at half-beat offsets
    quarter_ratio: float  # onset strength at beats / at quarter-beat offsets
    lag_ms: float         # grid shift (within ±max(50 ms, beat/12)) with the strongest onsets

    def looks_off(self, min_ratio: float) -> bool:
        """Off when sixteenth-note offsets carry as much onset strength as the beats
        or the onsets are not just after the beats. (Strong half-beats alone are
        off-beat-heavy music, e.g. open hi-hats on the "and", not a wrong grid.)"""
        return self.quarter_ratio < min_ratio or not LAG_OK_MS[0] <= self.lag_ms <= LAG_OK_MS[1]


@dataclass
class Outcome:
    project: str
    bpm: float | None
    time_signature: str
    duration: float | None
    status: str           # "kept" or "skipped: reason"
    check: GridCheck | None = None


def process(path: Path, args, lmms: str, out: Path, source: str) -> tuple[Outcome, dict | None]:
    """Render and annotate one project; the outcome and its manifest row (None if skipped)."""
    import soundfile as sf

    name = path.stem
    try:
        root = read_project(path)
        info = project_info(root, name)
    except ProjectError as exc:
        return Outcome(name, None, "?", None, f"skipped: {exc}"), None
    skip = info.skip_reason()
    if skip:
        return Outcome(name, info.bpm, info.time_signature, None, f"skipped: {skip}"), None

    ticks_per_second = info.bpm / 60 * TICKS_PER_WHOLE / info.denominator
    truncate_song(root, int(np.ceil((args.seconds + 1) * ticks_per_second)))
    wav = out / "tmp_render.wav"
    try:
        render(root, wav, lmms, args.timeout)
        y, sr = sf.read(wav, dtype="float32", always_2d=True)
    except (ProjectError, RuntimeError) as exc:
        return Outcome(name, info.bpm, info.time_signature, None, f"skipped: {exc}"), None
    finally:
        wav.unlink(missing_ok=True)
    y = y.mean(axis=1)[: int(args.seconds * sr)]
    span = sound_span(y, sr)
    if span is None:
        return Outcome(name, info.bpm, info.time_signature, len(y) / sr,
                       "skipped: near-silent render"), None
    start, end = span
    y = y[: int(round(end * sr))]
    duration = len(y) / sr
    result = Outcome(name, info.bpm, info.time_signature, duration, "kept")
    if start > args.max_intro:
        result.status = f"skipped: silent intro of {start:.1f} s"
        return result, None
    if duration < args.min_seconds:
        result.status = f"skipped: only {duration:.1f} s of sound"
        return result, None

    times, numbers = beat_grid(info.bpm, info.numerator, duration)
    result.check = grid_check(y, sr, times, info.seconds_per_beat)
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    audio_rel, beats_rel = Path("audio") / f"{stem}.flac", Path("beats") / f"{stem}.beats"
    sf.write(out / audio_rel, y, sr, subtype="PCM_16")
    (out / beats_rel).write_text(format_beat_annotation(times, numbers, decimals=6))
    row = {"path": str(audio_rel), "beats_path": str(beats_rel), "bpm": f"{info.bpm:g}",
           "time_signature": info.time_signature, "project": str(path), "source": source,
           "duration_s": f"{duration:.3f}",
           "grid_half_ratio": f"{result.check.half_ratio:.3f}",
           "grid_quarter_ratio": f"{result.check.quarter_ratio:.3f}",
           "grid_lag_ms": f"{result.check.lag_ms:.1f}"}
    return result, row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="*", type=Path,
                   help="folders searched for .mmp/.mmpz projects (default: lmms-common's demos)")
    p.add_argument("--out", type=Path, default=REPO / "work-data" / "lmms-beats")
    p.add_argument("--seconds", type=float, default=60.0, help="keep this much of each render")
    p.add_argument("--min-seconds", type=float, default=20.0,
                   help="drop renders with less sound than this")
    p.add_argument("--max-intro", type=float, default=5.0,
                   help="drop renders whose first sound comes later than this (s)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per render")
    p.add_argument("--lmms", default="lmms", help="lmms executable")
    p.add_argument("--min-ratio", type=float, default=1.2,
                   help="flag kept clips whose onset ratio (beats / quarter-beat offsets) is below this")
    args = p.parse_args(argv)

    lmms = shutil.which(args.lmms)
    if lmms is None:
        print(f"error: the lmms executable ({args.lmms}) was not found; install Debian's lmms "
              "package (apt-get install lmms) or pass --lmms PATH", file=sys.stderr)
        return 2
    folders = args.folders or [default_demo_folder()]
    projects = find_projects(folders)
    if not projects:
        print(f"error: no .mmp/.mmpz projects under {', '.join(map(str, folders))}", file=sys.stderr)
        return 2
    out = args.out
    (out / "audio").mkdir(parents=True, exist_ok=True)
    (out / "beats").mkdir(parents=True, exist_ok=True)

    outcomes, rows = [], []
    for path in projects:
        started = time.perf_counter()
        outcome, row = process(path, args, lmms, out, package_version(path))
        outcomes.append(outcome)
        if row:
            rows.append(row)
        print(f"{outcome.project}: {outcome.status} ({time.perf_counter() - started:.1f} s)",
              file=sys.stderr, flush=True)

    with open(out / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["path", "beats_path"],
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)

    print(f"{'project':42s} {'bpm':>5s} {'sig':>4s} {'dur s':>5s} {'on/half':>7s} "
          f"{'on/qtr':>6s} {'lag ms':>6s}  status")
    for o in outcomes:
        c = o.check
        flag = "  <- grid looks off" if c is not None and c.looks_off(args.min_ratio) else ""
        print(f"{o.project[:42]:42s} {o.bpm or 0:5g} {o.time_signature:>4s} "
              f"{'' if o.duration is None else f'{o.duration:.1f}':>5s} "
              f"{'' if c is None else f'{c.half_ratio:.2f}':>7s} "
              f"{'' if c is None else f'{c.quarter_ratio:.2f}':>6s} "
              f"{'' if c is None else f'{c.lag_ms:+.0f}':>6s}  {o.status}{flag}")
    total = sum(float(r["duration_s"]) for r in rows)
    print(f"kept {len(rows)} of {len(outcomes)} projects, {total / 60:.1f} min of audio; "
          f"manifest {out / 'labels.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
