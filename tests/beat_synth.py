"""Synthetic drum / chord / click signals for the ZeroNS tests (16 kHz, float32)."""

from __future__ import annotations

import numpy as np

SR = 16000


def click_times(duration_s: float, bpm: float, start_s: float = 0.25) -> np.ndarray:
    """Beat times (s) of a steady pulse."""
    return np.arange(start_s, duration_s - 0.1, 60.0 / bpm)


def drum_track(duration_s: float, bpm: float, sr: int = SR, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(signal (N,), beat times): kick on odd beats, snare on even ones, noise clicks."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * sr)
    out = np.zeros(n, np.float32)
    t = np.arange(int(0.12 * sr)) / sr
    kick = np.sin(2 * np.pi * (50 * t + 3.3 * (1 - np.exp(-30 * t)))) * np.exp(-25 * t)
    snare = (rng.standard_normal(len(t)) * 0.7 + np.sin(2 * np.pi * 190 * t)) * np.exp(-35 * t)
    beats = click_times(duration_s, bpm)
    for i, b in enumerate(beats):
        s = int(b * sr)
        hit = kick if i % 2 == 0 else snare
        m = min(len(hit), n - s)
        out[s:s + m] += hit[:m]
    return out / np.abs(out).max(), beats


def chord_track(duration_s: float, sr: int = SR, change_s: float = 2.0) -> np.ndarray:
    """Sustained three-note chords with harmonics, changing every ``change_s`` seconds."""
    n = int(duration_s * sr)
    t = np.arange(n) / sr
    out = np.zeros(n)
    roots = (220.0, 196.0, 174.6, 246.9)
    for c in range(int(np.ceil(duration_s / change_s))):
        s, e = int(c * change_s * sr), min(n, int((c + 1) * change_s * sr))
        tt = t[s:e] - t[s]
        for ratio in (1.0, 1.26, 1.5):
            for h in range(1, 5):
                out[s:e] += np.sin(2 * np.pi * h * roots[c % 4] * ratio * tt) / h * np.minimum(1, tt / 0.05)
    return (out / np.abs(out).max()).astype(np.float32)


def click_track(duration_s: float, bpm: float, sr: int = SR) -> tuple[np.ndarray, np.ndarray]:
    """(short broadband clicks (N,), click times)."""
    n = int(duration_s * sr)
    out = np.zeros(n, np.float32)
    rng = np.random.default_rng(1)
    burst = (rng.standard_normal(int(0.02 * sr)) * np.exp(-np.arange(int(0.02 * sr)) / (0.004 * sr))).astype(np.float32)
    times = click_times(duration_s, bpm)
    for b in times:
        s = int(b * sr)
        m = min(len(burst), n - s)
        out[s:s + m] += burst[:m]
    return out / np.abs(out).max(), times


def bar_track(duration_s: float, bpm: float, beats_per_bar: int, first_number: int = 1, sr: int = SR,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(signal (N,), beat times, beat numbers 1..M): a kick on beat 1 of each bar, a noise snare on
    the other beats, and a chord that changes on every bar line; the first beat is numbered
    ``first_number`` (a pickup when it is not 1)."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * sr)
    t = np.arange(int(0.12 * sr)) / sr
    kick = np.sin(2 * np.pi * (50 * t + 3.3 * (1 - np.exp(-30 * t)))) * np.exp(-25 * t)
    snare = (rng.standard_normal(len(t)) * 0.5 + 0.3 * np.sin(2 * np.pi * 190 * t)) * np.exp(-35 * t)
    beats = click_times(duration_s, bpm)
    numbers = (np.arange(len(beats)) + first_number - 1) % beats_per_bar + 1
    drums = np.zeros(n)
    for b, k in zip(beats, numbers):
        s = int(b * sr)
        hit = kick if k == 1 else snare
        m = min(len(hit), n - s)
        drums[s:s + m] += hit[:m]
    tt = np.arange(n) / sr
    roots = (220.0, 196.0, 174.6, 246.9, 164.8)
    bar_index = np.cumsum(numbers == 1)            # bar of each beat (0 for a pickup)
    chords = np.zeros(n)
    edges = np.concatenate([[0], (beats * sr).astype(int), [n]])
    for i in range(len(edges) - 1):
        s, e = edges[i], edges[i + 1]
        root = roots[(bar_index[i - 1] if i else 0) % len(roots)]
        seg = tt[s:e]
        for ratio in (1.0, 1.26, 1.5):
            for h in range(1, 4):
                chords[s:e] += np.sin(2 * np.pi * h * root * ratio * seg) / h
    x = 0.6 * drums / np.abs(drums).max() + 0.4 * chords / np.abs(chords).max()
    return (x / np.abs(x).max()).astype(np.float32), beats, numbers
