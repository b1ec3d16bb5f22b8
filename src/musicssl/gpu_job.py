"""A packed, self-contained GPU job that trains S-KEY and ZeroNS in one short, isolated slot.

``python -m musicssl.gpu_job pack --out DIR`` writes a folder (at most
``--max-mib``, default 56 MiB) that needs nothing but Python 3.12 with torch,
lightning, numpy, scipy, safetensors and pyyaml at the other end::

    DIR/run.sh                      the job: bash run.sh [--minutes 8.5]  (results in $OUT)
    DIR/src/musicssl/               this package (without the shipped models and examples)
    DIR/configs/skey.yaml, zerons.yaml   training settings (configs/gpu_job_*.yaml + --key-set/--beat-set)
    DIR/data/key_bank.safetensors   key features: CQT dB of the middle --key-seconds of each track (uint8 codes)
    DIR/data/zerons_bank.safetensors ZeroNS features: separated log-VQT (uint8 codes) + percussive RMS
    DIR/data/zerons_reference.npz   VQT of the ZeroNS polarity/lag calibration signal (no HPSS there)
    DIR/state/*.ckpt                training state returned by an earlier slot (--state), if any
    DIR/wheels/*.whl                only with --wheel (the training path imports no audio library)
    DIR/MANIFEST.json               every file with its size, and the settings of the pack

The feature banks are keyed by content (sha1 of the features); no audio path
or file stamp travels. ``run`` (what ``run.sh`` calls) starts the two
trainings as concurrent processes on the one device with a common wall-clock
deadline, samples GPU utilisation (``nvidia-smi``; "n/a" without it),
calibrates and exports both models and leaves at most 8 files in ``$OUT``:
``skey.safetensors``, ``zerons.safetensors``, ``skey_state.ckpt``,
``zerons_state.ckpt`` (pass that folder to the next ``pack --state``),
``skey_curve.safetensors`` (S-KEY weights at :data:`SNAPSHOT_STEPS`; back here,
``curve`` calibrates each into a model to score), ``job.log``, ``metrics.csv``,
``report.md``. See docs/training.md.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from musicssl.beat.checkpoint import (
    read_training_checkpoint as read_zerons_training_checkpoint,
)
from musicssl.beat.config import PretrainConfig
from musicssl.beat.estimator import polarity_reference
from musicssl.beat.frontend import FPS, SAMPLE_RATE, ZeroNSFrontEnd, vqt_features
from musicssl.beat.model import ZeroNS
from musicssl.beat.separation import get_separator
from musicssl.errors import CheckpointError, ConfigError, MusicsslError
from musicssl.io.atomic import atomic_open, atomic_write_text
from musicssl.io.model_file import read_tensor_file, write_tensor_file
from musicssl.io.tracks import Track, read_manifest, split_tracks
from musicssl.key.config import TrainConfig
from musicssl.key.dataset import FeatureCache

MIB = 2 ** 20
#: what the GPU image lacks; the training path must not import them (enforced in the children)
ABSENT_PACKAGES = ("soundfile", "soxr", "librosa", "mir_eval", "av", "mutagen")
OUT_FILES = ("skey.safetensors", "zerons.safetensors", "skey_state.ckpt", "zerons_state.ckpt",
             "skey_curve.safetensors", "job.log", "metrics.csv", "report.md")
#: global steps at which the S-KEY child keeps the weights it would export (25·2^(k/2), and the last
#: step): a learning curve from one slot, calibrated and scored here afterwards (``curve``)
SNAPSHOT_STEPS = frozenset(round(25 * 2 ** (k / 2)) for k in range(48))
CURVE_FORMAT, CURVE_VERSION = "musicssl.key-curve", 1
MAX_OUT_FILE = 16 * MIB
REPO = Path(__file__).resolve().parents[2]


# =========================================================================== pack
def _yaml_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def _settings(path: Path, assignments: Sequence[str]) -> dict:
    import yaml

    if not path.is_file():
        raise ConfigError(f"{path}: config not found")
    values = yaml.safe_load(path.read_text()) or {}
    for item in assignments:
        if "=" not in item:
            raise ConfigError(f"expected KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        values[key.strip().replace("-", "_")] = _yaml_value(value)
    return values


def _copy_source(dest: Path) -> None:
    src = Path(__file__).resolve().parent
    shutil.copytree(src, dest / "src" / "musicssl",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "examples", "models"))


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def zerons_reference_features(separator: str = "hpss") -> tuple:
    """VQT ``(96, T)`` float32 of both separated parts of the ZeroNS calibration signal
    (:func:`musicssl.beat.estimator.polarity_reference`), computed here so the job needs no separator."""
    import numpy as np

    x, _ = polarity_reference()
    perc, rest = get_separator(separator)(x, SAMPLE_RATE)
    frontend = ZeroNSFrontEnd()
    return (np.asarray(vqt_features(frontend, perc), np.float32), np.asarray(vqt_features(frontend, rest), np.float32))


def _key_sources(caches: Sequence[str], manifests: Sequence[str], frontend, val_fraction: float, seed: int):
    """Arrays, keys and splits of the cached key tracks of every ``(cache, manifest)`` source
    (a source without a manifest takes its whole cache), each source split by track; a track
    (audio path) in two sources is taken from the first."""
    if manifests and len(manifests) != len(caches):
        raise ConfigError(f"{len(manifests)} --key-manifest for {len(caches)} --key-cache: give one per cache "
                          "or none")
    arrays, keys, split, seen = [], [], [], set()
    for i, root in enumerate(caches):
        cache = FeatureCache(root, frontend)
        if manifests:
            tracks = list(read_manifest(manifests[i]))
            for t in tracks:
                t.path = str(Path(t.path).resolve())
        else:
            tracks = [Track(path=p) for p in sorted(cache.index["tracks"])]
        train, val = split_tracks([t for t in tracks if t.path in cache], val_fraction, seed)
        for t, part in [(t, "train") for t in train] + [(t, "val") for t in val]:
            if t.path not in seen:
                seen.add(t.path)
                arrays.append(cache.array(t.path))
                keys.append(t.key)
                split.append(part)
    return arrays, keys, split


def pack(out: str | Path, *, key_cache: str | Sequence[str] | None = None,
         key_manifest: str | Sequence[str] | None = None,
         beat_cache: str | None = None, state: str | None = None, max_mib: float = 56.0,
         key_seconds: float = 32.0, key_config: str | None = None, beat_config: str | None = None,
         key_set: Sequence[str] = (), beat_set: Sequence[str] = (), wheels: Sequence[str] = (),
         log=print) -> dict:
    """Write the job folder ``out`` (see the module docstring); returns its manifest.

    ``key_cache``: one or more ``musicssl train`` feature caches; ``key_manifest``: none,
    or one manifest per cache naming the tracks to take from it.
    """
    import numpy as np
    import yaml

    from musicssl.beat.device_data import ClipBank
    from musicssl.key.device_data import KeyBank

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not empty")
    if not key_cache or not beat_cache:
        raise ConfigError("pack needs --key-cache (musicssl train cache_dir) and --beat-cache (train-beats cache)")
    configs = REPO / "configs"
    key_values = _settings(Path(key_config or configs / "gpu_job_skey.yaml"), key_set)
    beat_values = _settings(Path(beat_config or configs / "gpu_job_zerons.yaml"), beat_set)
    key_cfg = TrainConfig.from_mapping({**key_values, "data": [], "bank": "data/key_bank.safetensors"})
    beat_cfg = PretrainConfig.from_dict(beat_values)
    carried = [name for name in ("skey_state.ckpt", "zerons_state.ckpt") if state and (Path(state) / name).is_file()]
    if state and not carried:
        raise ConfigError(f"--state {state}: no skey_state.ckpt or zerons_state.ckpt there")
    for sub in ("configs", "data", "state"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    _copy_source(out)
    (out / "configs" / "skey.yaml").write_text(yaml.safe_dump(key_values, sort_keys=False))
    (out / "configs" / "zerons.yaml").write_text(yaml.safe_dump(beat_values, sort_keys=False))
    run_sh = out / "run.sh"
    run_sh.write_text(RUN_SH)
    run_sh.chmod(0o755)
    for name in carried:
        shutil.copy2(Path(state) / name, out / "state" / name)
    perc, rest = zerons_reference_features(beat_cfg.separator)
    np.savez(out / "data" / "zerons_reference.npz", percussive=perc.astype(np.float16),
             non_percussive=rest.astype(np.float16))
    if wheels:
        (out / "wheels").mkdir()
        subprocess.run([sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--python-version", "3.12",
                        "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
                        "-d", str(out / "wheels"), *wheels], check=True)
    budget = int(max_mib * MIB) - _folder_bytes(out) - 64 * 1024          # room for MANIFEST.json
    # key bank: the middle key_seconds of every cached track, fewer seconds if it would take > 60 % of the room
    caches = [key_cache] if isinstance(key_cache, str) else list(key_cache)
    manifests = [key_manifest] if isinstance(key_manifest, str) else list(key_manifest or [])
    fe = key_cfg.frontend()
    arrays, keys, split = _key_sources(caches, manifests, fe, key_cfg.val_fraction, key_cfg.seed)
    if not arrays:
        raise ConfigError(f"no cached key tracks in {', '.join(caches)}")
    fps = fe.frame_rate
    bytes_per_second = len(arrays) * fe.n_bins * fps           # uint8 codes: one byte per bin and frame
    seconds = min(key_seconds, 0.6 * budget / bytes_per_second)
    if seconds < key_cfg.segment_seconds:
        raise ConfigError(f"{len(arrays)} key tracks at >= {key_cfg.segment_seconds} s each do not fit "
                          f"in {max_mib} MiB; raise --max-mib or pack fewer tracks")
    key_bank = KeyBank.from_arrays(arrays, fe.to_dict(), keys, split, max_seconds=seconds)
    key_bank.save(out / "data" / "key_bank.safetensors", storage="uint8")
    budget -= (out / "data" / "key_bank.safetensors").stat().st_size
    # ZeroNS bank: the rest of the room (2 x 96 uint8 feature codes + 1 float16 RMS per frame)
    zerons_seconds = (budget - 8192) / (2 * 96 + 2) / FPS
    if zerons_seconds < 2 * beat_cfg.clip_seconds:
        raise ConfigError(f"no room left for ZeroNS features in {max_mib} MiB")
    clip_bank = ClipBank.from_cache(beat_cache, beat_cfg.max_seconds_per_track, zerons_seconds)
    clip_bank.save(out / "data" / "zerons_bank.safetensors", storage="uint8")
    manifest = {
        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "key": {"sources": len(caches), "tracks": len(key_bank), "val_tracks": key_bank.split.count("val"),
                "seconds_per_track": round(seconds, 1), "hours": round(float(key_bank.lengths.sum()) / fps / 3600, 3),
                # a track shorter than two segments gives overlapping segments A and B (short_tracks)
                "segment_overlap_s": round(max(0.0, 2 * key_cfg.segment_seconds - seconds), 1),
                "hop_length": fe.hop_length},
        "zerons": {"tracks": len(clip_bank), "hours": round(clip_bank.seconds / 3600, 3), "width": beat_cfg.width},
        "state": carried, "wheels": sorted(p.name for p in (out / "wheels").glob("*.whl")) if wheels else [],
        "key_set": list(key_set), "beat_set": list(beat_set),
    }
    files = {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}
    manifest["files"] = {k: v for k, v in files.items() if not k.startswith("src/")}
    manifest["files"]["src/ (package source)"] = sum(v for k, v in files.items() if k.startswith("src/"))
    atomic_write_text(out / "MANIFEST.json", json.dumps(manifest, indent=1))
    total = _folder_bytes(out)
    manifest["total_mib"] = round(total / MIB, 2)
    atomic_write_text(out / "MANIFEST.json", json.dumps(manifest, indent=1))
    if total > max_mib * MIB:
        raise ConfigError(f"pack is {total / MIB:.1f} MiB > {max_mib} MiB")
    log(f"packed {out}: {total / MIB:.1f} MiB; key {manifest['key']}; zerons {manifest['zerons']}; "
        f"state {carried or 'none'}")
    return manifest


RUN_SH = r"""#!/usr/bin/env bash
# musicssl packed GPU job: trains S-KEY and ZeroNS concurrently within a wall-clock budget,
# calibrates and exports both, and leaves at most 8 files in $OUT (default: ./out).
#   bash run.sh [--minutes 8.5] [--device auto|cuda|cpu] [--threads N]
set -euo pipefail
export MUSICSSL_JOB_START="${MUSICSSL_JOB_START:-$(date +%s.%N)}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${OUT:-$HERE/out}"
PY="${PYTHON:-python3}"
if compgen -G "$HERE/wheels/*.whl" > /dev/null; then
    WORK_SITE="$(mktemp -d)"
    "$PY" -m pip install -q --no-index --no-deps --target "$WORK_SITE" "$HERE"/wheels/*.whl
    export PYTHONPATH="$WORK_SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$HERE/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m musicssl.gpu_job run --pack "$HERE" --out "$OUT" "$@"
"""


# =========================================================================== run (orchestrator)
class UtilisationSampler(threading.Thread):
    """Samples ``nvidia-smi`` every ``every_s`` seconds: rows ``(t_s, util %, memory MiB)``; none without it."""

    def __init__(self, every_s: float = 2.0):
        super().__init__(daemon=True)
        self.every_s, self.rows, self.available = every_s, [], shutil.which("nvidia-smi") is not None
        self._stop_event = threading.Event()
        self.t0 = time.time()

    def run(self) -> None:
        while self.available and not self._stop_event.wait(self.every_s):
            try:
                text = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                       "--format=csv,noheader,nounits"], capture_output=True, text=True,
                                      timeout=10).stdout
                util, mem = (float(x) for x in text.splitlines()[0].split(",")[:2])
                self.rows.append((round(time.time() - self.t0, 1), util, mem))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                continue

    def stop(self) -> None:
        self._stop_event.set()

    def summary(self) -> str:
        if not self.available:
            return "n/a (no nvidia-smi)"
        if not self.rows:
            return "n/a (no samples)"
        util = sorted(r[1] for r in self.rows)
        busy = [u for u in util if u > 0]
        return (f"mean {sum(util) / len(util):.0f} %, median {util[len(util) // 2]:.0f} %, "
                f"max memory {max(r[2] for r in self.rows):.0f} MiB ({len(util)} samples, "
                f"{len(busy)} non-zero)")


def run(pack_dir: str | Path, out: str | Path, minutes: float = 8.5, device: str = "auto",
        threads: int | None = None, export_reserve_s: float | None = None, log=print) -> dict:
    """Run the packed job in ``pack_dir``; results in ``out`` (at most 8 files). Returns the summary."""
    import tempfile

    start = float(os.environ.get("MUSICSSL_JOB_START") or time.time())
    pack_dir, out = Path(pack_dir).resolve(), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    end = start + 60.0 * minutes
    if export_reserve_s is None:                          # calibration + export + report after training
        export_reserve_s = min(60.0, max(10.0, 0.12 * 60.0 * minutes))
    deadline = end - export_reserve_s
    work = Path(tempfile.mkdtemp(prefix="musicssl-job-"))
    job_log = io.StringIO()

    def say(text: str) -> None:
        line = f"[{time.time() - start:7.1f} s] {text}"
        job_log.write(line + "\n")
        log(line)

    resolved = _resolve_device(device)
    say(f"pack {pack_dir}; device {resolved}; budget {minutes:g} min; training until "
        f"{deadline - start:.0f} s; work folder {work}")
    sampler = UtilisationSampler()
    sampler.start()
    children = {}
    n_threads = threads or max(1, (os.cpu_count() or 2) // 2)
    for model in ("skey", "zerons"):
        (work / model).mkdir()
        cmd = [sys.executable, "-m", "musicssl.gpu_job", "child", model, "--pack", str(pack_dir),
               "--work", str(work / model), "--deadline", repr(deadline), "--device", resolved,
               "--threads", str(n_threads)]
        stream = open(work / f"{model}.log", "w")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}          # a child killed at the budget keeps its log
        children[model] = (subprocess.Popen(cmd, stdout=stream, stderr=subprocess.STDOUT, env=env),
                           stream)
        say(f"started {model} (pid {children[model][0].pid})")
    codes = {}
    for model, (proc, stream) in children.items():
        try:
            codes[model] = proc.wait(timeout=max(1.0, end - 1.5 - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes[model] = "killed at the budget"
        stream.close()
        say(f"{model} finished: exit {codes[model]}")
    sampler.stop()
    summary = _collect(pack_dir, work, out, codes, sampler, start, minutes, say)
    say(f"done in {time.time() - start:.1f} s")
    logs = [job_log.getvalue()] + [f"\n===== {m} =====\n" + (work / f"{m}.log").read_text(errors="replace")
                                   for m in children]
    text = "".join(logs)
    _write(out / "job.log", text.encode()[-MAX_OUT_FILE + 1024:])
    shutil.rmtree(work, ignore_errors=True)
    return summary


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _write(path: Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def _collect(pack_dir: Path, work: Path, out: Path, codes: dict, sampler: UtilisationSampler, start: float,
             minutes: float, say) -> dict:
    """Copy models and states into ``out``, merge metrics, write the report."""
    summaries = {}
    for model in ("skey", "zerons"):
        f = work / model / "job_summary.json"
        summaries[model] = json.loads(f.read_text()) if f.is_file() else {"error": f"exit {codes.get(model)}"}
        state = work / model / "state.ckpt"
        if not state.is_file():            # training ended but the export did not finish: keep the state
            state = work / model / "run" / "checkpoints" / "last.ckpt"
        for src, name in ((work / model / "export.safetensors", f"{model}.safetensors"),
                          (state, f"{model}_state.ckpt"),
                          (work / model / "curve.safetensors", f"{model}_curve.safetensors")):   # S-KEY only
            if src.is_file():
                if src.stat().st_size > MAX_OUT_FILE:
                    say(f"{name} is {src.stat().st_size / MIB:.1f} MiB > 16 MiB: not returned")
                    continue
                shutil.copyfile(src, out / name)
    rows = []
    for model in ("skey", "zerons"):
        for metrics in sorted((work / model / "run").rglob("metrics.csv")):
            with open(metrics, newline="") as f:
                for row in csv.DictReader(f):
                    rows.append({"model": model, **{k: v for k, v in row.items() if v not in ("", None)}})
    rows += [{"model": "gpu", "time_s": t, "gpu_util_percent": u, "gpu_memory_mib": m} for t, u, m in sampler.rows]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns or ["model"])
    writer.writeheader()
    writer.writerows(rows)
    _write(out / "metrics.csv", buffer.getvalue().encode()[:MAX_OUT_FILE])
    manifest = json.loads((pack_dir / "MANIFEST.json").read_text()) if (pack_dir / "MANIFEST.json").is_file() else {}
    summary = {"models": summaries, "utilisation": sampler.summary(), "wall_s": round(time.time() - start, 1),
               "budget_min": minutes, "pack": manifest}
    _write(out / "report.md", render_report(summary).encode())
    return summary


def render_report(summary: dict) -> str:
    """One page of Markdown: steps, items/s, utilisation, losses, pack contents."""
    lines = ["# musicssl GPU job report", "",
             f"Wall clock {summary['wall_s']} s of a {summary['budget_min']:g} min budget; "
             f"GPU utilisation: {summary['utilisation']}.", "",
             "| model | device | steps this run | global step | items/s | train s | first loss | last loss | export |",
             "|---|---|---|---|---|---|---|---|---|"]
    for model, s in summary["models"].items():
        if "error" in s:
            lines.append(f"| {model} | failed: {s['error']} | | | | | | | |")
            continue
        lines.append(f"| {model} | {s.get('device')} | {s.get('steps_this_run')} | {s.get('global_step')} | "
                     f"{s.get('items_per_s', 0):.1f} | {s.get('train_s', 0):.0f} | {s.get('first_loss')} | "
                     f"{s.get('last_loss')} | {s.get('export', '')} |")
    pack_info = summary.get("pack") or {}
    lines += ["", "Items: S-KEY one pair of 15 s segments (three views); ZeroNS one clip (both networks). "
              "items/s is measured after the first 5 steps.", "", "## Pack", ""]
    for part in ("key", "zerons"):
        if part in pack_info:
            lines.append(f"* {part}: " + ", ".join(f"{k} {v}" for k, v in pack_info[part].items()))
    lines.append(f"* carried state: {', '.join(pack_info.get('state') or []) or 'none (fresh start)'}; "
                 f"wheels: {', '.join(pack_info.get('wheels') or []) or 'none'}; "
                 f"total {pack_info.get('total_mib', '?')} MiB")
    for name, size in (pack_info.get("files") or {}).items():
        lines.append(f"  * `{name}` {size / MIB:.2f} MiB")
    lines += ["", "Returned: " + ", ".join(f"`{n}`" for n in OUT_FILES) + " (next slot: `pack --state` this folder)."]
    return "\n".join(lines) + "\n"


# =========================================================================== children
def _block_absent_packages() -> None:
    """Make the packages the GPU image lacks unimportable for musicssl, so a rehearsal proves the
    job needs none. Lightning is imported first: where librosa is installed, torchmetrics (under
    Lightning) imports it itself, which it does not do where librosa is absent."""
    import lightning.pytorch  # noqa: F401

    for name in ABSENT_PACKAGES:
        sys.modules[name] = None  # type: ignore[assignment]


def _job_meter(deadline: float, items_of):
    import lightning.pytorch as pl

    class JobMeter(pl.Callback):
        """Stops at the deadline; records steps, items/s (after 5 warm-up steps) and the losses."""

        def __init__(self):
            self.steps = self.items = 0
            self.t_warm = None
            self.items_warm = 0
            self.first_loss = self.last_loss = None

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.steps += 1
            self.items += items_of(batch)
            if self.steps == 5:
                self.t_warm, self.items_warm = time.time(), self.items
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            if loss is not None:                      # kept on the device: no synchronisation per step
                if self.first_loss is None:
                    self.first_loss = loss.detach().clone()
                self.last_loss = loss.detach()
            if time.time() >= deadline:
                trainer.should_stop = True

        def summary(self, trainer, started: float) -> dict:
            now = time.time()
            if self.t_warm is not None and now > self.t_warm and self.items > self.items_warm:
                rate = (self.items - self.items_warm) / (now - self.t_warm)
            else:
                rate = self.items / max(now - started, 1e-9)
            return {"steps_this_run": self.steps, "global_step": int(trainer.global_step), "items": self.items,
                    "items_per_s": rate, "train_s": now - started,
                    "first_loss": None if self.first_loss is None else round(float(self.first_loss), 4),
                    "last_loss": None if self.last_loss is None else round(float(self.last_loss), 4)}

    return JobMeter()


def _snapshots(path: Path):
    import lightning.pytorch as pl

    class Snapshots(pl.Callback):
        """Keeps the weights the model would export at the global steps of :data:`SNAPSHOT_STEPS`
        and at the end of training, rewriting ``path`` (:func:`save_curve`) each time: a
        process killed at the budget still leaves the curve so far."""

        def __init__(self):
            self.states: dict[int, dict] = {}

        def _keep(self, step: int, pl_module) -> None:
            if step not in self.states:
                self.states[step] = {k: v.detach().to("cpu", copy=True)
                                     for k, v in pl_module.final_model.state_dict().items()}
                save_curve(path, self.states)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step in SNAPSHOT_STEPS:
                self._keep(trainer.global_step, pl_module)

        def on_train_end(self, trainer, pl_module):
            if trainer.global_step > 0:
                self._keep(trainer.global_step, pl_module)

    return Snapshots()


def save_curve(path: Path, states: dict[int, dict]) -> Path:
    """One ``.safetensors`` file of state dicts by global step (tensor ``"{step}/{name}"``)."""
    tensors = {f"{step}/{name}": t for step, state in states.items() for name, t in state.items()}
    return write_tensor_file(path, tensors, CURVE_FORMAT, CURVE_VERSION, {"steps": sorted(states)})


def export_curve(out: str | Path, dest: str | Path, log=print) -> list[Path]:
    """Calibrate and write every snapshot of a returned ``$OUT`` (``skey_curve.safetensors``, with
    the architecture and front end of ``skey.safetensors``) as ``dest/skey_step{step:07d}.safetensors``."""
    from musicssl.key.calibration import (
        calibrate_model,
        check_model_frame,
        describe_frame,
    )
    from musicssl.key.checkpoint import load_key_model, save_key_model

    out, dest = Path(out), Path(dest)
    final = load_key_model(out / "skey.safetensors")
    tensors, info = read_tensor_file(out / "skey_curve.safetensors", CURVE_FORMAT, CURVE_VERSION,
                                     "musicssl key learning curve")
    written = []
    for step in info["steps"]:
        prefix = f"{step}/"
        try:
            final.model.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        except RuntimeError as exc:
            raise CheckpointError(f"{out}: step {step} of the curve does not fit skey.safetensors ({exc})") from exc
        calibration = calibrate_model(final.model.eval(), final.frontend_config)
        check = check_model_frame(final.model, final.frontend_config, calibration)
        path = save_key_model(dest / f"skey_step{int(step):07d}.safetensors", final.model, final.frontend_config,
                              calibration, {**final.provenance, "global_step": int(step), "frame_check": check,
                                            "snapshot_of": str(out / "skey_curve.safetensors")})
        frame = "frame checked" if check["agrees"] else \
            f"FRAME UNCERTAIN: progressions give {describe_frame(check['progressions'])}"
        log(f"step {step}: {path} (reference accuracy {calibration['reference_accuracy']:.2f}; {frame})")
        written.append(path)
    return written


def child(model: str, pack_dir: Path, work: Path, deadline: float, device: str, threads: int) -> int:
    """Train one model of the pack until ``deadline`` (epoch seconds), export, write ``job_summary.json``."""
    _block_absent_packages()
    import torch

    torch.set_num_threads(threads)
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    summary = {"device": device if device == "cpu" else torch.cuda.get_device_name(0)}
    if model == "skey":
        summary.update(_train_key(pack_dir, work, deadline, device, started))
    else:
        summary.update(_train_zerons(pack_dir, work, deadline, device, started))
    summary["total_s"] = time.time() - started
    atomic_write_text(work / "job_summary.json", json.dumps(summary, indent=1, default=str))
    return 0


def _train_key(pack_dir: Path, work: Path, deadline: float, device: str, started: float) -> dict:
    from musicssl.key.train import train

    state = pack_dir / "state" / "skey_state.ckpt"
    config = TrainConfig.from_yaml(pack_dir / "configs" / "skey.yaml", overrides={
        "bank": str(pack_dir / "data" / "key_bank.safetensors"), "out": str(work / "run"),
        "accelerator": "gpu" if device == "cuda" else "cpu", "devices": 1, "progress": False, "export": True,
        "num_workers": 0, "resume": str(state) if state.is_file() else None})
    config.data, config.cache_dir, config.val_manifest, config.derive_cache_from = [], None, None, None
    config.max_minutes = None
    meter = _job_meter(deadline, lambda batch: int(batch["k"].shape[0]))
    result = train(config, callbacks=[meter, _snapshots(work / "curve.safetensors")],
                   log=lambda text: print(text, flush=True))
    shutil.copyfile(work / "run" / "checkpoints" / "last.ckpt", work / "state.ckpt")
    shutil.copyfile(work / "run" / "model.safetensors", work / "export.safetensors")
    selected = result.get("calibration", {}).get("selected_step")   # select: frame_check chose an earlier step
    exported = result["global_step"] if selected is None else selected
    export = f"calibrated (24 reference signals), step {exported}" + (
        "" if selected is None else f" (the last agreeing frame check; step {result['global_step']} uncertain)")
    return {**meter.summary(_TrainerView(result["global_step"]), started), "resumed_from_state": state.is_file(),
            "export": export, "exported_step": exported, "frame_history": result.get("frame_history", []),
            "metrics": result.get("metrics", {})}


class _TrainerView:
    def __init__(self, global_step: int):
        self.global_step = global_step


def _train_zerons(pack_dir: Path, work: Path, deadline: float, device: str, started: float) -> dict:
    import numpy as np
    import yaml

    from musicssl.beat.train import pretrain

    values = yaml.safe_load((pack_dir / "configs" / "zerons.yaml").read_text()) or {}
    values.update(accelerator="gpu" if device == "cuda" else "cpu", devices=1, max_minutes=None,
                  data_pipeline="device", num_workers=0)
    if device == "cpu":
        values["precision"] = "32-true"
    config = PretrainConfig.from_dict(values)
    state = pack_dir / "state" / "zerons_state.ckpt"
    meter = _job_meter(deadline, lambda batch: int(batch[0].shape[0]))
    last = pretrain(pack_dir / "data" / "zerons_bank.safetensors", work / "run", config,
                    resume=str(state) if state.is_file() else None, progress=False, callbacks=[meter], export=False)
    shutil.copyfile(last, work / "state.ckpt")
    _, state_dict, step = read_zerons_training_checkpoint(last)
    reference = np.load(pack_dir / "data" / "zerons_reference.npz")
    path, half = export_zerons(state_dict, step, config, reference["percussive"].astype(np.float32),
                               reference["non_percussive"].astype(np.float32), work / "export.safetensors")
    return {**meter.summary(_TrainerView(step), started),
            "resumed_from_state": state.is_file(), "width": config.width,
            "export": "float16 weights" if half else "float32 weights"}


def export_zerons(state_dict: dict, step: int, config, perc_reference, rest_reference,
                  path: Path) -> tuple[Path, bool]:
    """Export a trained ZeroNS model (``state_dict`` after ``step`` steps) as ``musicssl train-beats`` does
    (:func:`musicssl.beat.train.export_model`), its polarity and lag calibrated on precomputed reference
    features (:func:`zerons_reference_features`); float16 when float32 exceeds 16 MiB."""
    from musicssl.beat.train import export_model

    model = ZeroNS(width=config.width, dropout=config.dropout)
    model.load_state_dict(state_dict)
    half = sum(p.numel() for p in model.parameters()) * 4 > MAX_OUT_FILE - MIB
    export_model(model, config, path, {"steps": step, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
                 half=half, reference=(perc_reference, rest_reference), trained_by="musicssl.gpu_job")
    return path, half


# =========================================================================== command line
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m musicssl.gpu_job", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    pk = sub.add_parser("pack", help="write the self-contained job folder")
    pk.add_argument("--out", required=True, metavar="DIR")
    pk.add_argument("--key-cache", "--cache", dest="key_cache", metavar="DIR", action="append",
                    help="key feature cache (cache_dir of musicssl train)")
    pk.add_argument("--key-manifest", metavar="CSV", action="append",
                    help="tracks to take from the key cache; repeatable, one per --key-cache")
    pk.add_argument("--beat-cache", metavar="DIR", help="ZeroNS feature cache (musicssl train-beats --cache)")
    pk.add_argument("--state", metavar="DIR", help="a returned $OUT: continue its training state")
    pk.add_argument("--max-mib", type=float, default=56.0)
    pk.add_argument("--key-seconds", type=float, default=32.0, help="middle seconds kept of each key track")
    pk.add_argument("--key-config", metavar="YAML", help="default configs/gpu_job_skey.yaml")
    pk.add_argument("--beat-config", metavar="YAML", help="default configs/gpu_job_zerons.yaml")
    pk.add_argument("--key-set", action="append", default=[], metavar="KEY=VALUE", help="override a key setting")
    pk.add_argument("--beat-set", action="append", default=[], metavar="KEY=VALUE", help="override a ZeroNS setting")
    pk.add_argument("--wheel", action="append", default=[], metavar="REQ",
                    help="download a py3.12 manylinux wheel into the pack (not needed for training)")
    cv = sub.add_parser("curve", help="calibrate and write the S-KEY snapshots of a returned $OUT (here, on CPU)")
    cv.add_argument("returned", metavar="OUT", help="a returned $OUT folder (skey.safetensors, skey_curve.safetensors)")
    cv.add_argument("--out", required=True, metavar="DIR", help="where the skey_step*.safetensors go")
    rn = sub.add_parser("run", help="run a packed job (what run.sh calls)")
    rn.add_argument("--pack", required=True, metavar="DIR")
    rn.add_argument("--out", required=True, metavar="DIR")
    rn.add_argument("--minutes", type=float, default=8.5, help="wall-clock budget incl. start-up and export")
    rn.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    rn.add_argument("--threads", type=int, help="torch threads per training process")
    rn.add_argument("--export-reserve", type=float, metavar="S",
                    help="seconds kept for calibration and export (default: 12 %% of the budget, 10-60 s)")
    ch = sub.add_parser("child", help=argparse.SUPPRESS)
    ch.add_argument("model", choices=("skey", "zerons"))
    ch.add_argument("--pack", required=True)
    ch.add_argument("--work", required=True)
    ch.add_argument("--deadline", type=float, required=True)
    ch.add_argument("--device", default="cpu")
    ch.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    try:
        if args.command == "pack":
            pack(args.out, key_cache=args.key_cache, key_manifest=args.key_manifest, beat_cache=args.beat_cache,
                 state=args.state, max_mib=args.max_mib, key_seconds=args.key_seconds, key_config=args.key_config,
                 beat_config=args.beat_config, key_set=args.key_set, beat_set=args.beat_set, wheels=args.wheel)
        elif args.command == "run":
            summary = run(args.pack, args.out, args.minutes, args.device, args.threads, args.export_reserve)
            failed = [m for m, s in summary["models"].items() if "error" in s]
            return 1 if failed else 0
        elif args.command == "curve":
            export_curve(args.returned, args.out)
        else:
            return child(args.model, Path(args.pack), Path(args.work), args.deadline, args.device, args.threads)
    except MusicsslError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
