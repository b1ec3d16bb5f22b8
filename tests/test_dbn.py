"""The beat-pointer DBN decoder on synthetic activations, scored with mir_eval."""

from __future__ import annotations

import mir_eval
import numpy as np
import pytest

from musicssl.beat import dbn
from musicssl.beat.dbn import (
    ActivationError,
    BeatStateSpace,
    DBNBeatTracker,
    decode_beats,
    tempo_intervals,
    tempo_log_transitions,
)
from musicssl.errors import ConfigError, MusicsslError

FPS = 62.5


def activation_at(times, n_frames: int, fps: float = FPS) -> np.ndarray:
    """Peaks (with a small spread) at ``times`` (s) on a low floor, like a network's
    output: values in [0.01, 0.95], float64 (n_frames,)."""
    act = np.zeros(n_frames)
    idx = np.round(np.asarray(times) * fps).astype(int)
    act[idx[(idx >= 0) & (idx < n_frames)]] = 1.0
    act = np.maximum(act, np.convolve(act, [0.2, 0.5, 1.0, 0.5, 0.2], mode="same"))
    return 0.01 + 0.94 * np.clip(act, 0.0, 1.0)


def f_measure(reference, estimated) -> float:
    return mir_eval.beat.f_measure(mir_eval.beat.trim_beats(np.asarray(reference)),
                                   mir_eval.beat.trim_beats(np.asarray(estimated)))


def beat_grid(bpm: float, duration: float = 30.0, start: float = 0.5) -> np.ndarray:
    return np.arange(start, duration - 0.05, 60.0 / bpm)


@pytest.fixture(scope="module")
def tracker() -> DBNBeatTracker:
    return DBNBeatTracker()


# ------------------------------------------------------------------ accuracy
@pytest.mark.parametrize("bpm", [60, 100, 150, 200])
def test_clean_impulse_train(tracker, bpm):
    ref = beat_grid(bpm)
    result = tracker.decode(activation_at(ref, int(30 * FPS)))
    assert f_measure(ref, result.beats) >= 0.98
    assert result.tempo == pytest.approx(bpm, rel=0.03)
    assert np.isfinite(result.log_probability)
    assert np.all(np.diff(result.beats) > 0)


@pytest.mark.parametrize("bpm", [60, 100, 150, 200])
def test_jittered_beats(tracker, bpm):
    rng = np.random.default_rng(bpm)
    ref = beat_grid(bpm)
    observed = ref + rng.uniform(-0.02, 0.02, len(ref))
    result = tracker.decode(activation_at(observed, int(30 * FPS)))
    assert f_measure(ref, result.beats) >= 0.95


@pytest.mark.parametrize("bpm", [60, 100, 150, 200])
def test_missing_beats_are_filled_in(tracker, bpm):
    rng = np.random.default_rng(100 + bpm)
    ref = beat_grid(bpm)
    keep = rng.random(len(ref)) >= 0.2
    result = tracker.decode(activation_at(ref[keep], int(30 * FPS)))
    assert keep.sum() < len(ref)
    assert f_measure(ref, result.beats) >= 0.9
    assert len(result.beats) >= 0.9 * len(ref)


