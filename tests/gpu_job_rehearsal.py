"""Rehearsal of the packed GPU job on this CPU (``make gpu-job-rehearsal``; smallest form in test_gpu_job.py).

Makes synthetic audio (key melodies from :mod:`audio_factory`'s harmonic tones,
drum + chord mixes from :mod:`beat_synth`), builds both feature caches with the
project's own builders, packs them with ``python -m musicssl.gpu_job pack``
(the GPU configs, made tiny with ``--key-set``/``--beat-set``), runs the packed
``run.sh`` on CPU, checks what ``$OUT`` holds, loads both exported models with
``musicssl key --checkpoint`` and ``musicssl beats --checkpoint``, calibrates the
returned S-KEY learning curve with ``python -m musicssl.gpu_job curve`` and, with
``--resume``, packs the returned state and runs a second slot that continues it.

    python tests/gpu_job_rehearsal.py [--minutes 0.75] [--resume] [--keep DIR]
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

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))          # this checkout's musicssl, installed or not

from audio_factory import harmonic_tone, write_samples  # noqa: E402
from beat_synth import SR as BEAT_SR, chord_track, drum_track  # noqa: E402

REPO = HERE.parent
KEY_SR = 22050
MAJOR = (0, 2, 4, 5, 7, 9, 11, 12)
#: the GPU configs made small enough for a CPU rehearsal of a few seconds of training
KEY_SET = ["channels=[2, 3, 8, 8, 6, 4, 3]", "kernels=[7, 7, 5, 5, 5, 3, 3]", "batch_size=3", "warmup_steps=2",
           "val_every=2", "log_every=1", "val_fraction=0.15"]
BEAT_SET = ["width=0.0625", "clip_seconds=4.0", "batch_size=4", "clips_per_epoch=16"]


def melody(tonic: int, seconds: float, seed: int) -> np.ndarray:
    """Quarter-second notes of the major scale on ``tonic`` (pitch class), harmonic tones, ``(n,)``."""
    rng = np.random.default_rng(seed)
    notes = [harmonic_tone(0.25, KEY_SR, freq_hz=220 * 2 ** ((tonic + MAJOR[rng.integers(8)] - 9) / 12))[:, 0]
             for _ in range(int(seconds / 0.25))]
    return np.concatenate(notes)


def make_caches(root: Path, n_key: int = 8, key_seconds: float = 20.0, n_beat: int = 2,
                beat_seconds: float = 12.0) -> tuple[Path, Path, Path]:
    """Synthetic audio + both feature caches under ``root``; returns (key cache, beat cache, a test WAV)."""
    from musicssl.beat.data import CacheSettings, build_cache
    from musicssl.dsp.cqt import FrontEndConfig
    from musicssl.key.dataset import FeatureCache
    from musicssl.io.tracks import Track

    audio = root / "audio"
    audio.mkdir(parents=True)
    key_files = [write_samples(audio, f"key{i}.wav", melody((5 * i) % 12, key_seconds, i), KEY_SR)
                 for i in range(n_key)]
    cache = FeatureCache(root / "key-cache", FrontEndConfig(hop_length=2048))
    failed = cache.build([Track(path=str(p.resolve())) for p in key_files], progress=False, num_workers=0)
    assert not failed, failed
    beat_files = []
    for i in range(n_beat):
        drums, _ = drum_track(beat_seconds, 100 + 20 * i, seed=i)
        beat_files.append(write_samples(audio, f"beat{i}.wav", 0.5 * drums + 0.4 * chord_track(beat_seconds), BEAT_SR))
    entries = build_cache(beat_files, root / "beat-cache", CacheSettings(max_seconds=beat_seconds, min_seconds=4.0),
                          progress=False)
    assert len(entries) == n_beat
    return root / "key-cache", root / "beat-cache", beat_files[0]


def _python_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def pack_and_run(root: Path, key_cache: Path, beat_cache: Path, minutes: float, name: str,
                 state: Path | None = None) -> Path:
    """``gpu_job pack`` then the packed ``run.sh`` on CPU; returns $OUT."""
    pack = root / f"pack-{name}"
    cmd = [sys.executable, "-m", "musicssl.gpu_job", "pack", "--out", str(pack), "--key-cache", str(key_cache),
           "--beat-cache", str(beat_cache), *[f"--key-set={s}" for s in KEY_SET],
           *[f"--beat-set={s}" for s in BEAT_SET]]
    if state is not None:
        cmd += ["--state", str(state)]
    subprocess.run(cmd, check=True, env=_python_env())
    out = root / f"out-{name}"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MUSICSSL_JOB_START")}
    env["OUT"] = str(out)
    env["PYTHON"] = sys.executable
    proc = subprocess.run(["bash", str(pack / "run.sh"), "--minutes", str(minutes), "--device", "cpu",
                           "--threads", "1"], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"run.sh failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}\n"
                           + ((out / "job.log").read_text()[-6000:] if (out / "job.log").is_file() else ""))
    return out


def check_out(out: Path) -> dict:
    """$OUT holds at most 8 files of at most 16 MiB, both models and both states; returns the report text's facts."""
    files = sorted(p for p in out.iterdir())
    assert len(files) <= 8, files
    assert all(p.is_file() and p.stat().st_size <= 16 * 2 ** 20 for p in files)
    names = {p.name for p in files}
    for required in ("skey.safetensors", "zerons.safetensors", "skey_state.ckpt", "zerons_state.ckpt",
                     "job.log", "metrics.csv", "report.md"):
        assert required in names, (required, names)
    return {"files": sorted(names), "report": (out / "report.md").read_text()}


