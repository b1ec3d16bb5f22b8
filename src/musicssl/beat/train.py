"""Pretext training of Zero-Note Samba (SPEC §2.3): Lightning module and trainer.

Each batch holds ``N`` random clips (percussive log-VQT, non-percussive
log-VQT).  The non-percussive output ``a_i`` must pick out the percussive
output ``p_i`` of the same clip among the ``p_j`` of the batch (NT-Xent,
cosine similarity, τ = 0.25); with ``hard_negatives`` each ``p_i`` shifted in
time by a random ``min_shift..max_shift`` frames joins the negatives.

Checkpoints: Lightning ``.ckpt`` files (``last.ckpt`` + periodic) under
``out/checkpoints`` for resuming (they are this run's own files); the final
model is exported to ``out/zerons.safetensors`` in the project format.
Multi-GPU: ``devices > 1`` uses DDP; the random clips of each process differ
because each worker/process is seeded by Lightning (``seed_everything``
with ``workers=True``).
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from musicssl.beat.checkpoint import read_training_checkpoint, save_zerons_model
from musicssl.beat.config import PretrainConfig
from musicssl.beat.data import ClipDataset, ClipSettings
from musicssl.beat.estimator import (
    PRETEXT_READOUT,
    BeatEstimator,
    calibrate_lag,
    calibrate_polarity,
    reference_features,
)
from musicssl.beat.lightning import _print_callback, make_module
from musicssl.beat.model import ZeroNS
from musicssl.beat.separation import get_separator


def make_device_loader(cache_or_bank: str | Path, config: PretrainConfig, device="cpu", rank: int = 0,
                       step_source=None):
    """A :class:`musicssl.beat.device_data.DeviceClipLoader` over a cache folder or a packed clip bank
    (``.safetensors``), with the bank on ``device``."""
    from musicssl.beat.device_data import ClipBank, DeviceClipLoader

    path = Path(cache_or_bank)
    bank = (ClipBank.load(path) if path.is_file() else
            ClipBank.from_cache(path, max_seconds=config.max_seconds_per_track))
    return DeviceClipLoader(bank.to(device), config.clip_seconds, config.batch_size, config.clips_per_epoch,
                            seed=config.seed, rank=rank, min_percussive_db=config.min_percussive_db,
                            step_source=step_source)


def make_dataloader(cache_dir: str | Path, config: PretrainConfig):
    from torch.utils.data import DataLoader

    ds = ClipDataset(cache_dir, ClipSettings(clip_seconds=config.clip_seconds,
                                             clips_per_epoch=config.clips_per_epoch,
                                             min_percussive_db=config.min_percussive_db),
                     seed=config.seed)
    return DataLoader(ds, batch_size=config.batch_size, shuffle=False, drop_last=True,
                      num_workers=config.num_workers, persistent_workers=config.num_workers > 0)


def build_trainer(config: PretrainConfig, out_dir: str | Path, progress: bool = True, callbacks=()):
    """Lightning Trainer: checkpoints every ``checkpoint_every`` steps + ``last.ckpt``, CSV log."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from musicssl.trainer_output import trainer_callbacks

    out_dir = Path(out_dir)
    ckpt = ModelCheckpoint(dirpath=out_dir / "checkpoints", save_last=True, save_top_k=-1,
                           every_n_train_steps=max(1, config.checkpoint_every),
                           filename="step{step}", auto_insert_metric_name=False)
    devices = config.devices
    strategy = "auto"
    if isinstance(devices, int) and devices > 1:
        strategy = "ddp"
    max_time = None
    if config.max_minutes:
        minutes = float(config.max_minutes)
        max_time = {"minutes": minutes}
    return L.Trainer(default_root_dir=str(out_dir), accelerator=config.accelerator, devices=devices,
                     strategy=strategy, precision=config.precision, max_steps=config.max_steps,
                     max_epochs=-1, max_time=max_time,
                     callbacks=[ckpt, *callbacks, *trainer_callbacks(progress)]
                     + ([] if progress else [_print_callback()]),
                     logger=CSVLogger(str(out_dir), name="logs"), log_every_n_steps=5,
                     enable_progress_bar=progress, enable_model_summary=False,
                     num_sanity_val_steps=0)


