"""Catalog inference on Ray (``musicssl key --ray``): a local cluster on 127.0.0.1
(head + one worker node, one CPU each) started by the test.

Same keys as the local run, error records for bad files, one JSONL file per shard
written atomically, a rerun with ``--skip-existing`` skips what is done, and a
worker that dies mid-task loses nothing (Ray retries the task).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from musicssl.cli.main import main  # noqa: E402

N_CLIPS = 5


def _ray_command() -> str:
    return str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_nodes(temp_dir: str) -> None:
    """Kill the processes of our two nodes only: those whose command line names our temp dir."""
    import signal
    import time

    for attempt in range(2):
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if temp_dir in cmdline:
                try:
                    os.kill(int(proc.name), signal.SIGTERM if attempt == 0 else signal.SIGKILL)
                except OSError:
                    pass
        time.sleep(2)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head + one worker node on 127.0.0.1 (``ray start``), 1 CPU each; this process is the driver.
    Yields the address."""
    import subprocess
    import tempfile

    temp_dir = tempfile.mkdtemp(prefix="musicssl-ray-")         # short: Ray's socket paths are limited
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    try:
        subprocess.run([_ray_command(), "start", "--head", f"--port={port}", f"--temp-dir={temp_dir}",
                        "--include-dashboard=false", *common], env=env, check=True, capture_output=True,
                       timeout=120)
        subprocess.run([_ray_command(), "start", f"--address={address}", *common], env=env, check=True,
                       capture_output=True, timeout=120)
        ray.init(address=address, log_to_driver=False)
        assert ray.cluster_resources().get("CPU") == 2
        yield address
    finally:
        ray.shutdown()
        _stop_nodes(temp_dir)


@pytest.fixture(scope="module")
def clips(dev_synth, tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("catalog")
    chosen = sorted((dev_synth / "audio").glob("*.ogg"))[:N_CLIPS]
    for clip in chosen:
        (folder / clip.name).symlink_to(clip)
    (folder / "zz_broken.wav").write_bytes(b"RIFF nonsense")
    return sorted(str(p) for p in folder.iterdir())


def _records(folder: Path) -> dict[str, dict]:
    out = {}
    for shard in sorted(folder.glob("part-*.jsonl")):
        for line in shard.read_text().splitlines():
            record = json.loads(line)
            out[record["path"]] = record
    return out


def test_key_on_ray_equals_local_and_resumes(cluster, clips, tmp_path, capsys):
    local = tmp_path / "local.jsonl"
    assert main(["key", *clips, "-o", str(local), "--no-progress"]) == 1        # one bad file
    expected = {r["path"]: r for r in map(json.loads, local.read_text().splitlines())}

    shards = tmp_path / "shards"
    assert main(["key", *clips, "--ray", cluster, "-o", str(shards), "--shard-size", "2"]) == 1
    got = _records(shards)
    assert sorted(p.name for p in shards.iterdir()) == ["part-00000.jsonl", "part-00001.jsonl",
                                                        "part-00002.jsonl"]      # no journals left
    assert set(got) == set(expected)
    for path, record in expected.items():
        assert got[path].get("key") == record.get("key")
        assert got[path].get("error") == record.get("error")
        if "probabilities" in record:
            assert max(abs(got[path]["probabilities"][k] - v) for k, v in record["probabilities"].items()) < 1e-5
            assert got[path]["tuning_cents"] == record["tuning_cents"]
    assert got[clips[-1]]["error"]                                              # the broken file

    before = {p.name: p.stat().st_mtime_ns for p in shards.iterdir()}
    capsys.readouterr()
    assert main(["key", *clips, "--ray", cluster, "-o", str(shards), "--shard-size", "2",
                 "--skip-existing"]) == 1
    err = capsys.readouterr().err
    assert f"{N_CLIPS} of {N_CLIPS + 1} files already" in err and "1 files analysed" in err
    after = {p.name: p.stat().st_mtime_ns for p in shards.iterdir()}
    assert after["part-00000.jsonl"] == before["part-00000.jsonl"]              # complete shard untouched
    assert _records(shards).keys() == got.keys()


class _DieOnce:
    """``prepare`` that kills its worker process the first time it sees ``victim``."""

    def __init__(self, prepare, victim: str, marker: str):
        self.prepare, self.victim, self.marker = prepare, victim, marker

    def __call__(self, path: str):
        if path == self.victim and not os.path.exists(self.marker):
            Path(self.marker).write_text("killed")
            os._exit(1)
        return self.prepare(path)


def _make_finish():
    from musicssl.key.estimator import TemplateKeyEstimator

    estimator = TemplateKeyEstimator("krumhansl")

    def finish(items):
        results = estimator.estimate_features([payload for _, payload in items])
        return [{"path": path, "key": str(r.key)} for (path, _), r in zip(items, results)]
    return finish


def test_a_killed_worker_loses_nothing(cluster, clips, tmp_path):
    from ray import cloudpickle

    from musicssl.distributed import run_ray_batch
    from musicssl.key.features import compute_features

    cloudpickle.register_pickle_by_value(sys.modules[__name__])   # the workers cannot import this file
    marker = tmp_path / "killed"
    good = clips[:-1]
    prepare = _DieOnce(functools.partial(compute_features, tuning="off"), good[1], str(marker))
    summary = run_ray_batch(good, prepare, _make_finish, tmp_path / "out", shard_size=10, batch_size=2)
    assert marker.read_text() == "killed"                       # a worker did die
    records = _records(tmp_path / "out")
    assert set(records) == set(good) and summary.failed == 0 and summary.analysed == len(good)
    assert all("key" in r for r in records.values())
