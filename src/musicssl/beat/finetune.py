"""Few-shot fine-tuning of Zero-Note Samba on 1–10 annotated songs (SPEC §2.4).

Recipe (:class:`FinetuneConfig`; measured in docs/MODEL_CARD_zerons.md,
"Fine-tuning"): each of the two networks is trained on its own to output the
beats — binary cross-entropy on its pre-sigmoid output (logits) against frame
targets built from the annotated beats (1 at each beat frame, 0.5 on the
frames either side) — for a fixed number of Adam steps, each on a batch of
random ``clip_seconds`` windows drawn from the songs, each time-stretched by
a random factor within ±``stretch`` (so 1–10 songs are also seen at other
tempi; without it the networks fit the few songs and generalise poorly).
Before training the output biases are set so that the median output is about
the share of beat frames (the pretext-trained outputs sit near 0.5, and
spending the first steps on pulling the level down wrecks the features). The fine-tuned model
is read as the mean of the two sigmoid outputs, not rescaled, decoded with
the DBN settings of :data:`FINETUNED_DBN_PARAMS`; this readout is stored in
the model file's metadata.

Songs are separated and transformed once.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from musicssl.beat.checkpoint import save_zerons_model
from musicssl.beat.estimator import BeatEstimator
from musicssl.beat.frontend import FPS, SAMPLE_RATE
from musicssl.beat.losses import beat_bce_logits, widened_beat_targets
from musicssl.beat.model import ZeroNS
from musicssl.beat.onset import ONSET_DBN_PARAMS
from musicssl.errors import AnnotationError, ConfigError
from musicssl.evaluation.beat_annotations import (
    load_beat_dataset,
    read_beat_annotation,
)
from musicssl.io.audio import load_audio

MAX_SONGS = 10


#: DBN settings for a fine-tuned activation (a sigmoid with a low floor and peaks at
#: beats): beat states 1/8 of each beat and a log-normal tempo prior at 120 BPM (one
#: octave), as for the onset activation; without the prior the DBN often halves the tempo.
FINETUNED_DBN_PARAMS = dict(ONSET_DBN_PARAMS)
TRAINED_PARTS = ("all", "head")


@dataclass
class FinetuneConfig:
    steps: int = 400  # Adam steps, each on batch_size random windows
    lr: float = 1e-3
    clip_seconds: float = 5.0  # window length (whole songs when shorter)
    batch_size: int = 4  # windows per step, songs drawn at random (with replacement)
    neighbour_weight: float = 0.5
    widen: int = 1
    pos_weight: float = 1.0
    stretch: float = 0.2  # time-stretch augmentation: random tempo change up to ±stretch per window
    train: str = "all"  # parameters trained: "all", or "head" (the 1x1 output convolutions)
    init_rate: float = 0.05  # output level the head biases are set to before training (None: keep)
    from_scratch: bool = False  # re-initialise the networks instead of starting from the pretext model
    combine: str = "mean"  # readout stored with the model: mean of the two sigmoid outputs
    tracker_params: dict = field(default_factory=lambda: dict(FINETUNED_DBN_PARAMS))
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or not self.lr > 0 or not self.clip_seconds > 0:
            raise ConfigError("fine-tuning needs steps >= 1, batch_size >= 1, lr > 0 and clip_seconds > 0")
        if self.train not in TRAINED_PARTS:
            raise ConfigError(f"train must be one of {', '.join(TRAINED_PARTS)}, got {self.train!r}")
        if not 0 <= self.stretch < 1:
            raise ConfigError(f"stretch must be in [0, 1), got {self.stretch!r}")
        if self.init_rate is not None and not 0 < self.init_rate < 1:
            raise ConfigError(f"init_rate must be in (0, 1), got {self.init_rate!r}")

    def readout(self) -> dict:
        """How :class:`BeatEstimator` reads a model tuned with this recipe (model-file metadata)."""
        return {"combine": self.combine, "rescale": False, "tracker_params": dict(self.tracker_params)}


@dataclass
class SongExample:
    """One annotated song: log-VQTs ``(96, T)`` of both parts, targets ``(T,)`` and
    optionally the beat positions in frames ``(n,)`` (float; None: the frames where
    the target is 1)."""

    name: str
    percussive: np.ndarray
    non_percussive: np.ndarray
    target: np.ndarray
    beat_frames: np.ndarray | None = None


def read_labelled_songs(labels: str | os.PathLike) -> list[tuple[Path, np.ndarray]]:
    """(audio path, beat times ``(n,)`` s) pairs from a CSV manifest (audio + beats columns)
    or a folder of audio files with same-stem beat files beside them."""

    labels = Path(labels)
    if labels.is_dir() and (labels / "labels.csv").is_file():
        ds = load_beat_dataset("csv", labels / "labels.csv")
    elif labels.is_dir():
        ds = load_beat_dataset("folder", labels)
    else:
        ds = load_beat_dataset("csv", labels)
    pairs = [(item.audio_path, read_beat_annotation(item.annotation_path).times) for item in ds.items]
    if not pairs:
        raise AnnotationError(f"{labels}: no audio file with a beat annotation found")
    return pairs


def prepare_songs(pairs: Sequence[tuple[Path | str, np.ndarray]], estimator, config: FinetuneConfig
                  ) -> list[SongExample]:
    """Separate + VQT each song once with ``estimator``'s separator and front end."""

    out = []
    for path, beats in pairs:
        x = load_audio(path, sr=SAMPLE_RATE)
        perc, rest = estimator.separate(x)
        fp, fa = estimator.features(perc, rest)
        target = widened_beat_targets(beats, fp.shape[-1], FPS, config.neighbour_weight, config.widen)
        out.append(SongExample(Path(path).stem, fp, fa, target, np.asarray(beats, np.float64) * FPS))
    return out


