"""ChromaNet: shapes, parameter names and count, minimum length, training-only behaviour."""

from __future__ import annotations

import pytest
import torch

from musicssl.errors import AudioTooShortError, ConfigError
from musicssl.key.model import ChromaNet, count_parameters



def _input(batch: int = 2, frames: int = 200, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, 84, frames, generator=g)


def test_parameter_count_of_released_architecture():
    net = ChromaNet(n_rows=2)
    assert count_parameters(net) == 47_284
    # the fixtures README counts 47 289 state values: + batch-norm running mean/var (2 + 2) and counter (1)
    assert sum(v.numel() for v in net.state_dict().values()) == 47_289
    assert count_parameters(ChromaNet(n_rows=1)) == 47_284 - 4


def test_parameter_names_follow_released_checkpoint():
    names = set(ChromaNet().state_dict())
    for i in range(7):
        for p in ("gamma", "dwconv.weight", "dwconv.bias", "pwconv1.weight", "pwconv1.bias",
                  "pwconv2.weight", "pwconv2.bias"):
            assert f"convnext_blocks.{i}.{p}" in names
        assert f"time_downsampling_blocks.{i}.conv.weight" in names
    assert {"classifier.weight", "classifier.bias", "batch_norm.running_mean",
            "batch_norm.running_var", "batch_norm.num_batches_tracked"} <= names
    assert ChromaNet().state_dict()["classifier.weight"].shape == (2, 3, 1, 1)
    assert not any(k.startswith("batch_norm") for k in ChromaNet(n_rows=1).state_dict())


@pytest.mark.parametrize("n_rows", [1, 2])
def test_output_is_a_distribution(n_rows):
    net = ChromaNet(n_rows=n_rows).eval()
    with torch.inference_mode():
        p = net(_input())
        z = net.logits(_input())
        e = net.embed(_input())
    assert p.shape == (2, 12 * n_rows)
    torch.testing.assert_close(p.sum(-1), torch.ones(2))
    assert (p >= 0).all()
    torch.testing.assert_close(torch.softmax(z, -1), p)
    assert e.shape == (2, 3, 12)


def test_examples_are_independent_in_eval_mode():
    net = ChromaNet().eval()
    x = _input(batch=3)
    with torch.inference_mode():
        together = net(x)
        alone = torch.cat([net(x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


def test_any_length_from_min_frames():
    net = ChromaNet().eval()
    assert net.min_frames == 128
    with torch.inference_mode():
        assert net(_input(1, 128)).shape == (1, 24)
        assert net(_input(1, 1001)).shape == (1, 24)
        with pytest.raises(AudioTooShortError):
            net(_input(1, 127))
        with pytest.raises(ConfigError):
            net(torch.rand(1, 1, 99, 200))


def test_invalid_architecture():
    with pytest.raises(ConfigError):
        ChromaNet(n_rows=3)
    with pytest.raises(ConfigError):
        ChromaNet(channels=(2, 3), kernels=(7,))
    with pytest.raises(ConfigError):
        ChromaNet(n_bins=80)


def test_stochastic_depth_only_in_training():
    net = ChromaNet(drop_path=0.5)
    x = _input(batch=8)
    net.eval()
    with torch.no_grad():
        a, b = net.logits(x), net.logits(x)
    torch.testing.assert_close(a, b)
    net.train()
    torch.manual_seed(0)
    with torch.no_grad():
        c = net.embed(x)
        d = net.embed(x)
    assert not torch.allclose(c, d)


def test_gradients_flow():
    net = ChromaNet().train()
    p = net(_input(batch=4))
    loss = -(p[:, 0].log()).mean()
    loss.backward()
    assert all(param.grad is not None for param in net.parameters())
    assert net.convnext_blocks[0].dwconv.weight.grad.abs().sum() > 0


def test_architecture_roundtrip():
    net = ChromaNet(n_rows=1, channels=(2, 4), kernels=(3, 5))
    arch = net.architecture()
    assert arch["model"] == "chromanet"
    rebuilt = ChromaNet(**{k: v for k, v in arch.items() if k != "model"})
    rebuilt.load_state_dict(net.state_dict())
    assert rebuilt.min_frames == 4


def test_memory_lean_inference_equals_plain_forward(monkeypatch):
    from musicssl.key import model as model_module

    net = ChromaNet().eval()
    x = _input(batch=2, frames=300)
    plain = net(x)  # grad enabled: the plain path
    monkeypatch.setattr(model_module, "_HIDDEN_BUDGET", 5000)  # force many small MLP chunks
    with torch.inference_mode():
        lean = net(x)
    torch.testing.assert_close(lean, plain.detach(), rtol=1e-5, atol=1e-6)
