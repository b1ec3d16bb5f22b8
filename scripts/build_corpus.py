"""Build the unlabeled training corpus from Debian's game-soundtrack packages.

Reproducible recipe (see ``docs/DATA_CARD.md``)::

    nice -n 10 .venv/bin/python scripts/build_corpus.py

For every package of :data:`PACKAGES` (or ``--packages a,b``):

1. ``apt-get download PKG`` into the cache directory (skipped when the
   ``.deb`` is already there); the exact version comes from
   ``dpkg-deb -f PKG.deb Version``.
2. Stream ``dpkg-deb --fsys-tarfile`` and extract only audio files
   (ogg, opus, mp3, flac, wav), the archives listed for the package
   (``.pk3``/``.zip`` that hold the music of nexuiz, ufoai and 0 A.D.) and
   ``usr/share/doc/PKG/copyright``. Symbolic links are skipped. Audio inside
   the archives is extracted member by member.
3. Keep only files on a music path (:attr:`Package.music_pattern`, by default
   a directory whose name contains "music"), readable by soundfile and at
   least ``--min-track-seconds`` long. Tracks longer than the package's
   maximum (``--max-track-seconds``, or a smaller per-package value for
   known loops) are cropped to it and written as 16-bit FLAC; every other
   kept file is moved into the corpus unchanged.
4. Per package the result is written to ``OUT/.state/PKG.json``; a package
   whose state exists with the same settings is skipped (resumable,
   idempotent; ``--force`` redoes it).

Finally the corpus is assembled over all processed packages in the order of
:data:`PACKAGES`: duplicates are dropped (:func:`deduplicate`), each track
gets a deterministic ``train``/``validation`` split (:func:`split_for`), and
``manifest.csv``, ``rejected.csv``, ``packages.csv`` and ``summary.json`` are
written. Duplicate rules:

* exact: the same SHA-256 of the source file bytes;
* near: source durations within 0.5 s and fingerprints (RMS level in dB of
  100 consecutive 0.1 s blocks of the first 10 s, mono) whose mean absolute
  difference is at most 1 dB.

The first track in package order, then path order, is kept.

Needs: ``apt-get`` and ``dpkg-deb`` (Debian), numpy, soundfile.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable

import numpy as np
import soundfile as sf

try:
    from musicssl.errors import ConfigError, MusicsslError
except ImportError:  # running without the package installed
    class MusicsslError(Exception):  # type: ignore[no-redef]
        """Stand-in when musicssl is not importable."""

    class ConfigError(MusicsslError, ValueError):  # type: ignore[no-redef]
        """Stand-in when musicssl is not importable."""


class CorpusBuildError(MusicsslError):
    """A package could not be downloaded, unpacked or assembled."""


BUILDER_VERSION = 2  # bump when a change alters the output; processed packages are redone
REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "work-data" / "corpus"
DEFAULT_CACHE = REPO / "work-data" / "debs"

AUDIO_SUFFIXES = (".ogg", ".opus", ".mp3", ".flac", ".wav")
ARCHIVE_SUFFIXES = (".pk3", ".zip")
MUSIC_DIR = r"(?i)(^|/)[^/]*music[^/]*/"   # a directory whose name contains "music"
ANY_PATH = r".*"

MIN_TRACK_SECONDS = 30.0
MAX_TRACK_SECONDS = 480.0
FINGERPRINT_SECONDS = 10.0
FINGERPRINT_BLOCK_SECONDS = 0.1
NEAR_DUPLICATE_SECONDS = 0.5
NEAR_DUPLICATE_DB = 1.0
SILENCE_FLOOR_DB = -80.0
LOOP_CHECK_SECONDS = 300.0     # tracks longer than this are checked for loops
LOOP_ANALYSIS_SECONDS = 1200.0  # at most this much of a track is analysed
LOOP_FRAME_SECONDS = 0.1
LOOP_SIMILARITY = 0.8
VALIDATION_PERCENT = 5.0

MANIFEST_COLUMNS = ("path", "package", "package_version", "original_path", "duration_s",
                    "samplerate", "channels", "sha256", "split", "original_duration_s",
                    "source_sha256", "loop_period_s")
REJECTED_COLUMNS = ("path", "package", "reason", "detail")


@dataclass(frozen=True)
class Package:
    """One Debian package and where its music is.

    ``music_pattern``: regex searched in the path inside the package (or inside
    an archive); only matching audio files are candidates.
    ``archives``: regex of archive files in the package to open and scan.
    ``max_seconds``: per-package crop length (s), overriding a larger global one.
    """

    name: str
    music_pattern: str = MUSIC_DIR
    archives: str | None = None
    max_seconds: float | None = None
    note: str = ""


PACKAGES: tuple[Package, ...] = (
    Package("warzone2100-music"),
    Package("ufoai-music", archives=r"0music\.pk3$", note="music inside base/0music.pk3"),
    Package("0ad-data", archives=r"mods/public/public\.zip$",
            music_pattern=r"(^|/)audio/music/",
            note="music inside mods/public/public.zip (audio/music/ only)"),
    Package("wesnoth-1.16-music"),
    Package("naev-data"),
    Package("supertux-data"),
    Package("hedgewars-data"),
    Package("widelands-data"),
    Package("nexuiz-music", archives=r"music\.pk3$", music_pattern=ANY_PATH,
            note="music inside data/music.pk3"),
    Package("supertuxkart-data",
            music_pattern=MUSIC_DIR + r"|data/tracks/[^/]+/(Battle_Theme_1|Gran_Paradiso_[^/]*"
                                      r"|beneath_the_rabbit_hole|intro2)\.ogg$",
            note="4 tracks stored with their race track data"),
    Package("drascula-music", music_pattern=ANY_PATH, note="audio/ holds the soundtrack"),
    Package("freedroidrpg-data", music_pattern=MUSIC_DIR + r"|/titles/",
            note="title-screen music sits in titles/"),
    Package("hyperrogue-music"),
    Package("pingus-data", note="music is in tracker formats soundfile cannot read"),
    Package("megaglest-data"),
    Package("redeclipse-data",
            music_pattern=MUSIC_DIR + r"|data/sounds/(theme|theme_chip|original)\.ogg$"
                                      r"|data/maps/[^/]+\.ogg$",
            note="menu themes in sounds/, map music in maps/"),
    Package("flare-game"),
    Package("extremetuxracer-data"),
    Package("planetblupi-music-ogg",
            note="its 20-28 min files loop a 2-3 min piece: cut to one period"),
    Package("singularity-music"),
    Package("freecol", music_pattern=MUSIC_DIR + r"|base/resources/sound/intro\.ogg$",
            note="intro music in base/resources/sound/"),
    Package("tuxtype-data", music_pattern=ANY_PATH, note="music sits in sounds/"),
    Package("xmoto-data"),
    Package("scorched3d-data"),
    Package("asc-music"),
    Package("frozen-bubble-data", music_pattern=ANY_PATH, note="music sits in snd/"),
)
PACKAGE_BY_NAME = {p.name: p for p in PACKAGES}


# --------------------------------------------------------------------------- pure parts
def is_audio_name(name: str) -> bool:
    """True when ``name`` ends with one of :data:`AUDIO_SUFFIXES` (any case)."""
    return name.lower().endswith(AUDIO_SUFFIXES)


def is_music_path(path: str, pattern: str) -> bool:
    """True when the POSIX ``path`` (inside a package) matches ``pattern``."""
    return re.search(pattern, path) is not None


def crop_length(duration_s: float, max_seconds: float | None,
                loop_period_s: float | None = None) -> float | None:
    """Length (s) to crop a track to, or None to keep it whole.

    A track that loops (``loop_period_s``, see :func:`loop_period`) keeps one
    period; any track keeps at most ``max_seconds``.
    """
    target = float(duration_s)
    if loop_period_s is not None:
        target = min(target, float(loop_period_s))
    if max_seconds is not None:
        target = min(target, float(max_seconds))
    return None if target >= duration_s else target


def loop_similarity(features: np.ndarray) -> np.ndarray:
    """Mean cosine similarity of frame t and frame t + lag, for every lag.

    ``features``: (T, F) per-frame features; each dimension is centred over
    time and each frame scaled to unit norm. Returns (T,) with entry 0 = 1
    for any non-silent input; entry ``lag`` averages over the T - lag pairs.
    """
    x = np.asarray(features, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)
    n = len(x)
    spec = np.fft.rfft(x, n=2 * n, axis=0)
    ac = np.fft.irfft(np.abs(spec) ** 2, n=2 * n, axis=0)[:n].sum(axis=1)
    return ac / (n - np.arange(n))


def loop_period(features: np.ndarray, frame_s: float, *, min_lag_s: float = MIN_TRACK_SECONDS,
                threshold: float = LOOP_SIMILARITY) -> float | None:
    """The shortest lag (s) at which a whole track repeats itself, or None.

    ``features``: (T, F) frames ``frame_s`` seconds apart. A lag counts when it
    is at least ``min_lag_s``, at most half the analysed length (so one full
    repetition is seen) and :func:`loop_similarity` reaches ``threshold``.
    """
    sim = loop_similarity(features)
    lo = int(np.ceil(min_lag_s / frame_s))
    hi = len(sim) // 2
    if hi < lo:
        return None
    above = np.nonzero(sim[lo:hi + 1] >= threshold)[0]
    if len(above) == 0:
        return None
    # refine to the local maximum right after the first crossing
    start = lo + int(above[0])
    stop = min(hi, start + int(round(1.0 / frame_s)))
    best = start + int(np.argmax(sim[start:stop + 1]))
    return round(best * frame_s, 3)


def effective_max_seconds(package: Package, global_max: float | None) -> float | None:
    """The smaller of the global and the per-package maximum duration (s)."""
    values = [v for v in (global_max, package.max_seconds) if v is not None]
    return min(values) if values else None


def fingerprint_from_samples(samples: np.ndarray, samplerate: int,
                             seconds: float = FINGERPRINT_SECONDS,
                             block_s: float = FINGERPRINT_BLOCK_SECONDS) -> list[float]:
    """Levels (dB RMS, floor -80) of consecutive blocks of the first ``seconds``.

    ``samples``: (n,) or (n, channels) float; channels are averaged. Returns
    ``round(seconds / block_s)`` values, rounded to 0.1 dB; blocks past the end
    of the audio count as silence.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=1)
    block = max(1, int(round(block_s * samplerate)))
    n_blocks = int(round(seconds / block_s))
    x = x[: block * n_blocks]
    x = np.pad(x, (0, block * n_blocks - len(x)))
    rms = np.sqrt(np.mean(x.reshape(n_blocks, block) ** 2, axis=1))
    db = 20.0 * np.log10(np.maximum(rms, 10 ** (SILENCE_FLOOR_DB / 20.0)))
    return [round(float(v), 1) for v in db]