def _stretch_rows(x: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """``x`` ``(F, T)`` linearly interpolated at fractional frame positions ``pos`` ``(n,)``."""
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, x.shape[1] - 1)
    i1 = np.minimum(i0 + 1, x.shape[1] - 1)
    w = (pos - i0).astype(np.float32)
    return x[:, i0] * (1.0 - w) + x[:, i1] * w


def _batch(songs: Sequence[SongExample], frames: int, rng: np.random.Generator, stretch: float = 0.0,
           neighbour_weight: float = 0.5, widen: int = 1):
    """Random windows, padded to the longest: tensors (B,1,96,L), (B,1,96,L), (B,L), mask (B,L).

    ``stretch`` > 0: each window is time-stretched by a random factor in
    ``[1 - stretch, 1 + stretch]`` (log-uniform; linear interpolation of the
    log-VQT frames), so the songs are also seen at other tempi, and its
    targets are rebuilt from the moved beats.
    """
    length = min(frames, max(s.target.shape[0] for s in songs))
    xp = np.full((len(songs), 1, songs[0].percussive.shape[0], length), np.log(1e-9), np.float32)
    xa = np.full_like(xp, np.log(1e-9))
    y = np.zeros((len(songs), length), np.float32)
    mask = np.zeros_like(y)
    for i, s in enumerate(songs):
        t = s.target.shape[0]
        if stretch <= 0:
            n = min(length, t)
            start = int(rng.integers(0, t - n + 1))
            xp[i, 0, :, :n] = s.percussive[:, start:start + n]
            xa[i, 0, :, :n] = s.non_percussive[:, start:start + n]
            y[i, :n] = s.target[start:start + n]
        else:
            rate = float(np.exp(rng.uniform(np.log(1.0 - stretch), np.log(1.0 + stretch))))  # source frames / frame
            n = min(length, int((t - 1) / rate))
            start = float(rng.uniform(0.0, max(0.0, t - 1 - n * rate)))
            pos = start + np.arange(n) * rate
            xp[i, 0, :, :n] = _stretch_rows(s.percussive, pos)
            xa[i, 0, :, :n] = _stretch_rows(s.non_percussive, pos)
            beats = s.beat_frames if s.beat_frames is not None else np.flatnonzero(s.target >= 1.0)
            y[i, :n] = widened_beat_targets((np.asarray(beats, np.float64) - start) / rate / FPS, n, FPS,
                                            neighbour_weight, widen)
        mask[i, :n] = 1.0
    return (torch.from_numpy(xp), torch.from_numpy(xa), torch.from_numpy(y), torch.from_numpy(mask))


def _branch_logits(model: ZeroNS, songs: Sequence[SongExample]) -> tuple[np.ndarray, np.ndarray]:
    """Pre-sigmoid outputs of both networks over all ``songs``, concatenated ``(sum T,)`` each."""
    zp, za = [], []
    with torch.inference_mode():
        for s in songs:
            dev = next(model.parameters()).device
            xp = torch.from_numpy(np.ascontiguousarray(s.percussive, dtype=np.float32))[None, None].to(dev)
            xa = torch.from_numpy(np.ascontiguousarray(s.non_percussive, dtype=np.float32))[None, None].to(dev)
            zp.append(model.percussive.logits(xp)[0].cpu().numpy())
            za.append(model.non_percussive.logits(xa)[0].cpu().numpy())
    return np.concatenate(zp), np.concatenate(za)


