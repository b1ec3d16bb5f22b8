"""``musicssl serve`` latency against the CLI, on 127.0.0.1.

Starts a real server (uvicorn, a subprocess) and prints, side by side:

1. first result: the CLI's wall time for one clip (``musicssl key`` / ``musicssl
   beats --format json``, a fresh process: start-up + model load + analysis)
   against the server's answer to the first POST of the same clip after start-up
   (target: within 1 s of the CLI);
2. ``--sequential`` (100) POST /v1/key one after another, then ``--concurrent``
   (20) at once: errors, p50 / p95 latency, and /v1/health's latency while the
   concurrent ones run.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/serve_latency.py                 # the bundled 29.6 s example
    OMP_NUM_THREADS=1 python benchmarks/serve_latency.py --clip song.wav --workers 2

Needs the ``serve`` extra and httpx (``pip install 'musicssl[test]'``).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

EXAMPLE = Path(__file__).resolve().parents[1] / "src" / "musicssl" / "data" / "examples" / "ode_to_joy_d_major.ogg"


def cli_seconds(command: str, clip: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "musicssl.cli.main", command, "--format", "json", str(clip)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, workers: int) -> tuple[subprocess.Popen, float]:
    start = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "musicssl.cli.main", "serve", "--port", str(port),
                               "--workers", str(workers)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                return server, time.perf_counter() - start
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            raise SystemExit("the server exited during start-up (is the 'serve' extra installed?)")
        time.sleep(0.1)


def post(client: httpx.Client, endpoint: str, clip: Path, data: bytes) -> tuple[float, int]:
    start = time.perf_counter()
    r = client.post(endpoint, files={"file": (clip.name, data)})
    return time.perf_counter() - start, r.status_code


def summary(label: str, results: list[tuple[float, int]]) -> str:
    times = np.array([t for t, _ in results])
    errors = sum(status != 200 for _, status in results)
    return (f"{label:<28} n={len(results):<4} errors={errors:<3} p50={np.percentile(times, 50):6.3f} s  "
            f"p95={np.percentile(times, 95):6.3f} s  max={times.max():6.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, default=EXAMPLE, help="audio clip (default: the bundled example)")
    parser.add_argument("--sequential", type=int, default=100)
    parser.add_argument("--concurrent", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2, help="musicssl serve --workers")
    args = parser.parse_args()
    data = args.clip.read_bytes()
    print(f"clip: {args.clip.name} ({len(data) / 1e3:.0f} kB); OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; "
          f"{os.cpu_count()} CPUs")

    cli = {command: cli_seconds(command, args.clip) for command in ("key", "beats")}
    port = free_port()
    server, startup_s = start_server(port, args.workers)
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=600) as client:
            first = {command: post(client, f"/v1/{command}", args.clip, data) for command in ("key", "beats")}
            print(f"\nserver start-up (process start to first /v1/health): {startup_s:.2f} s")
            print(f"{'first result':<14} {'CLI (fresh process)':>20} {'server (warm)':>14} {'difference':>11}  target")
            for command in ("key", "beats"):
                seconds, status = first[command]
                diff = seconds - cli[command]
                print(f"{command:<14} {cli[command]:>18.2f} s {seconds:>12.2f} s {diff:>+9.2f} s  "
                      f"{'ok' if diff <= 1.0 and status == 200 else 'MISSED'} (<= +1 s; HTTP {status})")

            sequential = [post(client, "/v1/key", args.clip, data) for _ in range(args.sequential)]
        print()
        print(summary("sequential POST /v1/key", sequential))

        health: list[tuple[float, int]] = []

        def one(_):
            with httpx.Client(base_url=base, timeout=600) as c:
                return post(c, "/v1/key", args.clip, data)

        with ThreadPoolExecutor(args.concurrent) as pool:
            futures = [pool.submit(one, i) for i in range(args.concurrent)]
            with httpx.Client(base_url=base, timeout=60) as c:
                while not all(f.done() for f in futures):
                    start = time.perf_counter()
                    status = c.get("/v1/health").status_code
                    health.append((time.perf_counter() - start, status))
                    time.sleep(0.2)
            concurrent = [f.result() for f in futures]
        print(summary(f"{args.concurrent} concurrent POST /v1/key", concurrent))
        print(summary("GET /v1/health under load", health))
        total = sum(s != 200 for _, s in sequential + concurrent + health)
        print(f"\nerrors in all: {total}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
