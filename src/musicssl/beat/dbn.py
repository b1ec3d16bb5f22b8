"""Beat decoding with a dynamic Bayesian network (beat-pointer HMM) and Viterbi.

The hidden state is a pair (tempo interval ``d`` in frames, position ``k`` in
the current beat, ``0 <= k < d``), the state space of Krebs, Böck & Widmer
(2015, "An efficient state space model for joint tempo and meter tracking")
restricted to one beat, as in madmom's ``DBNBeatTrackingProcessor``.

* Inside a beat the pointer advances deterministically: ``(d, k) -> (d, k+1)``.
* At the end of a beat ``(d, d-1)`` it jumps to the start of a beat of any
  tempo ``(d', 0)`` with probability proportional to
  ``exp(-transition_lambda * |d'/d - 1|)``: the tempo changes only at beats.
* Observation: the first ``1/observation_lambda`` of each beat are "beat"
  states, scored ``p`` (the activation); the others ``(1-p)/(observation_lambda-1)``.

So every state has one predecessor except the beat starts, which have one per
tempo: Viterbi costs O(states + tempi²) per frame and stores back-pointers
(one byte each up to 256 tempi) only for the beat starts. Long inputs
(``CHECKPOINT_MIN_FRAMES``) are decoded with checkpointed Viterbi: scores saved
every ``CHECKPOINT_BLOCK_FRAMES`` frames, back-pointers recomputed one block at
a time, so memory is O(T) bytes, not O(T x tempi), for the same path. Decoding
runs in numpy; numba speeds it up when it is installed (optional).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from musicssl.errors import ActivationError, ConfigError

try:  # optional acceleration
    import numba as _numba
except Exception:  # pragma: no cover - depends on the environment
    _numba = None

__all__ = [
    "ActivationError",
    "BeatStateSpace",
    "DBNBeatTracker",
    "DBNResult",
    "beats_tempo",
    "decode_beats",
    "tempo_log_prior",
]

_LOG_EPS = 1e-12
#: With ``use_numba=None``, inputs at least this long (frames) use numba.
NUMBA_MIN_FRAMES = 15000
#: Inputs at least this long (frames; 20 min at 62.5 frames/s) are decoded with
#: checkpointed Viterbi: back-pointers of one block of frames at a time.
CHECKPOINT_MIN_FRAMES = 75000
#: Frames per block of the checkpointed Viterbi.
CHECKPOINT_BLOCK_FRAMES = 30000


# --------------------------------------------------------------------------
# state space
# --------------------------------------------------------------------------
def tempo_intervals(min_bpm: float, max_bpm: float, fps: float,
                    num_tempi: int | None = None) -> np.ndarray:
    """Beat intervals in frames (int, ascending) covering ``[min_bpm, max_bpm]``.

    All integer intervals from ``ceil(60*fps/max_bpm)`` to ``floor(60*fps/min_bpm)``
    (so every tempo state lies inside the range; a range narrower than one
    frame keeps the interval nearest its middle); with ``num_tempi`` smaller
    than that count, ``num_tempi`` log-spaced ones.
    """
    lo = max(1, math.ceil(60.0 * fps / max_bpm - 1e-9))
    hi = math.floor(60.0 * fps / min_bpm + 1e-9)
    if hi < lo:  # no integer interval inside the range
        lo = hi = max(1, int(round(60.0 * fps / math.sqrt(min_bpm * max_bpm))))
    intervals = np.arange(lo, hi + 1)
    if num_tempi is None or num_tempi >= len(intervals):
        return intervals
    # Log-spaced, rounded, unique: ask for more points until num_tempi distinct ones.
    n = num_tempi
    chosen = intervals[[0, -1]] if num_tempi >= 2 else intervals[:1]
    while True:
        candidate = np.unique(np.round(np.geomspace(lo, hi, n)).astype(int))
        if len(candidate) > num_tempi:
            break
        chosen = candidate
        if len(candidate) == num_tempi:
            break
        n += 1
    return chosen


@dataclass(frozen=True)
class BeatStateSpace:
    """The (interval, position) states laid out tempo after tempo.

    ``intervals`` (n_tempi,) frames per beat; state ``first[i] + k`` is
    position ``k`` of tempo ``i``; ``last[i] = first[i] + intervals[i] - 1``.
    """

    intervals: np.ndarray
    first: np.ndarray = field(init=False)
    last: np.ndarray = field(init=False)
    state_interval: np.ndarray = field(init=False)
    state_position: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        intervals = np.asarray(self.intervals, dtype=np.int64)
        if intervals.ndim != 1 or len(intervals) == 0 or np.any(intervals < 1):
            raise ConfigError("intervals must be a non-empty 1-D array of positive integers")
        first = np.concatenate([[0], np.cumsum(intervals)[:-1]])
        object.__setattr__(self, "intervals", intervals)
        object.__setattr__(self, "first", first)
        object.__setattr__(self, "last", first + intervals - 1)
        object.__setattr__(self, "state_interval", np.repeat(intervals, intervals))
        object.__setattr__(self, "state_position",
                           np.arange(int(intervals.sum())) - np.repeat(first, intervals))

    @property
    def n_states(self) -> int:
        return int(self.intervals.sum())

    @property
    def n_tempi(self) -> int:
        return len(self.intervals)


def tempo_log_transitions(intervals: np.ndarray, transition_lambda: float) -> np.ndarray:
    """(n_tempi, n_tempi) log P(next tempo j | tempo i) at a beat boundary.

    Rows sum to one: ``exp(-lambda * |d_j / d_i - 1|)`` normalised over ``j``.
    """
    d = np.asarray(intervals, dtype=np.float64)
    ratio = d[None, :] / d[:, None]
    logits = -float(transition_lambda) * np.abs(ratio - 1.0)
    logits -= logits.max(axis=1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def tempo_log_prior(bpm: np.ndarray, centre_bpm: float, octaves: float) -> np.ndarray:
    """Log-normal tempo weight of tempi ``bpm`` (n,): ``-0.5 (log2(bpm/centre) / octaves)^2``
    (0 at the centre; unnormalised, so it costs each beat away from the centre)."""
    return -0.5 * (np.log2(np.asarray(bpm, dtype=np.float64) / centre_bpm) / octaves) ** 2


# --------------------------------------------------------------------------
# Viterbi kernels (numpy and optional numba); identical results
# --------------------------------------------------------------------------
def _bp_dtype(n_tempi: int):
    """Smallest unsigned integer type holding tempo indices ``0 .. n_tempi-1``."""
    return np.uint8 if n_tempi <= 256 else np.uint16 if n_tempi <= 65536 else np.uint32


def _init_numpy(log_init, log_beat0, log_other0, beat_states):
    """Scores (S,) of frame 0: ``log_init`` plus frame 0's observation (numpy kernel's arithmetic)."""
    score = log_init.copy()
    score += log_other0
    score[beat_states] += log_beat0 - log_other0
    return score


def _init_loop(log_init, log_beat0, log_other0, is_beat):
    """Scores (S,) of frame 0, as the numba kernel adds them (one addition per state)."""
    return np.where(is_beat, log_init + log_beat0, log_init + log_other0)


def _advance_numpy(score, log_beat, log_other, beat_states, first, last, log_trans, bp):
    """Viterbi steps over frames (n,) following the frame of ``score`` (S,; overwritten).

    Returns the scores (S,) of the last of them; ``bp[t, j]`` (n, n_tempi) is the
    tempo whose beat end led to the start of tempo ``j`` at frame ``t``; every
    other state has the deterministic predecessor s-1.
    """
    n_tempi = len(first)
    new = np.empty_like(score)
    for t in range(len(log_beat)):
        new[1:] = score[:-1]
        cand = score[last][:, None] + log_trans          # (from, to)
        best = np.argmax(cand, axis=0)
        bp[t] = best
        new[first] = cand[best, np.arange(n_tempi)]
        new += log_other[t]
        new[beat_states] += log_beat[t] - log_other[t]
        score, new = new, score
    return score


def _advance_loop(score, log_beat, log_other, is_beat, first, last, log_trans, bp):  # pragma: no cover - compiled
    """:func:`_advance_numpy` as loops, for numba."""
    n_tempi = first.shape[0]
    n_states = score.shape[0]
    new = np.empty(n_states)
    for t in range(log_beat.shape[0]):
        lb = log_beat[t]
        lo = log_other[t]
        for s in range(1, n_states):
            new[s] = score[s - 1] + (lb if is_beat[s] else lo)
        for j in range(n_tempi):
            best_i = 0
            best_v = -np.inf
            for i in range(n_tempi):
                v = score[last[i]] + log_trans[i, j]
                if v > best_v:
                    best_v = v
                    best_i = i
            bp[t, j] = best_i
            new[first[j]] = best_v + lb  # a beat start is always a beat state
        score, new = new, score
    return score


_advance_numba = None


def _disable_numba() -> None:
    global _advance_numba
    _advance_numba = False


def _numba_ready() -> bool:
    """True when the numba kernel is already compiled in this process."""
    return bool(_advance_numba) and bool(getattr(_advance_numba, "signatures", None))


def _get_numba_kernel():
    global _advance_numba
    if _advance_numba is None and _numba is not None:
        try:
            _advance_numba = _numba.njit(cache=True, nogil=True)(_advance_loop)
        except Exception:  # pragma: no cover
            _advance_numba = False
    return _advance_numba or None


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------
@dataclass
class DBNResult:
    """Decoded beats.

    ``beats`` (n,) seconds; ``beat_frames`` (n,) frame indices; ``tempo`` BPM
    from the inter-beat intervals near their median (:func:`beats_tempo`;
    ``None`` with fewer than two beats);
    ``log_probability`` of the best state path (``None`` when nothing was decoded);
    ``path_intervals`` / ``path_positions`` (T,) the decoded states (-1 outside
    the decoded span).
    """

    beats: np.ndarray
    beat_frames: np.ndarray
    tempo: float | None
    log_probability: float | None
    fps: float
    path_intervals: np.ndarray = field(repr=False)
    path_positions: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class DBNBeatTracker:
    """Beat-pointer DBN decoder of a frame-wise beat activation in [0, 1] (immutable).

    ``state_space`` (:class:`BeatStateSpace`) and ``log_transitions``
    (n_tempi, n_tempi) are derived from the parameters below.

    Parameters (defaults of SPEC §2.4 / madmom):
      fps: activation frame rate (frames per second).
      min_bpm, max_bpm: tempo range.
      num_tempi: number of tempo states (None: every integer interval).
      transition_lambda: tempo-change penalty at beat boundaries (higher = steadier).
      observation_lambda: a beat's first ``1/observation_lambda`` are beat states.
      correct: move each beat to the activation peak inside its beat-state span.
      threshold: leading/trailing frames with activation <= threshold are not
        decoded; nothing above it -> no beats (silence).
      prior_bpm: centre (BPM) of a log-normal tempo prior, or None (no prior):
        each beat that starts at tempo ``b`` adds
        ``-0.5 * (log2(b / prior_bpm) / prior_octaves) ** 2`` to the path's log
        score (librosa's tempo prior: 120 BPM, one octave). It pulls ambiguous
        activations (an onset envelope, a flat output) towards common tempi
        instead of the top of the range, where beat states are densest.
      prior_octaves: standard deviation of that prior, in octaves.
      use_numba: True/False: the compiled (numba) / numpy kernel (same results);
        None: numba for inputs of ``NUMBA_MIN_FRAMES`` frames or more, or once
        it is compiled in this process (its ~1 s start-up costs more than
        numpy takes on a short clip).
    """

    fps: float = 62.5
    min_bpm: float = 55.0
    max_bpm: float = 215.0
    num_tempi: int | None = None
    transition_lambda: float = 100.0
    observation_lambda: float = 16.0
    correct: bool = True
    threshold: float = 0.0
    prior_bpm: float | None = None
    prior_octaves: float = 1.0
    use_numba: bool | None = None

    def __post_init__(self) -> None:
        def positive(name: str) -> None:
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be a positive finite number, got {value!r}")

        for name in ("fps", "min_bpm", "max_bpm", "transition_lambda", "prior_octaves"):
            positive(name)
        if self.prior_bpm is not None:
            positive("prior_bpm")
        if self.min_bpm >= self.max_bpm:
            raise ConfigError(f"min_bpm ({self.min_bpm}) must be below max_bpm ({self.max_bpm})")
        if not isinstance(self.observation_lambda, numbers.Real) or not (self.observation_lambda > 1):
            raise ConfigError(f"observation_lambda must be > 1, got {self.observation_lambda!r}")
        if self.num_tempi is not None and (not isinstance(self.num_tempi, numbers.Integral)
                                           or self.num_tempi < 1):
            raise ConfigError(f"num_tempi must be a positive integer or None, got {self.num_tempi!r}")
        if not (0.0 <= float(self.threshold) < 1.0):
            raise ConfigError(f"threshold must be in [0, 1), got {self.threshold!r}")
        if 60.0 * self.fps / self.max_bpm < 1.0:
            raise ConfigError(f"max_bpm {self.max_bpm} is above one beat per frame at fps {self.fps}")
        # Derived model (the parameters are frozen, so it stays consistent with them).
        ss = BeatStateSpace(
            tempo_intervals(self.min_bpm, self.max_bpm, self.fps,
                            None if self.num_tempi is None else int(self.num_tempi)))
        is_beat = ss.state_position < ss.state_interval / float(self.observation_lambda)
        is_beat[ss.first] = True  # position 0 is always a beat state
        object.__setattr__(self, "state_space", ss)
        log_trans = tempo_log_transitions(ss.intervals, self.transition_lambda)
        if self.prior_bpm is not None:
            log_trans = log_trans + tempo_log_prior(60.0 * self.fps / ss.intervals, self.prior_bpm,
                                                    self.prior_octaves)[None, :]
        object.__setattr__(self, "log_transitions", log_trans)
        object.__setattr__(self, "_is_beat", is_beat)
        object.__setattr__(self, "_beat_states", np.flatnonzero(is_beat))

    # ---------------------------------------------------------------- helpers
    def _want_numba(self, n_frames: int) -> bool:
        if self.use_numba is None:  # auto: loading/compiling numba costs ~1 s once
            return n_frames >= NUMBA_MIN_FRAMES or _numba_ready()
        return bool(self.use_numba)

    @property
    def bpm_grid(self) -> np.ndarray:
        """The tempi (BPM, descending) of the tempo states."""
        return 60.0 * self.fps / self.state_space.intervals

    def _check_activation(self, activation) -> np.ndarray:
        """The activation as a 1-D float32 or float64 array (no copy of a float32 one)."""
        act = np.asarray(activation)
        if act.dtype not in (np.float32, np.float64):
            act = act.astype(np.float64)
        if act.ndim == 2 and 1 in act.shape:
            act = act.reshape(-1)
        if act.ndim != 1:
            raise ActivationError(f"activation must be 1-D (frames,), got shape {act.shape}")
        if not np.all(np.isfinite(act)):
            bad = int(np.flatnonzero(~np.isfinite(act))[0])
            raise ActivationError(f"activation contains NaN or infinite values (first at frame {bad})")
        if act.size and (act.min() < 0.0 or act.max() > 1.0):
            raise ActivationError(
                f"activation must lie in [0, 1] (a probability), got range "
                f"[{act.min():.4g}, {act.max():.4g}]; apply a sigmoid first")
        return act

    def _empty(self, n_frames: int) -> DBNResult:
        minus = np.full(n_frames, -1, dtype=np.int64)
        return DBNResult(np.zeros(0), np.zeros(0, dtype=np.int64), None, None, self.fps,
                         minus, minus.copy())

    # ---------------------------------------------------------------- decode
    def decode(self, activation) -> DBNResult:
        """Decode a beat activation (T,) in [0, 1] at ``fps`` into beats (seconds)."""
        act = self._check_activation(activation)
        n_frames = len(act)
        above = act > np.float64(self.threshold)   # compared in float64 for float32 input too
        if not above.any():
            return self._empty(n_frames)
        start, stop = int(np.argmax(above)), n_frames - int(np.argmax(above[::-1]))
        del above
        seg = act[start:stop]

        ss = self.state_space
        path, log_prob = self._best_path(seg)
        full_pos = np.full(n_frames, -1, dtype=np.int64)
        full_int = np.full(n_frames, -1, dtype=np.int64)
        positions, intervals = full_pos[start:stop], full_int[start:stop]
        np.take(ss.state_position, path, out=positions)
        np.take(ss.state_interval, path, out=intervals)
        if self.correct:
            frames = self._corrected_beats(seg, self._is_beat[path])
        else:
            frames = np.flatnonzero(positions == 0)
        frames = frames.astype(np.int64) + start

        beats = frames / float(self.fps)
        tempo = beats_tempo(beats)
        if tempo is not None:  # peak correction can move beats by a frame: stay in the state range
            grid = self.bpm_grid
            tempo = float(min(max(tempo, grid.min()), grid.max()))
        return DBNResult(beats, frames, tempo, log_prob, self.fps, full_int, full_pos)

    __call__ = decode

    def _log_observations(self, act: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """log P(activation | beat state), log P(activation | other state), (n,) float64 each."""
        p = np.clip(act.astype(np.float64), _LOG_EPS, 1.0 - _LOG_EPS)
        return np.log(p), np.log((1.0 - p) / (self.observation_lambda - 1.0))

    def _best_path(self, seg: np.ndarray) -> tuple[np.ndarray, float]:
        """Viterbi: the best state path (T,) int32 of an activation (T,) and its log-probability.

        Back-pointers are kept for one block of frames at a time: inputs of
        ``CHECKPOINT_MIN_FRAMES`` or more run in blocks of ``CHECKPOINT_BLOCK_FRAMES``;
        the forward pass saves the scores (S,) at each block start, and the
        backward pass recomputes each block's back-pointers from them, last
        block first. Same arithmetic, hence the same path, as one block.
        """
        ss = self.state_space
        n = len(seg)
        block = max(1, int(CHECKPOINT_BLOCK_FRAMES)) if n >= CHECKPOINT_MIN_FRAMES else n
        kernel = _get_numba_kernel() if self._want_numba(n) else None
        log_init = np.full(ss.n_states, -math.log(ss.n_states))
        log_beat0, log_other0 = (float(x[0]) for x in self._log_observations(seg[:1]))
        bp = np.empty((max(0, min(block, n - 1)), ss.n_tempi), dtype=_bp_dtype(ss.n_tempi))

        def advance(score, a, e):   # Viterbi over frames a..e-1: back-pointers in bp[:e-a]
            log_beat, log_other = self._log_observations(seg[a:e])
            if kernel is not None:
                return kernel(score, log_beat, log_other, self._is_beat, ss.first, ss.last,
                              self.log_transitions, bp[:e - a])
            return _advance_numpy(score, log_beat, log_other, self._beat_states, ss.first, ss.last,
                                  self.log_transitions, bp[:e - a])

        def forward(score, starts):
            saved = []
            for a in starts:
                if len(starts) > 1:
                    saved.append(score.copy())
                score = advance(score, a, min(n, a + block))
            return score, saved

        starts = list(range(1, n, block))
        if kernel is not None:
            try:
                score, saved = forward(_init_loop(log_init, log_beat0, log_other0, self._is_beat), starts)
            except Exception:  # pragma: no cover - e.g. numba cannot compile/cache here
                _disable_numba()
                kernel = None
        if kernel is None:
            score, saved = forward(_init_numpy(log_init, log_beat0, log_other0, self._beat_states), starts)

        path = np.empty(n, dtype=np.int32)
        state = int(np.argmax(score))
        log_prob = float(score[state])
        for i in range(len(starts) - 1, -1, -1):
            a = starts[i]
            e = min(n, a + block)
            if i < len(starts) - 1:  # the last block's back-pointers are still in ``bp``
                advance(saved[i], a, e)
            if saved:
                saved[i] = None
            state = self._trace(path, state, a, e, bp)
        path[0] = state
        return path, log_prob

    def _trace(self, path: np.ndarray, state: int, a: int, e: int, bp: np.ndarray) -> int:
        """Fill ``path[a:e]`` back from ``state`` at frame e-1 with the back-pointers
        ``bp`` (e-a, n_tempi) of frames a..e-1; return the state at frame a-1."""
        ss = self.state_space
        first, last = ss.first, ss.last
        t = e - 1
        while True:
            tempo = int(np.searchsorted(last, state))      # the tempo whose states hold ``state``
            # Walk back inside this beat to its position 0 or to the block start.
            steps = min(state - int(first[tempo]), t - a)
            path[t - steps:t + 1] = np.arange(state - steps, state + 1)
            t -= steps
            state -= steps
            previous = int(last[bp[t - a, tempo]]) if state == first[tempo] else state - 1
            if t == a:
                return previous
            t -= 1
            state = previous

    @staticmethod
    def _corrected_beats(act: np.ndarray, beat_mask: np.ndarray) -> np.ndarray:
        """For each run of beat states on the path, the frame of highest activation."""
        if not beat_mask.any():
            return np.zeros(0, dtype=np.int64)
        m = beat_mask.astype(np.int8)
        edges = np.diff(np.concatenate([[0], m, [0]]))
        starts = np.flatnonzero(edges == 1)
        stops = np.flatnonzero(edges == -1)
        return np.array([s + int(np.argmax(act[s:e])) for s, e in zip(starts, stops)],
                        dtype=np.int64)


def beats_tempo(beats: np.ndarray, tolerance: float = 0.1) -> float | None:
    """Tempo (BPM) of beat times (n,) s: 60 / the mean of the inter-beat intervals
    within ``tolerance`` of their median (the median alone is quantised to whole
    frames). None with fewer than two beats."""
    if len(beats) < 2:
        return None
    ibi = np.diff(np.asarray(beats, dtype=np.float64))
    median = float(np.median(ibi))
    if median <= 0:
        return None
    near = ibi[np.abs(ibi - median) <= tolerance * median]
    return float(60.0 / (near.mean() if near.size else median))


def decode_beats(activation, fps: float = 62.5, **params) -> DBNResult:
    """Convenience: ``DBNBeatTracker(fps=fps, **params).decode(activation)``."""
    return DBNBeatTracker(fps=fps, **params).decode(activation)