def fingerprint_distance(a: Iterable[float], b: Iterable[float]) -> float:
    """Mean absolute difference (dB) of two fingerprints of equal length."""
    a, b = np.asarray(list(a)), np.asarray(list(b))
    if a.shape != b.shape:
        return float("inf")
    return float(np.mean(np.abs(a - b)))


def deduplicate(entries: list[dict], *, seconds_tol: float = NEAR_DUPLICATE_SECONDS,
                db_tol: float = NEAR_DUPLICATE_DB) -> tuple[list[dict], list[dict]]:
    """Split ``entries`` (in priority order) into kept ones and rejected rows.

    Each entry needs ``path``, ``package``, ``source_sha256``,
    ``original_duration_s`` and ``fingerprint``. An entry is an exact
    duplicate when an earlier kept entry has the same ``source_sha256``, a
    near duplicate when one has a duration within ``seconds_tol`` and a
    fingerprint within ``db_tol`` (:func:`fingerprint_distance`).
    Rejected rows: dicts with ``path``, ``package``, ``reason``
    (``duplicate`` or ``near_duplicate``) and ``detail`` (the kept path).
    """
    kept: list[dict] = []
    rejected: list[dict] = []
    by_hash: dict[str, dict] = {}
    for entry in entries:
        twin = by_hash.get(entry["source_sha256"])
        if twin is not None:
            rejected.append(_reject_row(entry, "duplicate", twin["path"]))
            continue
        near = None
        for other in kept:
            if (abs(other["original_duration_s"] - entry["original_duration_s"]) <= seconds_tol
                    and fingerprint_distance(other["fingerprint"], entry["fingerprint"]) <= db_tol):
                near = other
                break
        if near is not None:
            rejected.append(_reject_row(entry, "near_duplicate", near["path"]))
            continue
        kept.append(entry)
        by_hash[entry["source_sha256"]] = entry
    return kept, rejected


