"""Training objectives of STONE, 24-STONE, S-KEY and their label-using variants (SPEC §1.3–1.5).

Pure functions: tensors in, ``(scalar loss, dict of detached terms)`` out.
No I/O, no model, no device logic.

Conventions
-----------
* ``probs``: ChromaNet output ``(B, 12 * H)``, softmax over all ``12 * H``
  values, row-major (row 0's 12 columns first). ``H = 1`` (STONE) or 2.
* Views: ``A`` and ``B`` are two segments of one track cropped at offset
  ``o``; ``A2`` (A′ in the spec) is segment A cropped at ``o' = o + k``.
  Cropping ``k`` bins higher shows the music transposed *down* by ``k``
  semitones, so in the network's column frame A′'s key sits at ``q − k``
  when A's sits at ``q``; the loss asks ``z_A · conj(z_A′) = exp(2πi ω k / 12)``.
* ``y = P[0] + P[1]`` (``(B, 12)``, key signature part), ``m = sum(P[0])``
  (``(B,)``, mode part; only for ``H = 2``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from musicssl.errors import ConfigError

#: log values are clamped at this floor, as in PyTorch's BCE
LOG_FLOOR = -100.0
#: below this probability the clamped log passes no gradient (finite gradients at one-hot outputs)
_GRAD_EPS = 1e-12

OBJECTIVES = ("stone", "stone24", "skey", "supervised", "semi")
MODE_PROFILES = ("log", "magnitude", "power")


# --------------------------------------------------------------------------- helpers
def clamped_log(x: Tensor) -> Tensor:
    """``log(x)`` clamped below at −100, with finite gradients everywhere.

    The value is exactly ``max(log x, -100)`` (``x = 0`` gives −100); the
    gradient is ``1/x`` for ``x > 1e-12`` and 0 below, so one-hot
    probabilities never produce inf/NaN gradients.
    """
    value = torch.log(x.detach()).clamp_min(LOG_FLOOR)
    surrogate = torch.log(x.clamp_min(_GRAD_EPS))
    return surrogate + (value - surrogate).detach()


def binary_cross_entropy(p: Tensor, q: Tensor) -> Tensor:
    """Element-wise ``CE(p → q) = −p log q − (1 − p) log(1 − q)``, logs clamped at −100.

    ``p`` (target, probability or 0/1 label) and ``q`` (prediction) broadcast;
    gradients flow into both when they require them.
    """
    return -(p * clamped_log(q) + (1.0 - p) * clamped_log(1.0 - q))


def split_outputs(probs: Tensor, n_rows: int) -> tuple[Tensor, Tensor | None]:
    """``probs (B, 12·H)`` → ``y (B, 12)`` (sum over rows) and ``m (B,)`` (row 0 mass; None for H = 1)."""
    if probs.ndim != 2 or probs.shape[1] != 12 * n_rows:
        raise ConfigError(f"expected outputs of shape (B, {12 * n_rows}), got {tuple(probs.shape)}")
    if n_rows == 1:
        return probs, None
    rows = probs.view(probs.shape[0], n_rows, 12)
    return rows.sum(dim=1), rows[:, 0].sum(dim=1)


def complex_projection(y: Tensor, omega: int = 7) -> tuple[Tensor, Tensor]:
    """``z = Σ_q y[q] · exp(2πi ω q / 12)`` as (real, imaginary), each ``(B,)``.

    Kept in real arithmetic so it runs under every backend and autocast.
    """
    angles = 2.0 * math.pi * omega * torch.arange(12, device=y.device, dtype=torch.float64) / 12.0
    cos = torch.cos(angles).to(y.dtype)
    sin = torch.sin(angles).to(y.dtype)
    return y @ cos, y @ sin


def _rotation_distance(target_angle: Tensor, z1: tuple[Tensor, Tensor], z2: tuple[Tensor, Tensor]) -> Tensor:
    """``|exp(i·angle) − z1 · conj(z2)|²`` per item, ``(B,)``."""
    re1, im1 = z1
    re2, im2 = z2
    prod_re = re1 * re2 + im1 * im2      # Re(z1 conj z2)
    prod_im = im1 * re2 - re1 * im2      # Im(z1 conj z2)
    return (torch.cos(target_angle) - prod_re) ** 2 + (torch.sin(target_angle) - prod_im) ** 2


# --------------------------------------------------------------------------- STONE key loss
def key_loss(y_a: Tensor, y_b: Tensor, y_a2: Tensor, k: Tensor, omega: int = 7) -> tuple[Tensor, dict[str, Tensor]]:
    """STONE's ``L_key = L_pos + L_eq1 + L_eq2`` averaged over the batch (SPEC §1.3).

    ``y_*``: ``(B, 12)`` distributions over the 12 columns; ``k``: ``(B,)``
    integer shift ``o' − o`` of view A′ (any sign). ``omega`` 7 (circle of
    fifths) or 1 (semitones).
    """
    z_a = complex_projection(y_a, omega)
    z_b = complex_projection(y_b, omega)
    z_a2 = complex_projection(y_a2, omega)
    zero = torch.zeros_like(z_a[0])
    angle = (2.0 * math.pi * omega / 12.0) * k.to(z_a[0].dtype)
    pos = _rotation_distance(zero, z_a, z_b).mean()
    eq1 = _rotation_distance(angle, z_a, z_a2).mean()
    eq2 = _rotation_distance(angle, z_b, z_a2).mean()
    total = pos + eq1 + eq2
    return total, {"pos": pos.detach(), "eq1": eq1.detach(), "eq2": eq2.detach(), "key": total.detach()}


# --------------------------------------------------------------------------- 24-STONE mode consistency
def mode_consistency_loss(m_a: Tensor, m_b: Tensor, m_a2: Tensor) -> Tensor:
    """24-STONE's ``CE(m_A→m_A′) + ½CE(m_B→m_A′) + ½CE(m_A′→m_B) + CE(m_A→m_B)``, batch mean (SPEC §1.4)."""
    ce = (binary_cross_entropy(m_a, m_a2)
          + 0.5 * binary_cross_entropy(m_b, m_a2)
          + 0.5 * binary_cross_entropy(m_a2, m_b)
          + binary_cross_entropy(m_a, m_b))
    return ce.mean()


