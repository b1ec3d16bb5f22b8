"""ZeroNS networks and front end: shapes, frame rate, value ranges, configuration errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicssl.beat.frontend import FPS, ZeroNSFrontEnd
from musicssl.beat.model import SPEC_CHANNELS, SPEC_KERNELS, ZeroNS, ZeroNSNet, combine_activations
from musicssl.errors import ConfigError

TINY = 1 / 16


def test_spec_layers_at_full_width():
    net = ZeroNSNet(width=1.0)
    convs = [m for m in net.body if isinstance(m, torch.nn.Conv2d)]
    assert [tuple(c.kernel_size) for c in convs] == list(SPEC_KERNELS)
    assert [c.out_channels for c in convs] == list(SPEC_CHANNELS)
    pools = [m.kernel_size for m in net.body if isinstance(m, torch.nn.MaxPool2d)]
    assert pools == [(3, 1), (4, 1), (8, 1)]
    drops = [m.p for m in net.body if isinstance(m, torch.nn.Dropout)]
    assert drops == [0.1] * 8
    assert net.head.kernel_size == (1, 1) and net.head.out_channels == 1


def test_output_one_value_per_frame_in_unit_interval():
    torch.manual_seed(0)
    model = ZeroNS(width=TINY).eval()
    x = torch.randn(3, 1, 96, 37)
    p, a = model(x, x * 0.5)
    assert p.shape == (3, 37) and a.shape == (3, 37)
    assert torch.all((p > 0) & (p < 1)) and torch.all((a > 0) & (a < 1))


def test_width_scales_channels():
    assert ZeroNSNet(width=0.125).channels == (8, 8, 16, 16, 32, 32, 16, 16)


def test_combine_max_and_mean():
    p = torch.tensor([[0.1, 0.9]])
    a = torch.tensor([[0.5, 0.3]])
    assert torch.allclose(combine_activations(p, a, "max"), torch.tensor([[0.5, 0.9]]))
    assert torch.allclose(combine_activations(p, a, "mean"), torch.tensor([[0.3, 0.6]]))
    with pytest.raises(ConfigError):
        combine_activations(p, a, "min")


def test_bad_configuration_and_input():
    with pytest.raises(ConfigError):
        ZeroNSNet(n_bins=84)  # 84 is not reduced to 1 by pooling 3*4*8
    with pytest.raises(ConfigError):
        ZeroNSNet(width=TINY).logits(torch.zeros(1, 1, 90, 10))


def test_frontend_frame_rate_and_pitch():
    fe = ZeroNSFrontEnd()
    assert fe.fps == FPS == 62.5
    sr = 16000
    t = np.arange(2 * sr) / sr
    x = torch.from_numpy(np.sin(2 * np.pi * 440.0 * t).astype(np.float32))
    spec = fe(x[None])
    assert spec.shape == (1, 1, 96, 2 * sr // 256 + 1)
    # 440 Hz is A4: bin round(12 * log2(440 / 16.35)) = 57 above C0
    assert int(spec[0, 0, :, 60].argmax()) == 57
    assert float(spec.min()) >= np.log(1e-9) - 1e-3  # log(|X| + 1e-9) floor
