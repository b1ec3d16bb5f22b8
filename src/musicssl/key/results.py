"""What a key estimate is: :class:`KeyResult` (24 probabilities, key, confidence,
"no key"), local keys over windows and the segments between key changes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from musicssl.errors import ConfigError
from musicssl.key.features import KeyFeatures, frame_spans
from musicssl.keys import KEY_LABELS, Key, format_key


@dataclass
class LocalKey:
    """Key of one analysis window: ``start_s``/``end_s`` in seconds."""

    start_s: float
    end_s: float
    key: Key
    confidence: float
    probabilities: np.ndarray  # (24,) canonical order

    def to_dict(self, notation: str = "standard", probabilities: bool = False) -> dict:
        out = {"start": round(self.start_s, 3), "end": round(self.end_s, 3),
               "key": format_key(self.key, notation), "confidence": round(float(self.confidence), 6)}
        if probabilities:
            out["probabilities"] = probabilities_dict(self.probabilities)
        return out


@dataclass
class KeySegment:
    """A stretch of time over which the local key does not change."""

    start_s: float
    end_s: float
    key: Key

    def to_dict(self, notation: str = "standard") -> dict:
        return {"start": round(self.start_s, 3), "end": round(self.end_s, 3), "key": format_key(self.key, notation)}


@dataclass
class KeyResult:
    """Global key of a recording, its 24 probabilities and optional local keys.

    ``confidence`` is the top-1 minus the top-2 probability, in [0, 1].
    ``mode_estimated`` is False for key-signature-only (STONE) models.
    ``no_key``: the recording has no key (noise, percussion, silence; see
    :mod:`musicssl.key.tonality`); ``key`` is then still the most probable key,
    but records print ``"key": null`` with ``no_key_reason``.
    ``tuning_cents``: the recording's deviation from A = 440 Hz in cents (see
    :func:`compute_features`); None when not measured.
    """

    key: Key
    probabilities: np.ndarray  # (24,) canonical order
    confidence: float
    duration_s: float
    local: list[LocalKey] | None = None
    path: str | None = None
    mode_estimated: bool = True
    estimator: str = ""
    tuning_cents: float | None = None
    no_key_reason: str | None = None

    @property
    def no_key(self) -> bool:
        """True when the recording has no key (:attr:`no_key_reason` says why)."""
        return self.no_key_reason is not None

    @property
    def segments(self) -> list[KeySegment] | None:
        """Local windows merged into segments with boundaries where the key changes.

        Boundaries are placed halfway between the centres of consecutive
        windows that disagree.
        """
        if not self.local:
            return None
        segments: list[KeySegment] = []
        for i, window in enumerate(self.local):
            centre = (window.start_s + window.end_s) / 2
            if segments and segments[-1].key == window.key:
                continue
            if segments:
                previous = self.local[i - 1]
                boundary = ((previous.start_s + previous.end_s) / 2 + centre) / 2
                segments[-1].end_s = boundary
                segments.append(KeySegment(boundary, self.duration_s, window.key))
            else:
                segments.append(KeySegment(0.0, self.duration_s, window.key))
        return segments

    def top(self, k: int = 3) -> list[tuple[Key, float]]:
        """The ``k`` most probable keys with their probabilities."""
        order = np.argsort(-self.probabilities)[:k]
        return [(Key.from_index(int(i)), float(self.probabilities[i])) for i in order]

    def to_dict(self, notation: str = "standard", probabilities: bool = True, local: bool = True) -> dict:
        """JSON-ready dict: path, key, confidence, probabilities (24 mir_eval labels), local, segments."""
        out: dict = {}
        if self.path is not None:
            out["path"] = self.path
        out["key"] = None if self.no_key else format_key(self.key, notation)
        out["confidence"] = round(float(self.confidence), 6)
        if self.no_key:
            out["no_key"] = True
            out["no_key_reason"] = self.no_key_reason
        out["duration"] = round(float(self.duration_s), 3)
        if self.tuning_cents is not None:
            out["tuning_cents"] = round(float(self.tuning_cents), 1)
        if probabilities:
            out["probabilities"] = probabilities_dict(self.probabilities)
        if local and self.local is not None:
            out["local"] = [w.to_dict(notation) for w in self.local]
            out["segments"] = [s.to_dict(notation) for s in self.segments or []]
        return out


def probabilities_dict(probabilities: np.ndarray) -> dict[str, float]:
    """``{"C major": p, ..., "B minor": p}`` in canonical order."""
    return {label: round(float(p), 6) for label, p in zip(KEY_LABELS, probabilities)}


def result_from_probabilities(probabilities: np.ndarray, duration_s: float, **kwargs) -> KeyResult:
    """A :class:`KeyResult` for canonical ``probabilities`` (24,)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    order = np.argsort(-probabilities)
    confidence = float(probabilities[order[0]] - probabilities[order[1]])
    return KeyResult(Key.from_index(int(order[0])), probabilities, confidence, float(duration_s), **kwargs)


def local_keys_of(features: KeyFeatures, window_probabilities, window_s: float = 20.0,
                  hop_s: float = 5.0, with_chroma: bool = False) -> list[LocalKey]:
    """Local keys of ``features`` for any estimator: ``window_probabilities(list of
    equal-length CQT magnitudes (F, win)) -> (len, 24)`` scores each window
    (``with_chroma``: ``window_probabilities(magnitudes, chromas (12, win))``).

    Windows are ``window_s`` long every ``hop_s`` seconds, the last one flush
    with the end; a track shorter than one window gives one window over all of it.
    A :class:`~musicssl.dsp.cqt.FileCQT` magnitude is read chunk by chunk.
    """

    if window_s <= 0 or hop_s <= 0:
        raise ConfigError("window and hop must be positive")
    fps = features.frames_per_second
    n = features.magnitude.shape[-1]
    win = min(n, max(1, int(round(window_s * fps))))
    hop = max(1, int(round(hop_s * fps)))
    starts = list(range(0, n - win + 1, hop))
    if starts[-1] + win < n:  # cover the end
        starts.append(n - win)
    windows = frame_spans(features.magnitude, [(s, s + win) for s in starts])
    probs = []
    for i in range(0, len(starts), 64):
        group = [next(windows) for _ in starts[i:i + 64]]
        if with_chroma:
            probs.append(window_probabilities(group, [features.chroma[:, s:s + win] for s in starts[i:i + 64]]))
        else:
            probs.append(window_probabilities(group))
    probs = np.concatenate(probs)
    out = []
    for s, p in zip(starts, probs):
        r = result_from_probabilities(p, 0.0)
        out.append(LocalKey(s / fps, (s + win) / fps, r.key, r.confidence, p))
    return out