def pretrain(cache_dir: str | Path, out_dir: str | Path, config: PretrainConfig,
             resume: str | Path | None = None, progress: bool = True, callbacks=(), export: bool = True) -> Path:
    """Train on a feature cache; returns the exported ``out_dir/zerons.safetensors``.

    ``cache_dir``: a cache folder, or (``data_pipeline: device``) a packed clip
    bank file. ``resume``: a Lightning checkpoint of an earlier run, or ``"last"`` for
    ``out_dir/checkpoints/last.ckpt`` when it exists. ``export=False`` skips the
    export (and its polarity calibration) and returns ``out_dir/checkpoints/last.ckpt``.
    """
    if config.threads:
        torch.set_num_threads(int(config.threads))
    L.seed_everything(config.seed, workers=True, verbose=False)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    module = make_module(config)
    from musicssl.trainer_output import final_checkpoint

    last = out_dir / "checkpoints" / "last.ckpt"
    trainer = build_trainer(config, out_dir, progress, [*callbacks, final_checkpoint(last)])
    if config.data_pipeline == "device" or Path(cache_dir).is_file():
        loader = make_device_loader(cache_dir, config, trainer.strategy.root_device, trainer.global_rank,
                                    step_source=lambda: trainer.global_step)
    else:
        loader = make_dataloader(cache_dir, config)
    ckpt_path = None
    if resume == "last":
        ckpt_path = str(last) if last.is_file() else None
    elif resume:
        ckpt_path = str(resume)
    t0 = time.monotonic()
    trainer.fit(module, train_dataloaders=loader, ckpt_path=ckpt_path, weights_only=True)  # no pickled code on resume
    wall = time.monotonic() - t0
    if not export:
        return last
    if trainer.global_rank != 0:
        return out_dir / "zerons.safetensors"

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    return export_model(module.model, config, out_dir / "zerons.safetensors", {
        "steps": int(trainer.global_step), "wall_seconds_this_run": round(wall, 1),
        "final_metrics": metrics, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cache": str(cache_dir)})


def export_model(model: ZeroNS, config: PretrainConfig, path: str | Path, provenance: dict,
                 half: bool = False, reference: tuple[np.ndarray, np.ndarray] | None = None,
                 trained_by: str = "musicssl train-beats") -> Path:
    """Write a pretext-trained model with its calibration (:func:`model_polarity`, on
    ``reference`` features when given), the readout of pretext models (``PRETEXT_READOUT``)
    and ``provenance`` (plus ``trained_by`` and the config)."""
    return save_zerons_model(path, model.eval(), get_separator(config.separator), half=half,
                             polarity=model_polarity(model, config, reference), readout=PRETEXT_READOUT,
                             provenance={"trained_by": trained_by, **provenance, "config": config.to_dict()})


def export_lightning_checkpoint(ckpt_path: str | Path, out_path: str | Path, half: bool = False) -> Path:
    """A training checkpoint (``.ckpt``, read with ``weights_only=True``) -> ``.safetensors`` model."""

    config_dict, state, step = read_training_checkpoint(ckpt_path)
    config = PretrainConfig.from_dict(config_dict)
    model = ZeroNS(width=config.width, dropout=config.dropout)
    model.load_state_dict(state)
    return export_model(model, config, out_path, {"steps": step, "exported_from": str(ckpt_path)}, half=half)


def model_polarity(model: ZeroNS, config: PretrainConfig,
                   reference: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, int]:
    """Output signs (``estimator.calibrate_polarity``, when the loss was time-centred) and the
    common delay of the activation (``estimator.calibrate_lag``). ``reference``: the
    (percussive, non-percussive) features of the calibration signal, precomputed (e.g. by
    ``musicssl.gpu_job.zerons_reference_features`` where no separator runs); None: computed."""

    est = BeatEstimator(model.eval(), separator=get_separator(config.separator))
    features = reference if reference is not None else reference_features(est)      # computed once for both
    if config.center_outputs:
        est.polarity = calibrate_polarity(est, features)
    return {**est.polarity, "lag_frames": calibrate_lag(est, features=features)}
