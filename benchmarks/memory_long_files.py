"""Peak memory of ``musicssl key`` on long files: 1 h vs 3 h, streamed vs in memory.

Synthesises FLAC files of the given lengths in a temporary folder (chords of
harmonic tones, 22 050 Hz mono, written block by block), then runs
``musicssl key FILE`` on each in a fresh subprocess, one thread, and reads the
child's peak resident memory (``os.wait4``'s ``ru_maxrss``). Two paths:

* **streamed** (the default): files over ``STREAM_MIN_SECONDS`` are never held
  whole (``compute_features(stream=True)``: one scan pass, chroma pass, the CQT
  re-read chunk by chunk for the network);
* **in memory** (the former path): the same command with
  ``STREAM_MIN_SECONDS`` set to infinity in the child (whole waveform, whole CQT).

Prints peak RSS and wall time side by side and the 3 h / 1 h ratio of each
path; the key printed by both paths is compared. ``--beats`` also measures
``musicssl beats`` (onset + DBN default) on the same files.

    python benchmarks/memory_long_files.py [--hours 1 3] [--paths streamed memory]
        [--transpositions 12] [--local] [--beats] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SR = 22050

CHILD = """
import sys, math
import musicssl.io.audio
if sys.argv[1] == "memory":   # the whole file in memory: the streaming threshold out of reach
    musicssl.io.audio.STREAM_MIN_SECONDS = math.inf
from musicssl.cli.main import main
raise SystemExit(main(sys.argv[2:]))
"""


def synthesise(path: Path, seconds: float, seed: int = 0) -> None:
    """A FLAC of ``seconds`` of chord changes (I-IV-V-I in C, 2 s each) with a little noise."""
    import soundfile

    rng = np.random.default_rng(seed)
    t = np.arange(2 * SR) / SR
    envelope = np.minimum(1.0, 10 * t) * np.exp(-0.6 * t)

    def chord(freqs):
        return envelope * sum(np.sin(2 * np.pi * f * k * t) / k for f in freqs for k in range(1, 5))

    chords = [chord(c) for c in ([261.63, 329.63, 392.0], [349.23, 440.0, 523.25],
                                 [392.0, 493.88, 587.33], [261.63, 329.63, 392.0])]
    block = np.concatenate(chords * 15)            # 120 s
    block = (0.25 * block / np.max(np.abs(block))).astype(np.float32)
    with soundfile.SoundFile(str(path), "w", SR, 1, format="FLAC", subtype="PCM_16") as f:
        written = 0
        total = int(seconds * SR)
        while written < total:
            part = block[:total - written] + 0.003 * rng.standard_normal(min(len(block), total - written))
            f.write(part.astype(np.float32))
            written += len(part)


def run_child(args: list[str]) -> tuple[float, float, str]:
    """(peak RSS in MB, wall seconds, stdout) of one subprocess."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src") + os.pathsep
               + os.environ.get("PYTHONPATH", ""))
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        text, problems = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{problems[-2000:]}")
    return usage.ru_maxrss / 1024.0, wall, text   # ru_maxrss is in KiB on Linux


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, nargs="+", default=[1.0, 3.0])
    parser.add_argument("--paths", nargs="*", choices=("streamed", "memory"), default=["streamed", "memory"],
                        help="key paths to measure (none: only --beats)")
    parser.add_argument("--transpositions", type=int, default=None,
                        help="passed to musicssl key (default: its default, 12)")
    parser.add_argument("--local", action="store_true", help="also local keys (musicssl key --local)")
    parser.add_argument("--beats", action="store_true", help="also musicssl beats (default tracker)")
    parser.add_argument("--keep", type=Path, default=None, help="folder for the audio (kept; reused)")
    args = parser.parse_args(argv)

    folder_context = tempfile.TemporaryDirectory() if args.keep is None else None
    folder = Path(folder_context.name) if folder_context else args.keep
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for hours in args.hours:
        path = folder / f"long_{hours:g}h.flac"
        if not path.exists():
            start = time.perf_counter()
            synthesise(path, hours * 3600.0)
            print(f"wrote {path.name} ({path.stat().st_size / 1e6:.0f} MB) in "
                  f"{time.perf_counter() - start:.0f} s", file=sys.stderr)
        files[hours] = path

    key_options = ["--format", "jsonl"]
    if args.transpositions is not None:
        key_options += ["--transpositions", str(args.transpositions)]
    if args.local:
        key_options.append("--local")
    rows = []
    for name in args.paths:
        for hours, path in files.items():
            rss, wall, text = run_child([sys.executable, "-c", CHILD, name, "key", *key_options, str(path)])
            record = json.loads(text.strip().splitlines()[-1])
            rows.append(("key", name, hours, rss, wall, record.get("key")))
            print(f"  key {name:9s} {hours:g} h: {rss:7.0f} MB, {wall:6.1f} s, key {record.get('key')}",
                  file=sys.stderr)
    if args.beats:
        for hours, path in files.items():
            rss, wall, _ = run_child([sys.executable, "-c", CHILD, "streamed", "beats", str(path),
                                      "--format", "jsonl"])
            rows.append(("beats", "default", hours, rss, wall, ""))
            print(f"  beats {hours:g} h: {rss:7.0f} MB, {wall:6.1f} s", file=sys.stderr)

    print(f"musicssl key{' ' + ' '.join(key_options[2:]) if key_options[2:] else ''}, "
          f"one thread, synthesised {SR} Hz mono FLAC")
    print(f"{'command':8s}{'path':11s}{'length':>8s}{'peak RSS MB':>13s}{'wall s':>9s}  key")
    for command, name, hours, rss, wall, key in rows:
        print(f"{command:8s}{name:11s}{hours:7g}h{rss:13.0f}{wall:9.1f}  {key}")
    by = {(c, n, h): r for c, n, h, r, _, _ in rows}
    if len(args.hours) >= 2:
        short, long = min(args.hours), max(args.hours)
        for command, name in sorted({(c, n) for c, n, *_ in rows}):
            if (command, name, short) in by and (command, name, long) in by:
                print(f"{command} {name}: peak RSS {long:g} h / {short:g} h = "
                      f"{by[(command, name, long)] / by[(command, name, short)]:.2f}")
    if folder_context:
        folder_context.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
