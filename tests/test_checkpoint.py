"""Checkpoints: project format round trip, safe import of released .pt files, refusals."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from musicssl.key.checkpoint import convert_skey_checkpoint, IMPORTED_SKEY_CALIBRATION, load_key_model, LoadedKeyModel, read_metadata, save_key_model
from musicssl.errors import CheckpointError
from musicssl.dsp.cqt import CQT, FrontEndConfig, KEY_FRONTEND
from musicssl.key.model import ChromaNet



def _input(frames: int = 160) -> torch.Tensor:
    return torch.rand(2, 1, 84, frames, generator=torch.Generator().manual_seed(1))


def _trained_looking(n_rows: int = 2) -> ChromaNet:
    torch.manual_seed(n_rows)
    net = ChromaNet(n_rows=n_rows)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
        if net.batch_norm is not None:
            net.batch_norm.running_mean.copy_(torch.tensor([0.3, -0.2]))
            net.batch_norm.running_var.copy_(torch.tensor([2.0, 0.5]))
    return net.eval()


def _fake_release(path: Path, n_rows: int = 2, extra: dict | None = None) -> ChromaNet:
    """A file laid out like the released S-KEY/STONE checkpoints (numpy scalars included)."""
    net = _trained_looking(n_rows)
    cqt = CQT()
    stone = {"hcqt.lowpass_filter": cqt.lowpass.view(1, 1, -1).clone(),
             "hcqt.lenghts": cqt.bin_scale.pow(2).clone()}
    for i in range(cqt.n_octaves):
        stone[f"hcqt.cqt_kernels_real_{i}"] = cqt.kernels_real[:, None].clone()
        stone[f"hcqt.cqt_kernels_imag_{i}"] = cqt.kernels_imag[:, None].clone()
    stone.update({f"chromanet.{k}": v for k, v in net.state_dict().items()})
    data = {"stone": stone, "loss_fn": {}, "optimizer": {"state": {}, "param_groups": []},
            "circle_type": None, "epoch": 3, "val_loss": np.float64(1.25),
            "gin_info": ["HarmonicVQT.harmonics = [1]", "HarmonicVQT.fmin = 27.5",
                         "HarmonicVQT.n_bins = 99", "Stone.out_channels = [2, 3, 40, 40, 30, 10, 3]",
                         "Stone.kernels = [7, 7, 7, 7, 7, 5, 5]", "Stone.n_bins = 84",
                         "Stone.temperature = 1"],
            "audio": {"sr": 22050, "dur": 15}}
    data.update(extra or {})
    torch.save(data, path)
    return net


def test_roundtrip_project_format(tmp_path):
    net = _trained_looking()
    cal = {"n_rows": 2, "row_modes": ["minor", "major"], "row_offsets": [2, 5]}
    path = save_key_model(tmp_path / "m.safetensors", net, KEY_FRONTEND, calibration=cal,
                          provenance={"trained_on": "unit test"})
    assert path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary left behind
    loaded = load_key_model(path)
    assert isinstance(loaded, LoadedKeyModel)
    assert loaded.source_format == "musicssl-key"
    assert loaded.frontend_config == KEY_FRONTEND
    assert loaded.calibration == cal
    assert loaded.provenance == {"trained_on": "unit test"}
    assert not loaded.model.training
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(_input()), net(_input()), rtol=0, atol=0)
    meta = read_metadata(path)
    assert meta["format_version"] == 1 and meta["architecture"]["n_rows"] == 2


def test_roundtrip_stone_12_and_overwrite(tmp_path):
    net = _trained_looking(n_rows=1)
    path = tmp_path / "stone.safetensors"
    save_key_model(path, _trained_looking(), KEY_FRONTEND)
    save_key_model(path, net, KEY_FRONTEND.to_dict())  # overwrite, config as a dict
    loaded = load_key_model(path)
    assert loaded.model.n_rows == 1 and loaded.calibration is None
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(_input()), net(_input()))


def test_import_released_layout(tmp_path):
    src = tmp_path / "skey.pt"
    net = _fake_release(src)
    loaded = load_key_model(src)
    assert loaded.source_format == "skey-pt"
    assert loaded.calibration is None
    assert loaded.frontend_config == KEY_FRONTEND
    assert loaded.provenance["epoch"] == 3 and loaded.provenance["val_loss"] == 1.25
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(_input()), net(_input()))
    dst = convert_skey_checkpoint(src, tmp_path / "skey.safetensors", calibration=IMPORTED_SKEY_CALIBRATION)
    again = load_key_model(dst)
    assert again.source_format == "musicssl-key"
    assert again.calibration == IMPORTED_SKEY_CALIBRATION
    assert again.provenance["source"] == "skey.pt"
    with torch.inference_mode():
        torch.testing.assert_close(again.model(_input()), net(_input()))


def test_import_stone_12_layout(tmp_path):
    src = tmp_path / "stone.pt"
    net = _fake_release(src, n_rows=1)
    loaded = load_key_model(src)
    assert loaded.model.n_rows == 1
    with torch.inference_mode():
        assert loaded.model(_input()).shape == (2, 12)
        torch.testing.assert_close(loaded.model(_input()), net(_input()))


def test_import_rejects_inconsistent_release(tmp_path):
    src = tmp_path / "bad.pt"
    _fake_release(src, extra={"gin_info": ["Stone.out_channels = [2, 3, 40, 40, 30, 10, 4]"]})
    with pytest.raises(CheckpointError, match="out_channels"):
        load_key_model(src)
    src2 = tmp_path / "badcqt.pt"
    _fake_release(src2)
    data = torch.load(src2, weights_only=False)
    data["stone"]["hcqt.cqt_kernels_real_3"] = data["stone"]["hcqt.cqt_kernels_real_3"] * 1.01
    torch.save(data, src2)
    with pytest.raises(CheckpointError, match="CQT buffer"):
        load_key_model(src2)


def test_import_rejects_first_stone_release_layout(tmp_path):
    src = tmp_path / "stone_v1.pt"
    net = _trained_looking(n_rows=1)
    stone = {f"chromanet.{k}": v for k, v in net.state_dict().items()}
    stone["chromanet.convnext_blocks.0.norm.weight"] = torch.ones(84, 2)
    torch.save({"stone": stone}, src)
    with pytest.raises(CheckpointError, match="per-frame LayerNorm"):
        load_key_model(src)


class _Exploit:
    """Unpickling this would run a shell command that creates a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_torch_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"stone": {}, "payload": _Exploit(marker)}, evil)
    with pytest.raises(CheckpointError, match="refused"):
        load_key_model(evil)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_raw_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned2"
    evil = tmp_path / "evil.pkl"
    with open(evil, "wb") as f:
        pickle.dump(_Exploit(marker), f)
    with pytest.raises(CheckpointError):
        load_key_model(evil)
    assert not marker.exists()


