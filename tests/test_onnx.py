"""ONNX export (``musicssl export-onnx``) and onnxruntime inference (``--backend onnx``):
the same probabilities / network outputs as PyTorch to 1e-4.

Exporting runs torch's ONNX exporter (about 10-30 s per model), so each model is
exported once per module.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from musicssl.cli.main import main  # noqa: E402
from musicssl.errors import CheckpointError, ConfigError  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "src" / "musicssl" / "data" / "examples" / "ode_to_joy_d_major.ogg"


@pytest.fixture(scope="module")
def key_onnx(tmp_path_factory) -> Path:
    """The shipped skey-debian model exported through the command."""
    path = tmp_path_factory.mktemp("onnx") / "skey-debian.onnx"
    assert main(["export-onnx", "skey-debian", "-o", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def zerons_onnx(tmp_path_factory) -> Path:
    from musicssl.export import export_onnx

    path, kind = export_onnx("zerons", tmp_path_factory.mktemp("onnx") / "zerons.onnx")
    assert kind == "zerons"
    return path


def _audio_clips(dev_synth_dir: Path | None, n: int = 3) -> list[Path]:
    clips = [EXAMPLE]
    if dev_synth_dir is not None:
        clips += sorted((dev_synth_dir / "audio").glob("*.ogg"))[:n]
    return clips


@pytest.fixture(scope="module")
def clips() -> list[Path]:
    from conftest import DEV_SYNTH

    return _audio_clips(DEV_SYNTH if (DEV_SYNTH / "labels.csv").is_file() else None)


def test_key_metadata_holds_frontend_and_calibration(key_onnx):
    from musicssl.io.model_file import read_onnx_metadata
    from musicssl.key.registry import load_estimator

    meta = read_onnx_metadata(key_onnx)
    torch_estimator = load_estimator("skey-debian", prior="none")
    assert meta["format"] == "musicssl-key-onnx"
    assert meta["frontend"] == torch_estimator.frontend_config.to_dict()
    assert meta["calibration"] == torch_estimator.calibration
    assert meta["architecture"]["model"] == "chromanet"


def test_key_probabilities_equal_torch(key_onnx, clips):
    from musicssl.io.model_file import OnnxNetwork
    from musicssl.key.features import compute_features
    from musicssl.key.registry import load_estimator

    torch_estimator = load_estimator("skey-debian+temperley")
    onnx_estimator = load_estimator(f"{key_onnx}+temperley")
    assert isinstance(onnx_estimator.model, OnnxNetwork)
    features = [compute_features(c, torch_estimator.frontend_config, **torch_estimator.feature_options)
                for c in clips]
    a = torch_estimator.estimate_features(features)
    b = onnx_estimator.estimate_features(features)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.probabilities, y.probabilities, atol=1e-4)
        assert x.key == y.key
    # several lengths in one batch, raw network outputs
    logcqt = np.random.default_rng(0).normal(size=(2, 1, 99, 300)).astype(np.float32)
    import torch

    np.testing.assert_allclose(torch_estimator.native_probabilities(torch.from_numpy(logcqt)),
                               onnx_estimator.native_probabilities(torch.from_numpy(logcqt)), atol=1e-4)


def test_key_command_runs_an_onnx_file(key_onnx, tmp_path):
    out = tmp_path / "keys.jsonl"
    assert main(["key", str(EXAMPLE), "--checkpoint", str(key_onnx), "-o", str(out), "--no-progress"]) == 0
    record = json.loads(out.read_text())
    assert record["key"] in ("D major", "B minor") and "tuning_cents" in record
    assert main(["key", str(EXAMPLE), "--checkpoint", str(key_onnx), "--backend", "torch"]) == 2


def test_zerons_outputs_equal_torch(zerons_onnx, clips):
    from musicssl.beat.estimator import BeatEstimator
    from musicssl.io.model_file import OnnxNetwork, read_onnx_metadata
    from musicssl.io.audio import load_audio

    torch_estimator = BeatEstimator.from_checkpoint()
    onnx_estimator = BeatEstimator.from_checkpoint(zerons_onnx)
    assert isinstance(onnx_estimator.model, OnnxNetwork)
    assert read_onnx_metadata(zerons_onnx)["separator"] == torch_estimator.metadata["separator"]
    assert onnx_estimator.polarity == torch_estimator.polarity
    for clip in clips[:2]:
        x = load_audio(clip, sr=16000)[: 16000 * 20]
        perc, rest = torch_estimator.features(*torch_estimator.separate(x))
        for a, b in zip(torch_estimator.network_outputs(perc, rest), onnx_estimator.network_outputs(perc, rest)):
            np.testing.assert_allclose(a, b, atol=1e-4)
        ra, rb = torch_estimator.estimate(x, 16000), onnx_estimator.estimate(x, 16000)
        np.testing.assert_allclose(ra.beats, rb.beats, atol=1e-6)


def test_backend_onnx_exports_once_into_the_cache(tmp_path, monkeypatch):
    from musicssl.io import model_file as checkpoint

    monkeypatch.setenv("MUSICSSL_CACHE", str(tmp_path))
    source = tmp_path / "model.bin"
    source.write_bytes(b"weights")
    calls = []

    def make():
        calls.append(1)
        return b"onnx bytes"
    assert checkpoint.cached_onnx(source, make) == b"onnx bytes"
    assert checkpoint.cached_onnx(source, make) == b"onnx bytes"
    assert len(calls) == 1 and len(list((tmp_path / "onnx").glob("*.onnx"))) == 1


def test_backend_and_export_errors(tmp_path, key_onnx):
    from musicssl.io.model_file import check_backend
    from musicssl.beat.checkpoint import load_onnx_zerons_model
    from musicssl.export import export_onnx

    assert check_backend("m.onnx", None) == "onnx" and check_backend("m.safetensors", None) == "torch"
    assert check_backend("m.safetensors", "onnx") == "onnx"
    with pytest.raises(ConfigError):
        check_backend("m.onnx", "torch")
    with pytest.raises(ConfigError):
        check_backend("m.safetensors", "tensorrt")
    with pytest.raises(CheckpointError):
        export_onnx("krumhansl", tmp_path / "t.onnx")
    with pytest.raises(CheckpointError):
        load_onnx_zerons_model(key_onnx)             # a key graph is not a beat model
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    assert main(["key", str(EXAMPLE), "--checkpoint", str(bad)]) == 2
    assert main(["export-onnx", "skey-debian", "-o", str(tmp_path / "x.bin")]) == 2
