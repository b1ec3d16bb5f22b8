"""Few-shot fine-tuning of Zero-Note Samba on 1–10 annotated songs (SPEC §2.4).

The combined activation (max, or mean, of the two networks) is trained with
binary cross-entropy against frame targets built from the annotated beats:
1 at each beat frame and 0.5 on the frames either side ("widened" targets).
Songs are separated and transformed once; training draws random windows of
``clip_seconds`` (whole songs when shorter).
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from musicssl.beat.checkpoint import save_zerons_model
from musicssl.beat.estimator import BeatEstimator
from musicssl.beat.frontend import FPS, SAMPLE_RATE
from musicssl.beat.losses import beat_bce, widened_beat_targets
from musicssl.beat.model import ZeroNS, combine_activations
from musicssl.errors import AnnotationError, ConfigError
from musicssl.evaluation.beat_annotations import (
    load_beat_dataset,
    read_beat_annotation,
)
from musicssl.io.audio import load_audio

MAX_SONGS = 10


@dataclass
class FinetuneConfig:
    epochs: int = 30  # passes over the songs (each pass = one random window per song)
    lr: float = 3e-4
    clip_seconds: float = 10.0
    batch_size: int = 4
    neighbour_weight: float = 0.5
    widen: int = 1
    pos_weight: float = 1.0
    combine: str = "max"
    seed: int = 0


@dataclass
class SongExample:
    """One annotated song: log-VQTs ``(96, T)`` of both parts and targets ``(T,)``."""

    name: str
    percussive: np.ndarray
    non_percussive: np.ndarray
    target: np.ndarray


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
        out.append(SongExample(Path(path).stem, fp, fa, target))
    return out


def _batch(songs: Sequence[SongExample], frames: int, rng: np.random.Generator):
    """Random windows, zero-padded to the longest: tensors (B,1,96,L), (B,1,96,L), (B,L), mask (B,L)."""
    length = min(frames, max(s.target.shape[0] for s in songs))
    xp = np.zeros((len(songs), 1, songs[0].percussive.shape[0], length), np.float32)
    xa = np.zeros_like(xp)
    xp[:] = np.log(1e-9)
    xa[:] = np.log(1e-9)
    y = np.zeros((len(songs), length), np.float32)
    mask = np.zeros_like(y)
    for i, s in enumerate(songs):
        t = s.target.shape[0]
        n = min(length, t)
        start = int(rng.integers(0, t - n + 1))
        xp[i, 0, :, :n] = s.percussive[:, start:start + n]
        xa[i, 0, :, :n] = s.non_percussive[:, start:start + n]
        y[i, :n] = s.target[start:start + n]
        mask[i, :n] = 1.0
    return (torch.from_numpy(xp), torch.from_numpy(xa), torch.from_numpy(y), torch.from_numpy(mask))


def finetune_model(model: ZeroNS, songs: Sequence[SongExample], config: FinetuneConfig | None = None,
                   device: str = "cpu", log=print) -> tuple[ZeroNS, list[float]]:
    """Fine-tune a copy of ``model`` on ``songs``; returns (model in eval mode, loss per epoch)."""
    config = config or FinetuneConfig()
    if not songs:
        raise ConfigError("fine-tuning needs at least one annotated song")
    if len(songs) > MAX_SONGS:
        log(f"note: {len(songs)} songs given; few-shot fine-tuning is meant for 1-{MAX_SONGS}")
    model = copy.deepcopy(model).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    frames = int(round(config.clip_seconds * FPS))
    history = []
    for epoch in range(config.epochs):
        order = rng.permutation(len(songs))
        losses = []
        for b in range(0, len(order), config.batch_size):
            batch = [songs[i] for i in order[b:b + config.batch_size]]
            xp, xa, y, mask = (t.to(device) for t in _batch(batch, frames, rng))
            p, a = model(xp, xa)
            act = combine_activations(p, a, config.combine)
            loss = beat_bce(act, y, mask, config.pos_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        history.append(float(np.mean(losses)))
        if log and (epoch == 0 or (epoch + 1) % 5 == 0 or epoch + 1 == config.epochs):
            log(f"fine-tune epoch {epoch + 1}/{config.epochs}: BCE {history[-1]:.4f}")
    return model.eval(), history


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
                         "final_bce": history[-1], "wall_seconds": round(time.monotonic() - t0, 1),
                         "init": str(init or "default")}
    return save_zerons_model(path, model, est.separator, provenance=prov)
