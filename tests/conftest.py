"""Shared test fixtures: where ../shared is, and small synthetic signals."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MUSICSSL_SHARED", REPO.parent / "shared")).resolve()
FIXTURES = SHARED / "fixtures"
SKEY_CHECKPOINT = FIXTURES / "skey.pt"
SKEY_REFERENCE = FIXTURES / "skey_reference"
DEV_SYNTH = SHARED / "data" / "dev-synth"


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One intra-op torch thread for the whole suite: on a 2-core machine, thread
    contention makes small tensor work much slower (74 s -> 13 s for the CQT tests)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """``../shared/fixtures``; skips the test with a clear message when absent."""
    if not SKEY_CHECKPOINT.is_file():
        pytest.skip(f"released S-KEY fixtures not found at {FIXTURES} (set MUSICSSL_SHARED)")
    return FIXTURES


@pytest.fixture(scope="session")
def dev_synth() -> Path:
    """``../shared/data/dev-synth``; skips when absent."""
    if not (DEV_SYNTH / "labels.csv").is_file():
        pytest.skip(f"dev-synth data not found at {DEV_SYNTH} (set MUSICSSL_SHARED)")
    return DEV_SYNTH


def harmonic_tone(freq_hz: float, duration_s: float, sr: int, n_harmonics: int = 6) -> np.ndarray:
    """A decaying tone with ``n_harmonics`` harmonics, float32 (n,)."""
    t = np.arange(int(duration_s * sr)) / sr
    out = np.zeros_like(t)
    for h in range(1, n_harmonics + 1):
        if h * freq_hz < sr / 2:
            out += np.sin(2 * np.pi * h * freq_hz * t) / h
    return (out * np.exp(-2.0 * t)).astype(np.float32)