def _reject_row(entry: dict, reason: str, detail: str) -> dict:
    return {"path": entry["path"], "package": entry["package"], "reason": reason, "detail": detail}


def split_for(path: str, validation_percent: float = VALIDATION_PERCENT) -> str:
    """``"validation"`` or ``"train"``, fixed by the SHA-256 of ``path`` (no randomness)."""
    bucket = int(hashlib.sha256(path.encode("utf-8")).hexdigest()[:8], 16) % 10_000
    return "validation" if bucket < validation_percent * 100 else "train"


def write_csv(path: Path, columns: Iterable[str], rows: Iterable[dict]) -> None:
    """Write ``rows`` (dicts; extra keys ignored) as CSV with a header, atomically."""
    columns = list(columns)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: _format_cell(row.get(c, "")) for c in columns})
    os.replace(tmp, path)


def _format_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def write_json(path: Path, data) -> None:
    """Write ``data`` as indented JSON, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def corpus_relpath(package: str, original_path: str, cropped: bool) -> str:
    """Path of a track inside the corpus: ``audio/PKG/<path in package>``.

    ``original_path`` may name an archive member as ``ARCHIVE::MEMBER``; the
    ``::`` becomes a directory level. Cropped tracks get a ``.flac`` suffix.
    """
    parts = [p for p in original_path.replace("::", "/").split("/") if p not in ("", ".", "..")]
    rel = PurePosixPath("audio", package, *parts)
    if cropped:
        rel = rel.with_suffix(".flac")
    return rel.as_posix()


def licence_names(copyright_text: str) -> list[str]:
    """Short licence names of a Debian copyright file (``License:`` fields), in order."""
    names: list[str] = []
    for line in copyright_text.splitlines():
        m = re.match(r"^License:\s*(\S.*)$", line)
        if m and m.group(1).strip() not in names:
            names.append(m.group(1).strip())
    return names


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- audio
def audio_fingerprint(path: Path) -> list[float]:
    """:func:`fingerprint_from_samples` of the first 10 s of a file."""
    with sf.SoundFile(str(path)) as f:
        sr = f.samplerate
        data = f.read(frames=int(FINGERPRINT_SECONDS * sr), dtype="float32", always_2d=True)
    return fingerprint_from_samples(data, sr)


def loop_features(path: Path, seconds: float = LOOP_ANALYSIS_SECONDS,
                  frame_s: float = LOOP_FRAME_SECONDS) -> np.ndarray:
    """(T, 100) log band magnitudes (20 Hz - 4 kHz) of ``frame_s`` frames of a file's start."""
    with sf.SoundFile(str(path)) as f:
        sr = f.samplerate
        hop = int(round(frame_s * sr))
        rows = []
        remaining = int(seconds / frame_s)
        window = np.hanning(hop)
        lo_bin = max(1, int(round(20 * hop / sr)))
        hi_bin = int(round(4000 * hop / sr))
        edges = np.linspace(lo_bin, hi_bin, 101).astype(int)
        while remaining > 0:
            n = min(remaining, 600)
            block = f.read(frames=n * hop, dtype="float32", always_2d=True).mean(axis=1)
            n = len(block) // hop
            if n == 0:
                break
            mag = np.abs(np.fft.rfft(block[: n * hop].reshape(n, hop) * window, axis=1))
            bands = np.add.reduceat(mag[:, edges[0]:edges[-1]], edges[:-1] - edges[0], axis=1)
            rows.append(np.log(bands + 1e-3))
            remaining -= n
    return np.concatenate(rows) if rows else np.zeros((0, 100))