@pytest.mark.parametrize("bpm", [60, 100, 150, 200])
def test_noisy_activation(tracker, bpm):
    rng = np.random.default_rng(200 + bpm)
    ref = beat_grid(bpm)
    n = int(30 * FPS)
    act = 0.7 * activation_at(ref, n) + 0.3 * rng.random(n)
    spurious = rng.uniform(0, 30, len(ref) // 4)  # off-beat false peaks
    act = np.maximum(act, 0.6 * activation_at(spurious, n))
    result = tracker.decode(act)
    assert f_measure(ref, result.beats) >= 0.9


def test_tempo_change(tracker):
    first = np.arange(0.5, 15.0, 60.0 / 100)
    second = first[-1] + np.arange(1, 60) * 60.0 / 130
    ref = np.concatenate([first, second[second < 30.0]])
    result = tracker.decode(activation_at(ref, int(30 * FPS)))
    assert f_measure(ref, result.beats) >= 0.95
    bpm_path = 60.0 * FPS / result.path_intervals
    assert np.median(bpm_path[: int(12 * FPS)]) == pytest.approx(100, rel=0.04)
    assert np.median(bpm_path[int(18 * FPS):]) == pytest.approx(130, rel=0.04)


def test_uncorrected_beats_are_on_position_zero():
    ref = beat_grid(120)
    act = activation_at(ref, int(30 * FPS))
    result = DBNBeatTracker(correct=False).decode(act)
    assert np.all(result.path_positions[result.beat_frames] == 0)
    assert f_measure(ref, result.beats) >= 0.95


def test_non_default_fps_and_tempo_range():
    fps = 100.0
    ref = beat_grid(90)
    act = activation_at(ref, int(30 * fps), fps=fps)
    result = DBNBeatTracker(fps=fps, min_bpm=60, max_bpm=180, num_tempi=40).decode(act)
    assert f_measure(ref, result.beats) >= 0.95
    assert result.fps == fps


def test_tempo_outside_range_is_not_tracked_at_that_tempo():
    ref = beat_grid(240)  # above max_bpm=215: the decoder must pick a tempo it has
    result = DBNBeatTracker().decode(activation_at(ref, int(30 * FPS)))
    assert result.tempo is not None and result.tempo <= 215 * 1.02


# --------------------------------------------------------- numba vs numpy
@pytest.mark.skipif(dbn._numba is None, reason="numba not installed")
def test_numba_and_numpy_kernels_agree():
    rng = np.random.default_rng(7)
    act = np.clip(0.6 * activation_at(beat_grid(123), 900) + 0.4 * rng.random(900), 0, 1)
    fast = DBNBeatTracker(use_numba=True).decode(act)
    slow = DBNBeatTracker(use_numba=False).decode(act)
    np.testing.assert_array_equal(fast.beat_frames, slow.beat_frames)
    np.testing.assert_array_equal(fast.path_positions, slow.path_positions)
    assert fast.log_probability == pytest.approx(slow.log_probability, rel=1e-9)


def test_log_probability_matches_the_path():
    """The reported log-probability equals the score of the returned state path."""
    rng = np.random.default_rng(3)
    n = 400
    act = np.clip(0.5 * activation_at(beat_grid(110, 7.0), n) + 0.5 * rng.random(n), 0, 1)
    tr = DBNBeatTracker(use_numba=False, correct=False)
    res = tr.decode(act)
    ss = tr.state_space
    tempo_index = {int(d): i for i, d in enumerate(ss.intervals)}
    p = np.clip(act, 1e-12, 1 - 1e-12)
    is_beat = res.path_positions < res.path_intervals / tr.observation_lambda
    total = -np.log(ss.n_states)
    total += np.sum(np.where(is_beat, np.log(p), np.log((1 - p) / (tr.observation_lambda - 1))))
    for t in range(1, n):
        if res.path_positions[t] == 0:
            prev, cur = res.path_intervals[t - 1], res.path_intervals[t]
            assert res.path_positions[t - 1] == prev - 1
            total += tr.log_transitions[tempo_index[int(prev)], tempo_index[int(cur)]]
        else:
            assert res.path_positions[t] == res.path_positions[t - 1] + 1
            assert res.path_intervals[t] == res.path_intervals[t - 1]
    assert res.log_probability == pytest.approx(total, rel=1e-9)


# ------------------------------------------------------- degenerate inputs
def test_silence_gives_no_beats(tracker):
    result = tracker.decode(np.zeros(2000))
    assert len(result.beats) == 0
    assert result.tempo is None and result.log_probability is None
    assert np.all(result.path_positions == -1)


def test_silent_edges_are_not_decoded(tracker):
    ref = beat_grid(100, duration=20.0, start=8.0)
    act = activation_at(ref, int(30 * FPS))
    act[: int(7.8 * FPS)] = 0.0  # silent before 8 s and after 20 s
    act[int(20.2 * FPS):] = 0.0
    result = tracker.decode(act)
    assert result.beats.min() >= 7.9 and result.beats.max() <= 20.1
    assert f_measure(ref, result.beats) >= 0.95


@pytest.mark.parametrize("n_frames", [0, 1, 2, 10, 17, 40])
def test_very_short_inputs(tracker, n_frames):
    act = np.zeros(n_frames)
    if n_frames > 3:
        act[3] = 1.0
    result = tracker.decode(act)
    assert len(result.beats) <= 1
    assert result.tempo is None
    assert len(result.path_positions) == n_frames
    if n_frames > 3:
        assert list(result.beat_frames) == [3]


@pytest.mark.parametrize("bad", [[0.1, np.nan, 0.2], [0.5, np.inf], [0.1, 1.5], [-0.2, 0.3]])
def test_invalid_activation_values(tracker, bad):
    with pytest.raises(ActivationError) as info:
        tracker.decode(np.array(bad))
    assert isinstance(info.value, MusicsslError) and isinstance(info.value, ValueError)


def test_nan_error_names_the_frame(tracker):
    act = np.full(50, 0.1)
    act[17] = np.nan
    with pytest.raises(ActivationError, match="frame 17"):
        tracker.decode(act)


def test_activation_shape(tracker):
    with pytest.raises(ActivationError, match="1-D"):
        tracker.decode(np.zeros((3, 40)))
    column = activation_at(beat_grid(100, 10.0), 625)[:, None]  # (T, 1) is accepted
    assert len(tracker.decode(column).beats) > 10


# ------------------------------------------------------ parameters / model
@pytest.mark.parametrize("kwargs", [
    {"fps": 0}, {"fps": float("nan")}, {"min_bpm": -5}, {"min_bpm": 200, "max_bpm": 100},
    {"transition_lambda": 0}, {"observation_lambda": 1}, {"num_tempi": 0},
    {"num_tempi": 2.5}, {"threshold": 1.0}, {"fps": 1.0, "max_bpm": 200},
])
def test_parameter_validation(kwargs):
    with pytest.raises(ConfigError):
        DBNBeatTracker(**kwargs)


def test_default_state_space():
    tr = DBNBeatTracker()
    intervals = tr.state_space.intervals
    assert intervals[0] == 18 and intervals[-1] == 68  # ceil(17.4), floor(68.2): inside the range
    assert np.all(np.diff(intervals) == 1)
    assert tr.state_space.n_states == intervals.sum()
    assert tr.bpm_grid.max() <= 215 and tr.bpm_grid.min() >= 55


def test_num_tempi_subsamples_log_spaced():
    intervals = tempo_intervals(55, 215, 62.5, num_tempi=20)
    assert len(intervals) == 20
    assert intervals[0] == 18 and intervals[-1] == 68
    ratios = intervals[1:] / intervals[:-1]
    assert ratios.max() / ratios.min() < 2.5  # roughly geometric, not linear
    assert len(tempo_intervals(55, 215, 62.5, num_tempi=500)) == 51


def test_state_space_layout():
    ss = BeatStateSpace(np.array([3, 5]))
    assert ss.n_states == 8
    np.testing.assert_array_equal(ss.first, [0, 3])
    np.testing.assert_array_equal(ss.last, [2, 7])
    np.testing.assert_array_equal(ss.state_position, [0, 1, 2, 0, 1, 2, 3, 4])
    with pytest.raises(ConfigError):
        BeatStateSpace(np.array([0, 3]))


def test_tempo_transitions_are_normalised_and_peaked():
    intervals = np.arange(17, 69)
    logt = tempo_log_transitions(intervals, 100.0)
    np.testing.assert_allclose(np.exp(logt).sum(axis=1), 1.0)
    assert np.all(np.argmax(logt, axis=1) == np.arange(len(intervals)))
    flatter = tempo_log_transitions(intervals, 1.0)
    assert np.exp(flatter).diagonal().mean() < np.exp(logt).diagonal().mean()


def test_high_transition_lambda_keeps_tempo_steady():
    ref = beat_grid(100)
    act = activation_at(ref, int(30 * FPS))
    rng = np.random.default_rng(11)
    act = np.maximum(act, 0.8 * activation_at(rng.uniform(0, 30, 30), len(act)))
    steady = DBNBeatTracker(transition_lambda=1000.0).decode(act)
    loose = DBNBeatTracker(transition_lambda=0.5).decode(act)
    assert len(np.unique(steady.path_intervals)) <= len(np.unique(loose.path_intervals))
    assert f_measure(ref, steady.beats) >= 0.95


def test_decode_beats_shortcut():
    ref = beat_grid(140, 10.0)
    res = decode_beats(activation_at(ref, 625), fps=FPS, correct=False)
    assert f_measure(ref, res.beats) >= 0.95
    assert res.tempo == pytest.approx(140, rel=0.03)


def test_correction_moves_beats_onto_peaks():
    """120 BPM = 31.25 frames: the integer-interval path drifts; correct=True snaps to peaks."""
    peaks = np.round(np.arange(0.5, 30.0, 0.5) * FPS).astype(int)
    act = np.full(int(30 * FPS), 0.01)
    act[peaks] = 0.3
    corrected = DBNBeatTracker(correct=True).decode(act)
    np.testing.assert_array_equal(corrected.beat_frames, peaks)
    raw = DBNBeatTracker(correct=False).decode(act)
    assert len(raw.beat_frames) == len(peaks)
    assert np.max(np.abs(raw.beat_frames - peaks)) <= 1


def test_kernel_choice():
    assert DBNBeatTracker(use_numba=False)._want_numba(10**6) is False
    assert DBNBeatTracker(use_numba=True)._want_numba(10) is True
    assert DBNBeatTracker()._want_numba(dbn.NUMBA_MIN_FRAMES) is True  # auto: long input


def test_parameters_are_frozen():
    import dataclasses

    tr = DBNBeatTracker()
    with pytest.raises(dataclasses.FrozenInstanceError):
        tr.min_bpm = 80.0
    slower = dataclasses.replace(tr, min_bpm=80.0)
    assert slower.state_space.intervals[-1] == 46  # floor(46.9): 81.5 BPM, inside the range


def test_tempo_is_not_quantised_to_whole_frames():
    """120 BPM is 31.25 frames: the median interval (31) alone would say 121 BPM."""
    peaks = np.round(np.arange(0.5, 30.0, 0.5) * FPS).astype(int)
    act = np.full(int(30 * FPS), 0.01)
    act[peaks] = 0.8
    assert DBNBeatTracker().decode(act).tempo == pytest.approx(120.0, abs=0.3)
    assert dbn.beats_tempo(np.array([1.0])) is None
    assert dbn.beats_tempo(np.array([0.0, 0.5, 1.0, 2.0, 2.5])) == pytest.approx(120.0)  # gap ignored


@pytest.mark.parametrize("min_bpm,max_bpm", [(55.0, 215.0), (60.0, 180.0), (90.0, 100.0), (70.0, 71.0)])
@pytest.mark.parametrize("kind", ["flat", "noise", "fast_grid", "slow_grid"])
def test_decoded_tempo_never_leaves_the_configured_range(min_bpm, max_bpm, kind):
    rng = np.random.default_rng(3)
    n = int(30 * FPS)
    act = {"flat": np.full(n, 0.5), "noise": rng.random(n),
           "fast_grid": activation_at(beat_grid(300), n), "slow_grid": activation_at(beat_grid(40), n)}[kind]
    tracker = DBNBeatTracker(min_bpm=min_bpm, max_bpm=max_bpm)
    result = tracker.decode(act)
    assert np.all(tracker.bpm_grid <= max_bpm) and np.all(tracker.bpm_grid >= min_bpm)
    assert result.tempo is not None and min_bpm <= result.tempo <= max_bpm
    states = result.path_intervals[result.path_intervals > 0]
    assert np.all(60 * FPS / states <= max_bpm) and np.all(60 * FPS / states >= min_bpm)


def test_tempo_prior_pulls_an_uninformative_activation_towards_its_centre():
    plain, with_prior = [], []
    for seed in range(8):
        weak_noise = 0.2 * np.random.default_rng(seed).random(int(30 * FPS))
        plain.append(DBNBeatTracker().decode(weak_noise).tempo)
        with_prior.append(DBNBeatTracker(prior_bpm=120.0).decode(weak_noise).tempo)
    assert np.median(plain) > 175  # beat states are densest at the fastest tempi
    assert 95 <= np.median(with_prior) <= 145


def test_tempo_prior_keeps_a_clear_beat():
    ref = beat_grid(170)
    result = DBNBeatTracker(prior_bpm=120.0).decode(activation_at(ref, int(30 * FPS)))
    assert f_measure(ref, result.beats) >= 0.95


def test_tempo_log_prior_shape():
    values = dbn.tempo_log_prior(np.array([60.0, 120.0, 240.0]), 120.0, 1.0)
    np.testing.assert_allclose(values, [-0.5, 0.0, -0.5])
    with pytest.raises(ConfigError):
        DBNBeatTracker(prior_bpm=-1.0)


# ------------------------------------------------- checkpointed Viterbi
KERNELS = [False] + ([True] if dbn._numba is not None else [])


def long_activations(n: int) -> dict[str, np.ndarray]:
    """A structured activation (tempo change, noise, silent edges), a tie-prone one
    (two values, a constant stretch) and a float32 one, (n,) each."""
    rng = np.random.default_rng(11)
    seconds = n / FPS
    beats = np.concatenate([beat_grid(97, seconds / 2), seconds / 2 + beat_grid(131, seconds / 2)])
    structured = np.clip(0.6 * activation_at(beats, n) + 0.4 * rng.random(n), 0, 1)
    structured[:40] = structured[-75:] = 0.0
    ties = rng.choice([0.2, 0.8], n)
    ties[n // 3:n // 2] = 0.5
    return {"structured": structured, "ties": ties,
            "float32": (0.5 * activation_at(beat_grid(150, seconds), n) + 0.5 * rng.random(n)).astype(np.float32)}


@pytest.mark.parametrize("use_numba", KERNELS)
@pytest.mark.parametrize("params", [{}, {"num_tempi": 20, "correct": False, "threshold": 0.05},
                                    {"observation_lambda": 8.0, "prior_bpm": 120.0}])
def test_checkpointed_viterbi_equals_the_one_block_decoder(monkeypatch, use_numba, params):
    """Back-pointers recomputed block by block from saved scores give the same path, bit for bit."""
    tracker = DBNBeatTracker(use_numba=use_numba, **params)
    blocks = []
    observe = DBNBeatTracker._log_observations
    monkeypatch.setattr(DBNBeatTracker, "_log_observations",
                        lambda self, act: blocks.append(len(act)) or observe(self, act))

    def decode(act, block):
        monkeypatch.setattr(dbn, "CHECKPOINT_MIN_FRAMES", 0 if block else 10**12)
        monkeypatch.setattr(dbn, "CHECKPOINT_BLOCK_FRAMES", block or 1)
        blocks.clear()
        return tracker.decode(act)

    for name, act in long_activations(4000).items():
        whole = decode(act, None)
        n = int(np.sum(whole.path_positions >= 0))             # decoded frames
        assert blocks == [1, n - 1], name                      # frame 0, then one block
        for block in (1, 7, 997):
            part = decode(act, block)
            n_blocks = -(-(n - 1) // block)
            assert n_blocks >= 4 and blocks[0] == 1, name
            assert len(blocks) == 2 * n_blocks, name           # forward + all blocks but the last again
            np.testing.assert_array_equal(part.path_positions, whole.path_positions, err_msg=name)
            np.testing.assert_array_equal(part.path_intervals, whole.path_intervals, err_msg=name)
            np.testing.assert_array_equal(part.beat_frames, whole.beat_frames, err_msg=name)
            assert part.log_probability == whole.log_probability, name
            assert part.tempo == whole.tempo, name


def test_long_inputs_are_checkpointed_by_default():
    assert 0 < dbn.CHECKPOINT_BLOCK_FRAMES < dbn.CHECKPOINT_MIN_FRAMES <= 20 * 60 * FPS


def test_back_pointers_use_the_smallest_integer_type():
    assert dbn._bp_dtype(51) == np.uint8 and dbn._bp_dtype(256) == np.uint8
    assert dbn._bp_dtype(257) == np.uint16 and dbn._bp_dtype(65537) == np.uint32


def test_float32_and_float64_activations_decode_alike():
    act = long_activations(3000)["float32"]
    tracker = DBNBeatTracker(threshold=float(np.sort(act)[10]))
    a, b = tracker.decode(act), tracker.decode(act.astype(np.float64))
    np.testing.assert_array_equal(a.path_positions, b.path_positions)
    np.testing.assert_array_equal(a.beat_frames, b.beat_frames)
    assert a.log_probability == b.log_probability