# --------------------------------------------------------------------------- S-KEY
def pitch_class_profile(logcqt_crop: Tensor) -> Tensor:
    """Pitch-class profile in the crop's own frame: ``(B, 1, 12·O, T)`` or ``(B, 12·O, T)`` → ``(B, 12)``.

    Time average, then average of the ``O`` octaves (bin ``12·j + c`` → column ``c``).
    """
    x = logcqt_crop.reshape(logcqt_crop.shape[0], -1, logcqt_crop.shape[-1]) if logcqt_crop.ndim == 4 else logcqt_crop
    if x.shape[1] % 12:
        raise ConfigError(f"crop must have a multiple of 12 bins, got {x.shape[1]}")
    frames = x.float().mean(dim=-1)                       # (B, F)
    return frames.view(x.shape[0], -1, 12).mean(dim=1)    # (B, 12)


def magnitude_profile(log_views: Tensor, top_db: float = 80.0, exponent: float = 1.0) -> Tensor:
    """Pitch-class profile of the CQT *magnitude* (``exponent=2``: power), from log-compressed views.

    ``log_views``: ``(B, V, 12·O, T)``, ``x = max(dB, peak − top_db)/top_db + 1``
    (:func:`musicssl.dsp.cqt.compress_db`), so the magnitude is
    ``10^(top_db·(x − 1)/10)`` (bins below the floor read as the floor). Each view's profile
    (time mean of ``magnitude ** exponent``, octave mean) is normalised to sum 1, then the
    ``V`` views are averaged → ``(B, 12)``.
    """
    b, v, f, t = log_views.shape
    if f % 12:
        raise ConfigError(f"crop must have a multiple of 12 bins, got {f}")
    if exponent <= 0:
        raise ConfigError(f"exponent must be positive, got {exponent}")
    energy = torch.pow(10.0, (log_views.float() - 1.0) * (exponent * top_db / 10.0))
    per_view = energy.mean(dim=-1).view(b, v, f // 12, 12).mean(dim=2)      # (B, V, 12)
    per_view = per_view / per_view.sum(dim=-1, keepdim=True)
    return per_view.mean(dim=1)


#: exponent of the CQT magnitude for each linear ``mode_profile``
PROFILE_EXPONENTS = {"magnitude": 1.0, "power": 2.0}


def mode_label_profile(mode_profile: str, log_views: Tensor, log_profile: Tensor, top_db: float = 80.0) -> Tensor:
    """The profile ``(B, 12)`` the mode pseudo-label reads: ``log_profile`` (the log-CQT
    profile of A and B, SPEC) for ``"log"``, else :func:`magnitude_profile` of views A and B
    (``log_views (B, 3, 12·O, T)``) with that profile's exponent."""
    if mode_profile == "log":
        return log_profile
    return magnitude_profile(log_views[:, :2], top_db, PROFILE_EXPONENTS[mode_profile])


def mode_pseudo_labels(y_a: Tensor, y_b: Tensor, profile: Tensor) -> Tensor:
    """S-KEY's mode pseudo-label ``ℓ`` (SPEC §1.5.2), float ``(B,)`` of 0/1, no gradient.

    ``s = argmax((y_A + y_B)/2)`` in the network's column frame; ``profile``
    ``(B, 12)`` = mean of the pitch-class profiles of A and B cropped at ``o``
    (same frame); ``ℓ = 1`` iff ``c[s] > c[(s + 3) mod 12]``.
    """
    with torch.no_grad():
        s = ((y_a + y_b) / 2).argmax(dim=1)
        c_s = profile.gather(1, s[:, None])[:, 0]
        c_minor_third = profile.gather(1, ((s + 3) % 12)[:, None])[:, 0]
        return (c_s > c_minor_third).to(y_a.dtype)


def column_shift_scores(y_a: Tensor, y_b: Tensor, profile: Tensor) -> tuple[Tensor, Tensor]:
    """``s = argmax((y_A + y_B)/2)`` ``(B,)`` and, for each shift ``d``, the batch mean of
    ``profile_b[s_b + d]`` ``(12,)``: how much the pitch class ``d`` above the model's column
    sounds (the ballot of the ``thirds`` and ``triads`` rules). No gradient."""
    with torch.no_grad():
        s = ((y_a + y_b) / 2).argmax(dim=1)
        shifts = torch.arange(12, device=s.device)
        columns = (s[:, None] + shifts[None, :]) % 12                      # (B, 12): s + d
        return s, profile.gather(1, columns).mean(dim=0)


def _columns_and_scores(y_a: Tensor, y_b: Tensor, profile: Tensor,
                        shift_scores: Tensor | None) -> tuple[Tensor, Tensor]:
    """:func:`column_shift_scores`, with the batch's ballot replaced by ``shift_scores`` ``(12,)`` if given."""
    s, scores = column_shift_scores(y_a, y_b, profile)
    return s, scores if shift_scores is None else shift_scores


def thirds_tonic_shift(y_a: Tensor, y_b: Tensor, profile: Tensor,
                       shift_scores: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The vote of :func:`thirds_pseudo_labels`: ``s = argmax((y_A + y_B)/2)``
    ``(B,)`` and the shift ``δ = argmax_d mean_b profile_b[s_b + d]`` (scalar tensor),
    both in the crop's frame; ``shift_scores`` ``(12,)``, if given, are voted on instead of
    the batch's own (a running ballot, :func:`running_shift_scores`). No gradient."""
    with torch.no_grad():
        s, scores = _columns_and_scores(y_a, y_b, profile, shift_scores)
        return s, scores.argmax()


def _third_label(profile: Tensor, tonic: Tensor) -> Tensor:
    """True where ``profile[tonic + 4] > profile[tonic + 3]`` (major third louder); bool ``(B,)``."""
    major_third = profile.gather(1, ((tonic + 4) % 12)[:, None])[:, 0]
    minor_third = profile.gather(1, ((tonic + 3) % 12)[:, None])[:, 0]
    return major_third > minor_third


def thirds_pseudo_labels(y_a: Tensor, y_b: Tensor, profile: Tensor, shift_scores: Tensor | None = None) -> Tensor:
    """A mode pseudo-label that does not assume where the model's columns sit (project variant).

    ``s = argmax((y_A + y_B)/2)`` as in S-KEY; the batch's column-to-tonic
    shift is ``δ = argmax_d mean_b profile_b[s_b + d]`` (the pitch class the
    model's column points at that sounds most, on average over the batch;
    :func:`thirds_tonic_shift`); with ``t = s + δ``, ``ℓ = 1`` iff the major third
    sounds more than the minor third: ``profile[t + 4] > profile[t + 3]``. Float ``(B,)``
    of 0/1, no gradient. ``profile``: ``(B, 12)`` in the crop's frame; ``shift_scores``: see
    :func:`thirds_tonic_shift`.
    """
    with torch.no_grad():
        s, delta = thirds_tonic_shift(y_a, y_b, profile, shift_scores)
        return _third_label(profile, (s + delta) % 12).to(y_a.dtype)


#: tonic candidates of the ``triads`` rule: the batch's best column-to-tonic shifts
TRIAD_CANDIDATES = 3


def triad_tonics(y_a: Tensor, y_b: Tensor, profile: Tensor, n_candidates: int = TRIAD_CANDIDATES,
                 shift_scores: Tensor | None = None) -> Tensor:
    """Each item's tonic for the ``triads`` rule, ``(B,)`` long, in the crop's frame. No gradient.

    The candidates are ``s + d`` for the ``n_candidates`` shifts ``d`` with the largest
    batch mean ``profile_b[s_b + d]`` (``s = argmax((y_A + y_B)/2)``); each item takes
    the candidate ``t`` whose triad sounds most in its own profile:
    ``profile[t] + profile[t + 7] + max(profile[t + 3], profile[t + 4])``. ``shift_scores``
    ``(12,)``, if given, rank the shifts instead of the batch's own means.
    """
    if not 1 <= n_candidates <= 12:
        raise ConfigError(f"n_candidates must be in 1..12, got {n_candidates}")
    with torch.no_grad():
        s, scores = _columns_and_scores(y_a, y_b, profile, shift_scores)
        shifts = scores.topk(n_candidates).indices                             # (n,)
        tonics = (s[:, None] + shifts[None, :]) % 12                           # (B, n)

        def at(offset: int) -> Tensor:
            return profile.gather(1, (tonics + offset) % 12)

        triad = at(0) + at(7) + torch.maximum(at(3), at(4))                    # (B, n)
        return tonics.gather(1, triad.argmax(dim=1, keepdim=True))[:, 0]


def triad_pseudo_labels(y_a: Tensor, y_b: Tensor, profile: Tensor, shift_scores: Tensor | None = None) -> Tensor:
    """The ``thirds`` label read above a tonic chosen per item (project variant, ``triads``).

    The model's column ``s`` sits at different distances from the tonic for
    different pieces (usually tonic or a fifth away), so one shift per batch reads
    some items' thirds above the dominant or subdominant. Here each item picks
    its tonic among the batch's best shifts (:func:`triad_tonics`), then
    ``ℓ = 1`` iff ``profile[t + 4] > profile[t + 3]``. Float ``(B,)`` of 0/1, no gradient.
    """
    with torch.no_grad():
        return _third_label(profile, triad_tonics(y_a, y_b, profile, shift_scores=shift_scores)).to(y_a.dtype)


def tonic_pseudo_targets(y_a: Tensor, y_b: Tensor, profile: Tensor, labels: Tensor) -> Tensor:
    """One-hot 24-key targets ``(B, 24)`` that hold each row to one frame (project variant). No gradient.

    ``labels``: ``(B,)`` mode pseudo-labels (1 = major = row 0, 0 = minor = row 1). Each
    item's tonic ``t`` is :func:`triad_tonics`; each row's offset ``Δ_r`` is the most
    common ``(t − s) mod 12`` among the batch's items of that row (the model's own
    frame for that mode); the target is row ``r``, column ``(t − Δ_r) mod 12``. So
    items of one mode whose column sits at another distance from their tonic are
    pulled to the distance most of that row's items have.
    """
    with torch.no_grad():
        s = ((y_a + y_b) / 2).argmax(dim=1)
        tonic = triad_tonics(y_a, y_b, profile)
        rows = (labels < 0.5).long()                                            # major → 0, minor → 1
        distance = (tonic - s) % 12
        counts = torch.zeros(2, 12, device=s.device)
        counts.index_put_((rows, distance), torch.ones_like(distance, dtype=counts.dtype), accumulate=True)
        row_offset = counts.argmax(dim=1)                                       # (2,)
        column = (tonic - row_offset[rows]) % 12
        targets = torch.zeros(s.shape[0], 24, device=s.device, dtype=y_a.dtype)
        targets[torch.arange(s.shape[0], device=s.device), rows * 12 + column] = 1.0
        return targets


def tonic_loss(targets: Tensor, probs_a: Tensor, probs_b: Tensor, probs_a2: Tensor, k: Tensor) -> Tensor:
    """Cross-entropy of the three views' ``(B, 24)`` outputs with :func:`tonic_pseudo_targets`
    (view A′'s target moved ``k`` columns down, like its key), batch mean of the three."""
    rows = targets.view(-1, 2, 12)
    columns = (torch.arange(12, device=k.device)[None, :] + k.long()[:, None]) % 12       # (B, 12): c + k
    shifted = rows.gather(2, columns[:, None, :].expand(-1, 2, -1)).reshape_as(targets)   # target[c + k] at c

    def ce(target: Tensor, probs: Tensor) -> Tensor:
        return -(target * clamped_log(probs)).sum(dim=1)

    return (ce(targets, probs_a) + ce(targets, probs_b) + ce(shifted, probs_a2)).mean() / 3.0


#: the S-KEY mode pseudo-label of each ``mode_rule``
PSEUDO_LABEL_RULES = {"authors": mode_pseudo_labels, "thirds": thirds_pseudo_labels, "triads": triad_pseudo_labels}
#: names of the S-KEY mode pseudo-label rules (``ObjectiveConfig.mode_rule``)
MODE_RULES = tuple(PSEUDO_LABEL_RULES)
#: the rules that vote a column-to-tonic shift (they take ``shift_scores``)
VOTING_RULES = ("thirds", "triads")


def running_shift_scores(batch_scores: Tensor, running: Tensor | None, momentum: float) -> Tensor:
    """The ballot a voting rule reads with a running vote: ``momentum·running + (1 − momentum)·batch``
    (``(12,)`` each; the batch's own when ``running`` is None, i.e. at the first step)."""
    if running is None:
        return batch_scores
    return momentum * running.to(batch_scores) + (1.0 - momentum) * batch_scores


def balance_loss(m_a: Tensor, m_b: Tensor, target: Tensor | float = 0.5) -> Tensor:
    """``(μ − target)²`` with ``μ`` the mean of ``m`` over the ``2B`` views A and B;
    ``target`` ½ is the SPEC's (§1.5.4)."""
    mu = torch.cat([m_a, m_b]).mean()
    return (mu - target) ** 2


#: what the balance term pulls a batch's major share to: "half" (SPEC) or "pseudo"
#: (the share of its mode pseudo-labels, a project variant)
BALANCE_TARGETS = ("half", "pseudo")


# --------------------------------------------------------------------------- objectives
@dataclass(frozen=True)
class ObjectiveConfig:
    """Which objective and its weights. ``n_rows`` is the model's ``H``."""

    name: str = "skey"
    omega: int = 7
    #: S-KEY weights (w_k, w_m, w_b); the released checkpoint used (1, 1.7, 1)
    key_weight: float = 1.0
    mode_weight: float = 1.7
    balance_weight: float = 1.0
    #: fixed factors of SPEC §1.4/1.5: L_key + 1.5 L_mode (+ 20 L_bal)
    mode_factor: float = 1.5
    balance_factor: float = 20.0
    #: number of output rows for the label-using objectives (supervised/semi): 1 or 2
    supervised_rows: int = 2
    #: S-KEY mode pseudo-label: "authors" (SPEC §1.5: c[s] > c[s+3]), or the project
    #: variants "thirds" (:func:`thirds_pseudo_labels`) and "triads" (:func:`triad_pseudo_labels`)
    mode_rule: str = "authors"
    #: profile the pseudo-label reads: "log" (SPEC: the log-CQT views), "magnitude" or "power" (:func:`magnitude_profile`)
    mode_profile: str = "log"
    #: weight of :func:`tonic_loss` (S-KEY only; 0 = off, the SPEC): holds each row to one frame
    tonic_weight: float = 0.0
    #: the balance term's major share: "half" (SPEC) or "pseudo" (the batch's pseudo-label share)
    balance_target: str = "half"
    #: voting rules (``thirds``, ``triads``): weight of the past batches in the column-to-tonic
    #: vote (:func:`running_shift_scores`); 0 = each batch votes alone
    shift_momentum: float = 0.0

    def __post_init__(self):
        if self.name not in OBJECTIVES:
            raise ConfigError(f"unknown objective {self.name!r}; choose one of {', '.join(OBJECTIVES)}")
        if self.omega not in range(1, 12) or math.gcd(self.omega, 12) != 1:
            raise ConfigError(f"omega must be coprime with 12 (1, 5, 7 or 11), got {self.omega}")
        if self.mode_rule not in MODE_RULES:
            raise ConfigError(f"unknown mode_rule {self.mode_rule!r}; choose one of {', '.join(MODE_RULES)}")
        if self.mode_profile not in MODE_PROFILES:
            raise ConfigError(f"unknown mode_profile {self.mode_profile!r}; choose one of {', '.join(MODE_PROFILES)}")
        if self.supervised_rows not in (1, 2):
            raise ConfigError(f"supervised_rows must be 1 or 2, got {self.supervised_rows}")
        if self.balance_target not in BALANCE_TARGETS:
            raise ConfigError(f"unknown balance_target {self.balance_target!r}; "
                              f"choose one of {', '.join(BALANCE_TARGETS)}")
        if self.tonic_weight < 0:
            raise ConfigError(f"tonic_weight must be >= 0, got {self.tonic_weight}")
        if not 0.0 <= self.shift_momentum < 1.0:
            raise ConfigError(f"shift_momentum must be in [0, 1), got {self.shift_momentum}")

    @property
    def running_vote(self) -> bool:
        """Whether the S-KEY pseudo-label votes with a running ballot (:func:`running_shift_scores`)."""
        return self.name == "skey" and self.mode_rule in VOTING_RULES and self.shift_momentum > 0

    @property
    def n_rows(self) -> int:
        """Output rows ``H`` the model needs for this objective."""
        if self.name == "stone":
            return 1
        if self.name in ("stone24", "skey"):
            return 2
        return self.supervised_rows

    @property
    def uses_labels(self) -> bool:
        return self.name in ("supervised", "semi")


def key_targets(tonic_column: Tensor, is_major: Tensor, n_rows: int) -> Tensor:
    """One-hot targets in the network's frame, ``(B, 12·H)``.

    ``tonic_column``: ``(B,)`` column (0..11, in the crop's frame) of the key's
    tonic; ``is_major``: ``(B,)`` bool. Convention for the label-using
    objectives (calibration re-reads it anyway): row 0 = major keys at their
    tonic's column; row 1 = minor keys at the column of their *relative major*
    (tonic + 3), so ``y = P[0] + P[1]`` peaks on the key signature for both
    modes. For ``H = 1`` the single row holds the key signature column.
    """
    tonic_column = tonic_column.long()
    is_major = is_major.bool()
    column = torch.where(is_major, tonic_column, (tonic_column + 3) % 12)
    out = torch.zeros(tonic_column.shape[0], 12 * n_rows, device=tonic_column.device)
    row = torch.zeros_like(column) if n_rows == 1 else (~is_major).long()
    out[torch.arange(column.shape[0], device=column.device), row * 12 + column] = 1.0
    return out


def objective(
    cfg: ObjectiveConfig,
    probs_a: Tensor,
    probs_b: Tensor,
    probs_a2: Tensor,
    k: Tensor,
    *,
    profile: Tensor | None = None,
    targets_a: Tensor | None = None,
    labelled: Tensor | None = None,
    shift_scores: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The training loss of ``cfg.name`` for one batch of three views.

    ``probs_*``: ``(B, 12·H)``; ``k``: ``(B,)`` shifts of A′; ``profile``:
    ``(B, 12)`` pitch-class profile (S-KEY only); ``targets_a``: ``(B, 12·H)``
    one-hot targets (see :func:`key_targets`) and ``labelled`` ``(B,)`` bool
    mask for the label-using objectives: a labelled item's view A output is
    replaced by its target (Sup-/Semi-TONE, SPEC §1.4). ``supervised`` uses
    every item's label; ``semi`` only those with ``labelled`` true.
    ``shift_scores``: ``(12,)`` running ballot of the earlier batches when
    ``cfg.running_vote`` (None at the first step).
    Returns the scalar loss and detached terms (``loss``, ``key``, ``pos``,
    ``eq1``, ``eq2``, and ``mode``/``balance``/``pseudo_major``/``tonic`` when they apply;
    with ``cfg.running_vote`` also ``shift_scores`` ``(12,)``, the ballot voted on, which is
    the next step's running ballot, and ``tonic_shift``, the shift it elected).
    """
    n_rows = cfg.n_rows
    if cfg.uses_labels:
        if targets_a is None:
            raise ConfigError(f"objective {cfg.name!r} needs key labels")
        if cfg.name == "supervised" or labelled is None:
            labelled = torch.ones(probs_a.shape[0], dtype=torch.bool, device=probs_a.device)
        probs_a = torch.where(labelled[:, None], targets_a.to(probs_a.dtype), probs_a)
    y_a, m_a = split_outputs(probs_a, n_rows)
    y_b, m_b = split_outputs(probs_b, n_rows)
    y_a2, m_a2 = split_outputs(probs_a2, n_rows)
    l_key, terms = key_loss(y_a, y_b, y_a2, k, cfg.omega)

    if cfg.name == "stone" or n_rows == 1:
        terms["loss"] = l_key.detach()
        return l_key, terms

    if cfg.name == "skey":
        if profile is None:
            raise ConfigError("the S-KEY objective needs the pitch-class profile of views A and B")
        if cfg.running_vote:
            ballot = running_shift_scores(column_shift_scores(y_a, y_b, profile)[1], shift_scores, cfg.shift_momentum)
            ell = PSEUDO_LABEL_RULES[cfg.mode_rule](y_a, y_b, profile, shift_scores=ballot)
            terms.update(shift_scores=ballot.detach(), tonic_shift=ballot.argmax().float())
        else:
            ell = PSEUDO_LABEL_RULES[cfg.mode_rule](y_a, y_b, profile)
        l_mode = (binary_cross_entropy(ell, m_a2) + binary_cross_entropy(ell, m_b)
                  + binary_cross_entropy(ell, m_a)).mean()
        l_bal = balance_loss(m_a, m_b, ell.mean() if cfg.balance_target == "pseudo" else 0.5)
        total = (cfg.key_weight * l_key + cfg.mode_factor * cfg.mode_weight * l_mode
                 + cfg.balance_factor * cfg.balance_weight * l_bal)
        terms.update(mode=l_mode.detach(), balance=l_bal.detach(), pseudo_major=ell.mean())
        if cfg.tonic_weight > 0:
            l_tonic = tonic_loss(tonic_pseudo_targets(y_a, y_b, profile, ell), probs_a, probs_b, probs_a2, k)
            total = total + cfg.tonic_weight * l_tonic
            terms["tonic"] = l_tonic.detach()
    else:  # stone24, supervised, semi (24-STONE family)
        l_mode = mode_consistency_loss(m_a, m_b, m_a2)
        total = l_key + cfg.mode_factor * l_mode
        terms.update(mode=l_mode.detach())
    terms["major_share"] = torch.cat([m_a, m_b]).mean().detach()
    terms["loss"] = total.detach()
    return total, terms