def test_unknown_and_missing_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_key_model(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(os.urandom(1000))
    with pytest.raises(CheckpointError):
        load_key_model(junk)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(3)}}, other)
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        load_key_model(other)
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, str(plain))
    with pytest.raises(CheckpointError, match="not a musicssl-key"):
        load_key_model(plain)
    future = tmp_path / "future.safetensors"
    save_file({"w": torch.zeros(3)}, str(future), metadata={"format": "musicssl-key", "format_version": "9"})
    with pytest.raises(CheckpointError, match="format_version"):
        load_key_model(future)


def test_weights_not_fitting_architecture(tmp_path):
    from safetensors.torch import save_file
    import json

    path = tmp_path / "mismatch.safetensors"
    state = {k: v.contiguous() for k, v in ChromaNet(n_rows=1).state_dict().items()}
    meta = {"format": "musicssl-key", "format_version": "1",
            "architecture": json.dumps(ChromaNet(n_rows=2).architecture()),
            "frontend": json.dumps(KEY_FRONTEND.to_dict()), "calibration": "null", "provenance": "{}"}
    save_file(state, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_key_model(path)


def test_released_checkpoint_imports(shared_fixtures):
    loaded = load_key_model(shared_fixtures / "skey.pt")
    assert loaded.source_format == "skey-pt"
    assert loaded.model.architecture()["n_rows"] == 2
    assert loaded.model.architecture()["channels"] == [2, 3, 40, 40, 30, 10, 3]
    assert loaded.frontend_config == FrontEndConfig()
    assert loaded.calibration is None
    assert loaded.provenance["epoch"] == 98


def test_generic_model_file_roundtrip(tmp_path):
    from musicssl.io.model_file import load_model_file, save_model_file

    tensors = {"conv.weight": torch.arange(6.0).view(2, 3).t(), "n": torch.tensor(3)}  # non-contiguous ok
    path = save_model_file(tmp_path / "beat.safetensors", tensors, "musicssl-other", 2,
                           {"architecture": {"model": "x", "sizes": [1, 2]}, "note": None})
    loaded, meta = load_model_file(path, "musicssl-other", 2)
    torch.testing.assert_close(loaded["conv.weight"], tensors["conv.weight"])
    assert meta == {"format": "musicssl-other", "format_version": 2,
                    "architecture": {"model": "x", "sizes": [1, 2]}, "note": None}
    with pytest.raises(CheckpointError, match="format_version"):
        load_model_file(path, "musicssl-other", 1)
    with pytest.raises(CheckpointError, match="not a musicssl-key"):
        load_key_model(path)
    with pytest.raises(CheckpointError, match="reserved"):
        save_model_file(tmp_path / "x.safetensors", tensors, "f", 1, {"format": "y"})