def load_models(out: Path, wav: Path) -> list:
    """Both exported models load and run through the CLI (``musicssl key|beats --checkpoint``, in this
    process); returns the two JSON results."""
    import contextlib
    import io

    from musicssl.cli.main import main as musicssl

    results = []
    for command, model in (("key", "skey.safetensors"), ("beats", "zerons.safetensors")):
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = musicssl([command, "--checkpoint", str(out / model), "--format", "json", str(wav)])
        if code != 0:
            raise RuntimeError(f"musicssl {command} --checkpoint failed ({code}):\n{stderr.getvalue()[-3000:]}")
        results.append(json.loads(stdout.getvalue()))
    return results


def global_step(state: Path) -> int:
    import torch

    return int(torch.load(str(state), map_location="cpu", weights_only=True)["global_step"])


def curve_steps(out: Path, dest: Path) -> list[int]:
    """``python -m musicssl.gpu_job curve`` on a returned ``$OUT``; the global steps of the models it wrote."""
    subprocess.run([sys.executable, "-m", "musicssl.gpu_job", "curve", str(out), "--out", str(dest)], check=True,
                   env=_python_env(), capture_output=True)
    return sorted(int(p.stem.rsplit("step", 1)[1]) for p in dest.glob("skey_step*.safetensors"))


def rehearse(root: Path, minutes: float = 0.75, resume: bool = False, log=print) -> dict:
    t0 = time.time()
    key_cache, beat_cache, wav = make_caches(root)
    log(f"caches built in {time.time() - t0:.1f} s")
    t1 = time.time()
    out = pack_and_run(root, key_cache, beat_cache, minutes, "1")
    log(f"slot 1: pack + run.sh in {time.time() - t1:.1f} s")
    facts = check_out(out)
    facts["steps"] = [(global_step(out / "skey_state.ckpt"), global_step(out / "zerons_state.ckpt"))]
    load_models(out, wav)
    facts["curve"] = [curve_steps(out, root / "curve-1")]
    assert facts["curve"][0][-1] == facts["steps"][0][0], facts
    if resume:
        out2 = pack_and_run(root, key_cache, beat_cache, minutes, "2", state=out)
        check_out(out2)
        facts["steps"].append((global_step(out2 / "skey_state.ckpt"), global_step(out2 / "zerons_state.ckpt")))
        assert all(b > a for a, b in zip(*facts["steps"])), f"the second slot did not continue: {facts['steps']}"
        load_models(out2, wav)
        facts["curve"].append(curve_steps(out2, root / "curve-2"))
        assert facts["curve"][1][0] > facts["steps"][0][0], f"the second curve repeats the first: {facts['curve']}"
        facts["report2"] = (out2 / "report.md").read_text()
    facts["seconds"] = time.time() - t0
    log(f"rehearsal passed in {facts['seconds']:.1f} s; global steps (S-KEY, ZeroNS) per slot: {facts['steps']}; "
        f"S-KEY curve steps per slot: {facts['curve']}")
    return facts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=0.75, help="run.sh budget per slot")
    p.add_argument("--resume", action="store_true", help="a second slot continues the returned state")
    p.add_argument("--keep", metavar="DIR", help="work here and keep everything (default: a temporary folder)")
    args = p.parse_args(argv)
    if args.keep:
        root = Path(args.keep)
        root.mkdir(parents=True, exist_ok=False)
        facts = rehearse(root, args.minutes, args.resume)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            facts = rehearse(Path(tmp), args.minutes, args.resume)
    print(facts["report"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