def set_output_level(model: ZeroNS, songs: Sequence[SongExample], rate: float) -> None:
    """Shift both head biases so the median output over ``songs`` is ``rate`` (in place)."""
    zp, za = _branch_logits(model.eval(), songs)
    target = float(np.log(rate / (1.0 - rate)))
    with torch.no_grad():
        model.percussive.head.bias += target - float(np.median(zp))
        model.non_percussive.head.bias += target - float(np.median(za))


def finetune_model(model: ZeroNS, songs: Sequence[SongExample], config: FinetuneConfig | None = None,
                   device: str = "cpu", log=print) -> tuple[ZeroNS, list[float]]:
    """Fine-tune a copy of ``model`` on ``songs``; returns (model in eval mode, loss per step).

    The loss of a step is the mean of both networks' BCE on their logits.
    """
    config = config or FinetuneConfig()
    if not songs:
        raise ConfigError("fine-tuning needs at least one annotated song")
    if len(songs) > MAX_SONGS and log:
        log(f"note: {len(songs)} songs given; few-shot fine-tuning is meant for 1-{MAX_SONGS}")
    torch.manual_seed(config.seed)
    model = copy.deepcopy(model).to(device)
    if config.from_scratch:
        model.percussive.reset_parameters()
        model.non_percussive.reset_parameters()
    if config.init_rate is not None:
        set_output_level(model, songs, config.init_rate)
    model.train()
    if config.train == "head":
        params = [*model.percussive.head.parameters(), *model.non_percussive.head.parameters()]
    else:
        params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=config.lr)
    rng = np.random.default_rng(config.seed)
    frames = int(round(config.clip_seconds * FPS))
    history = []
    for step in range(config.steps):
        batch = [songs[i] for i in rng.integers(0, len(songs), config.batch_size)]
        xp, xa, y, mask = (t.to(device) for t in _batch(batch, frames, rng, config.stretch,
                                                         config.neighbour_weight, config.widen))
        zp = model.percussive.logits(xp)  # standardised per window when the model's input_norm is on
        za = model.non_percussive.logits(xa)
        loss = 0.5 * (beat_bce_logits(zp, y, mask, config.pos_weight)
                      + beat_bce_logits(za, y, mask, config.pos_weight))
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
        if log and (step == 0 or (step + 1) % 100 == 0 or step + 1 == config.steps):
            log(f"fine-tune step {step + 1}/{config.steps}: BCE {np.mean(history[-50:]):.4f}")
    return model.eval(), history


def finetuned_estimator(model: ZeroNS, config: FinetuneConfig | None = None, **kwargs) -> BeatEstimator:
    """A :class:`BeatEstimator` that reads ``model`` as ``config``'s recipe trained it."""
    config = config or FinetuneConfig()
    return BeatEstimator(model, metadata={"readout": config.readout()}, **kwargs)


def finetune_from_labels(labels: str | os.PathLike, out: str | os.PathLike, init: str | None = None,
                         config: FinetuneConfig | None = None, device: str = "cpu") -> Path:
    """Fine-tune the model ``init`` (None: shipped default) on annotated songs; writes
    ``out/zerons_finetuned.safetensors`` (or ``out`` itself when it ends in .safetensors)."""

    config = config or FinetuneConfig()
    est = BeatEstimator.from_checkpoint(init, device=device)
    pairs = read_labelled_songs(labels)
    if len(pairs) > MAX_SONGS:
        raise ConfigError(f"{len(pairs)} annotated songs given; few-shot fine-tuning takes 1-{MAX_SONGS} "
                          "(select a subset)")
    t0 = time.monotonic()
    songs = prepare_songs(pairs, est, config)
    model, history = finetune_model(est.model, songs, config, device=device)
    out = Path(out)
    path = out if out.suffix == ".safetensors" else out / "zerons_finetuned.safetensors"
    prov = dict(est.metadata.get("provenance") or {})
    prov["finetuned"] = {"songs": [str(p) for p, _ in pairs], "config": asdict(config),
                         "final_bce": float(np.mean(history[-50:])), "wall_seconds": round(time.monotonic() - t0, 1),
                         "init": str(init or "default")}
    return save_zerons_model(path, model, est.separator, provenance=prov, readout=config.readout())
