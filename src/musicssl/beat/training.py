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

import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import torch

from musicssl.beat.losses import DEFAULT_TEMPERATURE, nt_xent, random_shifts, shift_frames
from musicssl.beat.model import ZeroNS
from musicssl.errors import ConfigError


@dataclass
class PretrainConfig:
    """Every setting of a pretext training run (YAML ``configs/zerons_*.yaml``)."""

    # model
    width: float = 1.0
    dropout: float = 0.1
    # objective
    temperature: float = DEFAULT_TEMPERATURE
    center_outputs: bool = False  # cosine of time-centred outputs (see losses.nt_xent)
    logit_penalty: float = 0.0  # weight of mean(logit**2): keeps the sigmoids out of saturation
    hard_negatives: bool = False
    min_shift: int = 4
    max_shift: int = 24
    # data
    clip_seconds: float = 10.0
    clips_per_epoch: int = 2000
    max_seconds_per_track: float = 120.0
    min_percussive_db: float = -45.0
    separator: str = "hpss"
    include: list[str] = field(default_factory=list)
    #: loader: DataLoader over memory-mapped clips; device: the whole cache on the training
    #: device, batches drawn by tensor ops (musicssl.beat.device_data; exact resume)
    data_pipeline: str = "loader"
    # optimisation
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    max_steps: int = 10000
    max_minutes: float | None = None
    num_workers: int = 0
    seed: int = 0
    # hardware
    accelerator: str = "auto"
    devices: int | str = 1
    precision: str = "32-true"
    threads: int | None = None
    checkpoint_every: int = 50

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "PretrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown ZeroNS training setting(s): {', '.join(unknown)}")
        cfg = cls(**dict(values))
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.width <= 0:
            raise ConfigError("width must be positive")
        if self.batch_size < 2:
            raise ConfigError("batch_size must be at least 2 (the loss needs negatives)")
        if self.clip_seconds <= 0:
            raise ConfigError("clip_seconds must be positive")
        if self.hard_negatives and not 0 < self.min_shift <= self.max_shift:
            raise ConfigError("need 0 < min_shift <= max_shift")
        if self.data_pipeline not in ("loader", "device"):
            raise ConfigError(f"data_pipeline must be 'loader' or 'device', got {self.data_pipeline!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _lightning():
    import lightning as L

    return L


def make_module(config: PretrainConfig):
    """The Lightning module for ``config`` (imports Lightning lazily)."""
    L = _lightning()

    class ZeroNSPretrainModule(L.LightningModule):
        """Sync-pred training of both ZeroNS branches."""

        def __init__(self, config_dict: dict):
            super().__init__()
            self.save_hyperparameters()
            self.cfg = PretrainConfig.from_dict(config_dict)
            self.model = ZeroNS(width=self.cfg.width, dropout=self.cfg.dropout)
            self._t0 = None

        def pretext_loss(self, perc: torch.Tensor, rest: torch.Tensor) -> tuple[torch.Tensor, dict]:
            lp = self.model.percussive.logits(perc)
            la = self.model.non_percussive.logits(rest)
            p, a = torch.sigmoid(lp), torch.sigmoid(la)
            negatives = None
            if self.cfg.hard_negatives:
                shifts = random_shifts(p.shape[0], self.cfg.min_shift, self.cfg.max_shift)
                negatives = shift_frames(p, shifts)
            loss = nt_xent(a, p, negatives, self.cfg.temperature, center=self.cfg.center_outputs)
            if self.cfg.logit_penalty:
                loss = loss + self.cfg.logit_penalty * 0.5 * (lp.pow(2).mean() + la.pow(2).mean())
            with torch.no_grad():
                if self.cfg.center_outputs:
                    a = a - a.mean(dim=1, keepdim=True)
                    p = p - p.mean(dim=1, keepdim=True)
                an = torch.nn.functional.normalize(a, dim=1)
                pn = torch.nn.functional.normalize(p, dim=1)
                sim = an @ pn.T
                acc = (sim.argmax(dim=1) == torch.arange(len(sim), device=sim.device)).float().mean()
            return loss, {"sync_acc": acc, "pos_cos": sim.diag().mean()}

        def training_step(self, batch, batch_idx):
            perc, rest = batch
            loss, extra = self.pretext_loss(perc, rest)
            bs = perc.shape[0]
            self.log("train_loss", loss, prog_bar=True, batch_size=bs, sync_dist=True)
            self.log("sync_acc", extra["sync_acc"], prog_bar=True, batch_size=bs, sync_dist=True)
            self.log("pos_cos", extra["pos_cos"], batch_size=bs, sync_dist=True)
            return loss

        def configure_optimizers(self):
            opt = torch.optim.AdamW(self.model.parameters(), lr=self.cfg.lr,
                                    weight_decay=self.cfg.weight_decay)
            return opt

    return ZeroNSPretrainModule(config.to_dict())


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

    from musicssl.beat.data import ClipDataset, ClipSettings

    ds = ClipDataset(cache_dir, ClipSettings(clip_seconds=config.clip_seconds,
                                             clips_per_epoch=config.clips_per_epoch,
                                             min_percussive_db=config.min_percussive_db),
                     seed=config.seed)
    return DataLoader(ds, batch_size=config.batch_size, shuffle=False, drop_last=True,
                      num_workers=config.num_workers, persistent_workers=config.num_workers > 0)




def _print_callback(every: int = 10):
    """A callback printing step, loss, synchrony accuracy and seconds per step."""
    L = _lightning()

    class PrintProgress(L.Callback):
        def __init__(self):
            self.t0 = time.monotonic()
            self.last_step = 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            step = trainer.global_step
            if step % every or step == self.last_step or trainer.global_rank != 0:
                return
            now = time.monotonic()
            rate = (now - self.t0) / max(1, step - self.last_step)
            self.t0, self.last_step = now, step
            m = trainer.callback_metrics
            print(f"step {step}: loss {float(m.get('train_loss', float('nan'))):.4f} "
                  f"sync_acc {float(m.get('sync_acc', float('nan'))):.3f} ({rate:.2f} s/step)", flush=True)

    return PrintProgress()


def build_trainer(config: PretrainConfig, out_dir: str | Path, progress: bool = True, callbacks=()):
    """Lightning Trainer: checkpoints every ``checkpoint_every`` steps + ``last.ckpt``, CSV log."""
    L = _lightning()
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
    L = _lightning()
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
    from musicssl.checkpoint import save_zerons_model

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    from musicssl.beat.separation import get_separator

    path = save_zerons_model(out_dir / "zerons.safetensors", module.model.eval(), get_separator(config.separator),
                       polarity=model_polarity(module.model, config), provenance={
        "trained_by": "musicssl train-beats", "steps": int(trainer.global_step),
        "wall_seconds_this_run": round(wall, 1), "config": config.to_dict(),
        "final_metrics": metrics, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cache": str(cache_dir)})
    return path


def export_lightning_checkpoint(ckpt_path: str | Path, out_path: str | Path, half: bool = False) -> Path:
    """A training checkpoint (``.ckpt``, read with ``weights_only=True``) -> ``.safetensors`` model."""
    from musicssl.checkpoint import save_zerons_model
    from musicssl.beat.separation import get_separator
    from musicssl.errors import CheckpointError

    try:
        ck = torch.load(str(ckpt_path), map_location="cpu", weights_only=True)
        config = PretrainConfig.from_dict(ck["hyper_parameters"]["config_dict"])
        state = {k[len("model."):]: v for k, v in ck["state_dict"].items() if k.startswith("model.")}
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a checkpoint error
        raise CheckpointError(f"{ckpt_path}: not a ZeroNS training checkpoint ({exc})") from exc
    model = ZeroNS(width=config.width, dropout=config.dropout)
    model.load_state_dict(state)
    return save_zerons_model(out_path, model.eval(), get_separator(config.separator), half=half,
                       polarity=model_polarity(model, config), provenance={
        "trained_by": "musicssl train-beats", "steps": int(ck.get("global_step", 0)),
        "config": config.to_dict(), "exported_from": str(ckpt_path)})


def model_polarity(model: ZeroNS, config: PretrainConfig) -> dict[str, int]:
    """Output signs (``estimator.calibrate_polarity``, when the loss was time-centred) and the
    common delay of the activation (``estimator.calibrate_lag``)."""
    from musicssl.beat.estimator import BeatEstimator, calibrate_lag, calibrate_polarity
    from musicssl.beat.separation import get_separator

    est = BeatEstimator(model.eval(), separator=get_separator(config.separator))
    if config.center_outputs:
        est.polarity = calibrate_polarity(est)
    return {**est.polarity, "lag_frames": calibrate_lag(est)}