def crop_to_flac(src: Path, dst: Path, seconds: float) -> None:
    """Write the first ``seconds`` of ``src`` to ``dst`` as 16-bit FLAC."""
    with sf.SoundFile(str(src)) as f:
        sr, channels = f.samplerate, f.channels
        frames = int(round(seconds * sr))
        tmp = dst.with_name(dst.name + ".tmp")
        with sf.SoundFile(str(tmp), "w", samplerate=sr, channels=channels,
                          format="FLAC", subtype="PCM_16") as out:
            remaining = frames
            while remaining > 0:
                block = f.read(frames=min(remaining, sr * 30), dtype="float32", always_2d=True)
                if len(block) == 0:
                    break
                out.write(np.clip(block, -1.0, 1.0))
                remaining -= len(block)
    os.replace(tmp, dst)


# --------------------------------------------------------------------------- Debian
def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs)
    except FileNotFoundError as exc:
        raise CorpusBuildError(f"{cmd[0]} not found: this script needs Debian's apt and dpkg") from exc
    except subprocess.CalledProcessError as exc:
        raise CorpusBuildError(f"{' '.join(cmd)} failed: {exc.stderr.strip()}") from exc


def fetch_deb(package: str, cache_dir: Path) -> Path:
    """The cached ``.deb`` of ``package``, downloaded with apt-get when missing."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    found = sorted(cache_dir.glob(f"{package}_*.deb"))
    if not found:
        try:
            run(["apt-get", "download", package], cwd=cache_dir)
        except CorpusBuildError:
            log(f"{package}: apt-get download failed; running apt-get update once")
            run(["apt-get", "update"])
            run(["apt-get", "download", package], cwd=cache_dir)
        found = sorted(cache_dir.glob(f"{package}_*.deb"))
    if len(found) != 1:
        raise CorpusBuildError(f"expected one {package}_*.deb in {cache_dir}, found {len(found)}: "
                               "delete the stale ones")
    return found[0]


def deb_field(deb: Path, field: str) -> str:
    """One control field of a ``.deb`` (``dpkg-deb -f``)."""
    return run(["dpkg-deb", "-f", str(deb), field]).stdout.strip()


def _safe_target(root: Path, member: str) -> Path:
    parts = [p for p in PurePosixPath(member).parts if p not in ("", ".", "..", "/")]
    return root.joinpath(*parts)


def extract_deb(deb: Path, package: Package, scratch: Path) -> list[str]:
    """Extract audio files, listed archives and the copyright file of ``deb``.

    Streams ``dpkg-deb --fsys-tarfile``; returns the extracted regular files'
    paths relative to ``scratch`` (POSIX, no leading ``./``). Links are skipped.
    """
    copyright_path = f"usr/share/doc/{package.name}/copyright"
    extracted: list[str] = []
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                name = member.name[2:] if member.name.startswith("./") else member.name
                if not member.isfile():
                    continue
                wanted = (is_audio_name(name) or name == copyright_path
                          or (package.archives is not None and re.search(package.archives, name)))
                if not wanted:
                    continue
                target = _safe_target(scratch, name)
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                with open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                extracted.append(name)
    finally:
        proc.stdout.close()
        rc = proc.wait()
    if rc != 0:
        raise CorpusBuildError(f"dpkg-deb --fsys-tarfile {deb} exited with {rc}")
    return extracted


def extract_archive_audio(archive: Path, pattern: str, dest: Path) -> list[str]:
    """Extract audio members of a zip/pk3 matching ``pattern`` under ``dest``."""
    names: list[str] = []
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            if info.is_dir() or not is_audio_name(info.filename):
                continue
            if not is_music_path(info.filename, pattern):
                continue
            target = _safe_target(dest, info.filename)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            names.append(info.filename)
    return names


# --------------------------------------------------------------------------- per package
def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def settings_of(package: Package, args) -> dict:
    return {"builder_version": BUILDER_VERSION, "min_track_seconds": args.min_track_seconds,
            "loop_check_seconds": args.loop_check_seconds,
            "max_track_seconds": effective_max_seconds(package, args.max_track_seconds),
            "music_pattern": package.music_pattern, "archives": package.archives}


def process_package(package: Package, args) -> dict:
    """Download, unpack and filter one package; move its candidates into the corpus."""
    t0 = time.time()
    out: Path = args.out
    deb = fetch_deb(package.name, args.cache_dir)
    version = deb_field(deb, "Version")
    scratch = args.scratch_dir / package.name
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    pkg_audio = out / "audio" / package.name
    if pkg_audio.exists():
        shutil.rmtree(pkg_audio)
    max_s = effective_max_seconds(package, args.max_track_seconds)
    log(f"{package.name} {version}: extracting {deb.name} ({deb.stat().st_size / 1e6:.0f} MB)")
    files = extract_deb(deb, package, scratch)

    # (original_path, file on disk) of every audio file, archives opened
    audio: list[tuple[str, Path]] = []
    for name in sorted(files):
        if package.archives is not None and re.search(package.archives, name):
            dest = scratch / "__archives__" / name
            members = extract_archive_audio(scratch / name, package.music_pattern, dest)
            audio += [(f"{name}::{m}", _safe_target(dest, m)) for m in sorted(members)]
            (scratch / name).unlink()
        elif is_audio_name(name):
            audio.append((name, scratch / name))

    copyright_file = scratch / "usr" / "share" / "doc" / package.name / "copyright"
    licences: list[str] = []
    if copyright_file.is_file():
        (out / "licenses").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(copyright_file, out / "licenses" / f"{package.name}.copyright")
        licences = licence_names(copyright_file.read_text(encoding="utf-8", errors="replace"))

    candidates: list[dict] = []
    rejected: list[dict] = []
    not_music = 0
    for original, disk in audio:
        pkg_path = f"{package.name}:{original}"
        try:
            info = sf.info(str(disk))
            duration = float(info.frames) / info.samplerate if info.samplerate else 0.0
        except Exception as exc:  # soundfile raises several types for undecodable files
            info, duration, error = None, None, str(exc).splitlines()[0][:200]
        if not is_music_path(original.split("::")[-1], package.music_pattern):
            not_music += 1
            rejected.append({"path": pkg_path, "package": package.name, "reason": "not_music_path",
                             "detail": "" if duration is None else f"{duration:.1f}s"})
            continue
        if info is None:
            rejected.append({"path": pkg_path, "package": package.name,
                             "reason": "unreadable", "detail": error})
            continue
        if duration < args.min_track_seconds:
            rejected.append({"path": pkg_path, "package": package.name,
                             "reason": "too_short", "detail": f"{duration:.1f}s"})
            continue
        try:
            fingerprint = audio_fingerprint(disk)
        except Exception as exc:
            rejected.append({"path": pkg_path, "package": package.name,
                             "reason": "unreadable", "detail": str(exc).splitlines()[0][:200]})
            continue
        period = None
        if args.loop_check_seconds is not None and duration > args.loop_check_seconds:
            period = loop_period(loop_features(disk), LOOP_FRAME_SECONDS,
                                 min_lag_s=args.min_track_seconds)
        crop = crop_length(duration, max_s, period)
        rel = corpus_relpath(package.name, original, cropped=crop is not None)
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        source_sha = sha256_file(disk)
        if crop is not None:
            crop_to_flac(disk, target, crop)
            written = sf.info(str(target))
            kept_duration = written.frames / written.samplerate
        else:
            shutil.move(str(disk), str(target))
            kept_duration = duration
        candidates.append({
            "path": rel, "package": package.name, "package_version": version,
            "original_path": original, "duration_s": round(kept_duration, 3),
            "samplerate": info.samplerate, "channels": info.channels,
            "sha256": sha256_file(target), "original_duration_s": round(duration, 3),
            "source_sha256": source_sha, "loop_period_s": period, "fingerprint": fingerprint,
        })
    shutil.rmtree(scratch)
    state = {
        "package": package.name, "version": version, "deb": deb.name,
        "deb_bytes": deb.stat().st_size, "deb_sha256": sha256_file(deb),
        "licences": licences, "note": package.note, "settings": settings_of(package, args),
        "audio_files_seen": len(audio), "not_music_path": not_music,
        "candidates": candidates, "rejected": rejected,
        "seconds_taken": round(time.time() - t0, 1),
    }
    hours = sum(c["duration_s"] for c in candidates) / 3600
    log(f"{package.name}: {len(candidates)} candidates ({hours:.2f} h), "
        f"{len(rejected)} rejected, {state['seconds_taken']:.0f} s")
    return state


# --------------------------------------------------------------------------- assembly
def load_states(out: Path) -> list[dict]:
    """Package states found under ``OUT/.state``, in :data:`PACKAGES` order."""
    states = []
    for package in PACKAGES:
        path = out / ".state" / f"{package.name}.json"
        if path.is_file():
            states.append(json.loads(path.read_text(encoding="utf-8")))
    return states


def assemble(out: Path, validation_percent: float = VALIDATION_PERCENT) -> dict:
    """Deduplicate over all processed packages and write the corpus tables."""
    states = load_states(out)
    if not states:
        raise CorpusBuildError(f"no processed package under {out / '.state'}")
    candidates = [c for s in states for c in s["candidates"]]
    kept, dup_rows = deduplicate(candidates)
    for row in dup_rows:  # a duplicate's audio is not part of the corpus
        (out / row["path"]).unlink(missing_ok=True)
    missing = [c["path"] for c in kept if not (out / c["path"]).is_file()]
    if missing:
        raise CorpusBuildError(f"{len(missing)} kept tracks missing on disk (e.g. {missing[0]}); "
                               "rerun their packages with --force")
    for entry in kept:
        entry["split"] = split_for(entry["path"], validation_percent)
    rejected = [r for s in states for r in s["rejected"]] + dup_rows
    write_csv(out / "manifest.csv", MANIFEST_COLUMNS, kept)
    write_csv(out / "rejected.csv", REJECTED_COLUMNS, rejected)

    package_rows = []
    for s in states:
        mine = [k for k in kept if k["package"] == s["package"]]
        package_rows.append({
            "package": s["package"], "version": s["version"], "deb_bytes": s["deb_bytes"],
            "deb_sha256": s["deb_sha256"], "tracks": len(mine),
            "hours": round(sum(k["duration_s"] for k in mine) / 3600, 3),
            "cropped": sum(1 for k in mine if k["duration_s"] < k["original_duration_s"] - 0.01),
            "rejected": sum(1 for r in rejected if r["package"] == s["package"]),
            "licences": "; ".join(s["licences"]), "note": s["note"],
        })
    write_csv(out / "packages.csv", ("package", "version", "deb_bytes", "deb_sha256", "tracks",
                                     "hours", "cropped", "rejected", "licences", "note"),
              package_rows)
    reasons: dict[str, int] = {}
    for r in rejected:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    summary = {
        "packages": len(states), "tracks": len(kept),
        "hours": round(sum(k["duration_s"] for k in kept) / 3600, 3),
        "train_tracks": sum(k["split"] == "train" for k in kept),
        "validation_tracks": sum(k["split"] == "validation" for k in kept),
        "validation_hours": round(sum(k["duration_s"] for k in kept
                                      if k["split"] == "validation") / 3600, 3),
        "cropped_tracks": sum(r["cropped"] for r in package_rows),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "deb_bytes": sum(s["deb_bytes"] for s in states),
        "corpus_bytes": sum((out / k["path"]).stat().st_size for k in kept),
        "seconds_taken": round(sum(s["seconds_taken"] for s in states), 1),
        "settings": {s["package"]: s["settings"] for s in states},
    }
    write_json(out / "summary.json", summary)
    return summary


# --------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="corpus directory")
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where .deb files go")
    ap.add_argument("--scratch-dir", type=Path, default=None,
                    help="where packages are unpacked (default OUT/.scratch)")
    ap.add_argument("--packages", default=None,
                    help="comma-separated subset of the package list (default: all)")
    ap.add_argument("--min-track-seconds", type=float, default=MIN_TRACK_SECONDS)
    ap.add_argument("--max-track-seconds", type=float, default=MAX_TRACK_SECONDS,
                    help="crop longer tracks to this length (s); 0 disables cropping")
    ap.add_argument("--loop-check-seconds", type=float, default=LOOP_CHECK_SECONDS,
                    help="tracks longer than this are checked for loops and cut to one "
                         "period; 0 disables the check")
    ap.add_argument("--validation-percent", type=float, default=VALIDATION_PERCENT)
    ap.add_argument("--force", action="store_true", help="redo packages already processed")
    ap.add_argument("--list-packages", action="store_true", help="print the package list and exit")
    args = ap.parse_args(argv)
    if args.max_track_seconds is not None and args.max_track_seconds <= 0:
        args.max_track_seconds = None
    if args.max_track_seconds is not None and args.max_track_seconds < args.min_track_seconds:
        raise ConfigError("--max-track-seconds must be at least --min-track-seconds")
    if args.loop_check_seconds is not None and args.loop_check_seconds <= 0:
        args.loop_check_seconds = None
    if not 0 <= args.validation_percent <= 100:
        raise ConfigError("--validation-percent must be within [0, 100]")
    if args.scratch_dir is None:
        args.scratch_dir = args.out / ".scratch"
    return args


def select_packages(spec: str | None) -> list[Package]:
    """Packages named in a comma-separated ``spec`` (all when None), in list order."""
    if spec is None:
        return list(PACKAGES)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in PACKAGE_BY_NAME]
    if unknown:
        raise ConfigError(f"unknown package(s) {', '.join(unknown)}; "
                          f"known: {', '.join(PACKAGE_BY_NAME)}")
    return [p for p in PACKAGES if p.name in names]


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        if args.list_packages:
            for p in PACKAGES:
                print(p.name + (f"  ({p.note})" if p.note else ""))
            return 0
        packages = select_packages(args.packages)
        state_dir = args.out / ".state"
        state_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        for package in packages:
            state_path = state_dir / f"{package.name}.json"
            if state_path.is_file() and not args.force:
                old = json.loads(state_path.read_text(encoding="utf-8"))
                if old.get("settings") == settings_of(package, args):
                    log(f"{package.name}: already done ({len(old['candidates'])} candidates), skipped")
                    continue
                log(f"{package.name}: settings changed, redoing")
            write_json(state_path, process_package(package, args))
        summary = assemble(args.out, args.validation_percent)
        log(f"corpus {args.out}: {summary['tracks']} tracks, {summary['hours']:.2f} h "
            f"({summary['validation_tracks']} validation), rejected {summary['rejected_by_reason']}, "
            f"this run {time.time() - t0:.0f} s")
        return 0
    except MusicsslError as exc:
        print(f"build_corpus: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
