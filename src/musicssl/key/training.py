"""Training of key models (STONE, 24-STONE, S-KEY, Sup-/Semi-TONE) with Lightning.

:class:`TrainConfig` holds every setting (YAML file and/or CLI flags);
:func:`train` runs scan → split → feature cache → fit → calibrate → export.
The same code runs on CPU, one GPU, several GPUs and several nodes
(Lightning DDP; launch with ``torchrun`` or SLURM ``srun``).

Determinism: data randomness comes from ``(seed, epoch, track)``; model
randomness (stochastic depth) is re-seeded every step from ``(seed, step,
rank)``, so an interrupted and resumed run continues exactly as an
uninterrupted one (model, optimizer, scheduler, step and data position are
restored from the Lightning checkpoint).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import pickle
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from musicssl.errors import CheckpointError, ConfigError

try:  # lightning is a runtime dependency, but keep `import musicssl.key.training` cheap to fail clearly
    import lightning.pytorch as pl
except ImportError as exc:  # pragma: no cover
    raise ConfigError("training needs the 'lightning' package (pip install lightning)") from exc

from musicssl.frontend.cqt import compress_db
from musicssl.key import losses
from musicssl.key.data import (
    CACHE_INDEX, FeatureCache, PairDataset, SegmentConfig, Track, audio_batch_views, gather_tracks,
    make_loader, read_manifest, scan_tracks, split_tracks,
)


# --------------------------------------------------------------------------- configuration
@dataclass
class TrainConfig:
    """Every training setting. Field names are the YAML keys and (with ``-``) the CLI flags."""

    # data
    data: list[str] = field(default_factory=list)        # folders, manifests (.csv/.txt) or files
    val_manifest: str | None = None                      # labelled set (path,key) for MIREX/KSEA/mode
    val_fraction: float = 0.05                           # unlabelled validation tracks (split by track)
    cache_dir: str | None = None                         # feature cache (whole-track CQT, float16)
    derive_cache_from: str | None = None                 # finer-hop cache whose frames are subsampled
    segment_seconds: float = 15.0
    short_tracks: str = "overlap"                        # overlap | skip (tracks < 2 segments)
    min_track_seconds: float = 0.0
    max_track_seconds: float = 900.0                     # longer tracks are cut (cache)
    val_labelled_limit: int | None = None                # score only the first N labelled clips
    eq_db: float = 0.0                                   # random EQ of up to ±eq_db dB per training segment (cache only)
    augment: str = "none"                                # waveform augmentation of training tracks when cached:
                                                         # none | real | comma list (musicssl.key.augment)
    init_model: str | None = None                        # key model (.safetensors) whose weights start training
    data_pipeline: str = "loader"                        # loader: DataLoader workers assemble items;
                                                         # device: the whole cache on the training device,
                                                         # batches drawn by tensor ops (musicssl.key.device_data)
    bank: str | None = None                              # packed key bank (.safetensors, musicssl.gpu_job):
                                                         # replaces data/cache_dir; implies data_pipeline device
    # front end
    hop_length: int = 512
    # model
    objective: str = "skey"                              # stone | stone24 | skey | supervised | semi
    omega: int = 7
    key_weight: float = 1.0
    mode_weight: float = 1.7
    balance_weight: float = 1.0
    supervised_rows: int = 2
    mode_rule: str = "authors"                           # S-KEY pseudo-label: authors (SPEC) | thirds | triads
    mode_profile: str = "log"                            # profile it reads: log (SPEC) | magnitude | power
    tonic_weight: float = 0.0                            # project: tonic pseudo-target term (0 = off, SPEC)
    channels: list[int] = field(default_factory=lambda: [2, 3, 40, 40, 30, 10, 3])
    kernels: list[int] = field(default_factory=lambda: [7, 7, 7, 7, 7, 5, 5])
    drop_path: float = 0.1
    # optimisation
    epochs: int = 50
    max_steps: int = -1
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int | None = None                      # default: 5 % of all steps (at most 2000)
    min_lr_fraction: float = 0.0
    ema_decay: float = 0.0                               # > 0: validate and export an EMA of the weights
    grad_clip: float = 1.0
    # hardware and run
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "auto"                              # auto: bf16-mixed/16-mixed on GPU, 32 on CPU
    num_workers: int = 2
    threads: int | None = None                           # torch intra-op threads (None: torch default)
    compile: bool = False                                # torch.compile the network
    channels_last: bool = False
    seed: int = 0
    out: str = "runs/key"
    resume: str | None = None                            # checkpoint path or "last"
    max_minutes: float | None = None                     # wall-clock budget; stops cleanly, then exports;
                                                         # the cosine decay then follows the budget too
    checkpoint_every: int = 500                          # optimizer steps
    log_every: int = 10
    val_every: int = 1                                   # epochs
    progress: bool = True
    export: bool = True                                  # calibrate + write OUT/model.safetensors
    name: str | None = None

    def __post_init__(self):
        if isinstance(self.data, (str, Path)):
            self.data = [str(self.data)]
        self.data = [str(d) for d in self.data]
        losses.ObjectiveConfig(**self.objective_kwargs())   # validates
        SegmentConfig(self.segment_seconds, self.short_tracks, self.seed)
        for name in ("batch_size", "num_nodes", "checkpoint_every", "log_every", "val_every"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.epochs < 1 and self.max_steps <= 0:
            raise ConfigError("set epochs >= 1 or max_steps > 0")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.eq_db < 0:
            raise ConfigError(f"eq_db must be >= 0, got {self.eq_db}")
        from musicssl.key.augment import AugmentConfig

        if AugmentConfig.parse(self.augment) is not None and not self.cache_dir:   # validates, too
            raise ConfigError("augment (waveform augmentation) is applied when the feature cache is built: "
                              "set cache_dir")
        if self.data_pipeline not in ("loader", "device"):
            raise ConfigError(f"data_pipeline must be 'loader' or 'device', got {self.data_pipeline!r}")
        if len(self.channels) != len(self.kernels):
            raise ConfigError("channels and kernels must have the same length")

    # -- helpers
    def objective_kwargs(self) -> dict:
        return dict(name=self.objective, omega=self.omega, key_weight=self.key_weight,
                    mode_weight=self.mode_weight, balance_weight=self.balance_weight,
                    supervised_rows=self.supervised_rows, mode_rule=self.mode_rule,
                    mode_profile=self.mode_profile, tonic_weight=self.tonic_weight)

    def frontend(self):
        from musicssl.frontend.cqt import FrontEndConfig

        return FrontEndConfig(hop_length=self.hop_length)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        clean = {str(k).replace("-", "_"): v for k, v in values.items()}
        unknown = sorted(set(clean) - known)
        if unknown:
            raise ConfigError(f"unknown training settings: {', '.join(unknown)}")
        return cls(**clean)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> "TrainConfig":
        """Settings from a YAML file (relative ``data``/``val_manifest``/``cache_dir``/``derive_cache_from``/``out``
        paths are relative to the file), then ``overrides``."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of settings")
        base = path.resolve().parent
        rel = lambda p: p if p is None or Path(os.path.expanduser(str(p))).is_absolute() else str(base / str(p))
        if "data" in values:
            data = values["data"] if isinstance(values["data"], list) else [values["data"]]
            values["data"] = [rel(d) for d in data]
        for key in ("val_manifest", "cache_dir", "derive_cache_from", "out", "bank", "init_model"):
            if values.get(key) is not None:
                values[key] = rel(values[key])
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls.from_mapping(values)


# --------------------------------------------------------------------------- schedule
def warmup_cosine(step: int, total: int, warmup: int, min_fraction: float = 0.0,
                  time_fraction: float = 0.0) -> float:
    """LR factor: linear warm-up over ``warmup`` steps, then cosine decay to ``min_fraction`` at ``total``.

    ``time_fraction`` (share of a wall-clock budget used, 0..1) advances the
    decay when it is ahead of the step count, so a run stopped by
    ``max_minutes`` still ends at the bottom of the schedule.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, max((step - warmup) / max(1, total - warmup), time_fraction))
    return min_fraction + (1.0 - min_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------- labelled validation
class LabelledValidation:
    """Calibrated MIREX / KSEA / mode accuracy on a labelled set, from cached CQT decibels.

    The clips' CQT and the calibration signals' CQT are computed once; each
    evaluation is network forwards only.
    """

    def __init__(self, tracks: Sequence[Track], cache: FeatureCache, frontend_config, limit: int | None = None):
        self.frontend_config = frontend_config
        usable = [t for t in tracks if t.key and t.path in cache]
        self.tracks = usable[:limit] if limit else usable
        self.cache = cache
        self._reference_logcqt: torch.Tensor | None = None

    def _reference(self) -> tuple[torch.Tensor, list]:
        from musicssl.frontend.cqt import CQT, log_compress
        from musicssl.key.calibration import reference_keys, reference_signal

        keys = reference_keys()
        if self._reference_logcqt is None:
            c = self.frontend_config
            signals = [reference_signal(k, c.sr) for k in keys]
            n = min(len(s) for s in signals)
            cqt = CQT(sr=c.sr, hop_length=c.hop_length, fmin=c.fmin, n_bins=c.n_bins,
                      bins_per_octave=c.bins_per_octave)
            with torch.inference_mode():
                mag = cqt(torch.from_numpy(np.stack([s[:n] for s in signals])))
                self._reference_logcqt = log_compress(mag, c.top_db)[:, None].clone()
        return self._reference_logcqt, keys

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, device) -> dict[str, float]:
        """Calibrate ``model`` on the reference signals, then score the labelled clips."""
        from musicssl.key.calibration import calibration_accuracy, fit_calibration, to_canonical
        from musicssl.errors import CalibrationError
        from musicssl.keys import Key
        from musicssl.evaluation.key_metrics import score_key, summarize

        crop = self.frontend_config.crop_bins
        was_training = model.training
        model.eval()
        try:
            ref, keys = self._reference()
            native = model(ref[:, :, :crop].to(device)).float().cpu().numpy()
            try:
                calibration = fit_calibration(native, keys)
            except CalibrationError:
                return {"calib_acc": 0.0}
            out = {"calib_acc": calibration_accuracy(native, keys, calibration)}
            scores = []
            for t in self.tracks:
                db = torch.from_numpy(np.asarray(self.cache.array(t.path), dtype=np.float32))
                x = compress_db(db, self.frontend_config.top_db)[:crop][None, None]
                probs = to_canonical(model(x.to(device)).float().cpu().numpy(), calibration)[0]
                scores.append(score_key(t.key, Key.from_index(int(np.argmax(probs)))))
            if scores:
                s = summarize(scores)
                out.update(mirex=s.mirex, mirex_both=s.mirex_both, ksea=s.ksea, mode_acc=s.mode,
                           key_acc=s.accuracy)
            return out
        finally:
            model.train(was_training)


# --------------------------------------------------------------------------- the Lightning module
class KeyTrainingModule(pl.LightningModule):
    """ChromaNet + objective. Batches come from :class:`musicssl.key.data.PairDataset`.

    The three views of a batch go through the network as one ``(3B, 1, 84, T)``
    batch (A's, then B's, then A′'s), so the final batch norm (H = 2) sees all
    three views.
    """

    def __init__(self, config: Mapping[str, Any]):
        super().__init__()
        from musicssl.key.model import ChromaNet

        self.save_hyperparameters({"config": dict(config)})
        self.config = TrainConfig.from_mapping(config)
        c = self.config
        self.objective_config = losses.ObjectiveConfig(**c.objective_kwargs())
        self.frontend_config = c.frontend()
        self.model = ChromaNet(n_rows=self.objective_config.n_rows, channels=c.channels, kernels=c.kernels,
                               n_bins=self.frontend_config.crop_bins, drop_path=c.drop_path)
        if c.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # the module that runs the forward pass (compiled or not); not registered as a submodule,
        # so checkpoints hold the weights once, under "model."
        object.__setattr__(self, "_network", torch.compile(self.model, dynamic=False) if c.compile else self.model)
        # exponential moving average of the weights (and batch-norm statistics): what is
        # validated with labels and exported when ema_decay > 0; saved in checkpoints as "ema."
        self.ema = copy.deepcopy(self.model).requires_grad_(False) if c.ema_decay > 0 else None
        self._frontend = None            # built on demand for batches of raw audio (no feature cache)
        self.labelled_validation: LabelledValidation | None = None
        self._timer: dict[str, float] = {}
        self._window = {"items": 0, "compute": 0.0, "wait": 0.0, "start": None}

    # -- network
    def _frontend_module(self):
        if self._frontend is None:
            from musicssl.frontend.cqt import KeyFrontEnd

            self._frontend = KeyFrontEnd(self.frontend_config)
        self._frontend = self._frontend.to(self.device)
        return self._frontend

    def _views(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if "views" in batch:
            return batch["views"], batch["profile"]
        with torch.no_grad():
            return audio_batch_views(self._frontend_module(), batch["audio"], batch["o"], batch["o2"],
                                     self.frontend_config.crop_bins)

    def _loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        views, log_profile = self._views(batch)
        profile = losses.mode_label_profile(self.objective_config.mode_profile, views, log_profile,
                                            self.frontend_config.top_db)
        b, _, f, t = views.shape
        x = views.transpose(0, 1).reshape(3 * b, 1, f, t)
        if self.config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        probs = self._network(x)
        with torch.autocast(device_type=self.device.type, enabled=False):
            probs = probs.float()
            pa, pb, pa2 = probs[:b], probs[b:2 * b], probs[2 * b:]
            targets = None
            if self.objective_config.uses_labels:
                targets = losses.key_targets(batch["tonic_column"], batch["is_major"].bool(),
                                             self.objective_config.n_rows).to(probs.device)
            return losses.objective(self.objective_config, pa, pb, pa2, batch["k"], profile=profile.float(),
                                    targets_a=targets, labelled=batch["labelled"].bool())

    @property
    def final_model(self) -> torch.nn.Module:
        """The network that is validated with labels and exported: the EMA when kept."""
        return self.ema if self.ema is not None else self.model

    @torch.no_grad()
    def _update_ema(self) -> None:
        """``ema ← d·ema + (1 − d)·model`` with ``d = min(ema_decay, (1 + step)/(10 + step))``."""
        step = int(self.global_step)
        d = min(self.config.ema_decay, (1.0 + step) / (10.0 + step))
        for avg, live in zip(self.ema.parameters(), self.model.parameters()):
            avg.lerp_(live.detach(), 1.0 - d)
        for avg, live in zip(self.ema.buffers(), self.model.buffers()):
            if avg.is_floating_point():
                avg.lerp_(live, 1.0 - d)
            else:
                avg.copy_(live)

    # -- steps
    def on_train_batch_start(self, batch, batch_idx):
        now = time.perf_counter()
        if "end" in self._timer:
            self._window["wait"] += now - self._timer["end"]
        self._timer["start"] = now
        if self._window["start"] is None:
            self._window["start"] = now

    def training_step(self, batch: dict, batch_idx: int):
        # stochastic depth randomness from (seed, step, rank): exact resume, distinct ranks
        torch.manual_seed((self.config.seed * 1_000_003 + self.global_step * 7919 + self.global_rank) % 2 ** 63)
        loss, terms = self._loss(batch)
        b = batch["k"].shape[0]
        self.log_dict({f"train/{k}": v for k, v in terms.items()}, on_step=True, on_epoch=False,
                      batch_size=b)
        self.log("loss", terms["loss"], prog_bar=True, on_step=True, logger=False, batch_size=b)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.ema is not None:
            self._update_ema()
        now = time.perf_counter()
        self._timer["end"] = now
        w = self._window
        w["compute"] += now - self._timer["start"]
        w["items"] += batch["k"].shape[0] * self.trainer.world_size
        if (self.global_step % self.config.log_every == 0) and w["compute"] > 0:
            elapsed = now - w["start"]
            items_per_s = w["items"] / max(elapsed, 1e-9)
            self.log_dict({
                "perf/items_per_s": items_per_s,
                "perf/audio_hours_per_s": items_per_s * 2 * self.config.segment_seconds / 3600.0,
                "perf/data_wait_share": w["wait"] / max(elapsed, 1e-9),
                "lr": self.trainer.optimizers[0].param_groups[0]["lr"],
            }, on_step=True, on_epoch=False)
            self._window = {"items": 0, "compute": 0.0, "wait": 0.0, "start": now}

    def on_train_epoch_start(self):
        self._timer.pop("end", None)

    def on_train_epoch_end(self):
        # DDP keeps batch-norm running statistics per process: average them so every
        # process (and every checkpoint) holds the same model
        if self.trainer.world_size > 1:
            networks = [self.model] + ([self.ema] if self.ema is not None else [])
            for module in (m for network in networks for m in network.modules()):
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
                    module.running_mean.copy_(self.trainer.strategy.reduce(module.running_mean, reduce_op="mean"))
                    module.running_var.copy_(self.trainer.strategy.reduce(module.running_var, reduce_op="mean"))

    def validation_step(self, batch: dict, batch_idx: int):
        loss, terms = self._loss(batch)
        self.log_dict({f"val/{k}": v for k, v in terms.items()}, on_step=False, on_epoch=True,
                      sync_dist=True, batch_size=batch["k"].shape[0])
        return loss

    def on_validation_epoch_end(self):
        if self.labelled_validation is None or self.trainer.sanity_checking:
            return
        if self.global_rank == 0:
            metrics = self.labelled_validation.evaluate(self.final_model, self.device)
            for k, v in metrics.items():
                self.log(f"val_labelled/{k}", float(v), rank_zero_only=True)

    # -- optimisation
    def configure_optimizers(self):
        c = self.config
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            (no_decay if p.ndim <= 1 else decay).append(p)
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": c.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=c.lr)
        total = int(self.trainer.estimated_stepping_batches)
        warmup = c.warmup_steps if c.warmup_steps is not None else min(2000, max(1, total // 20))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, total, warmup, c.min_lr_fraction, self._time_fraction()))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _time_fraction(self) -> float:
        """Share of the ``max_minutes`` budget used so far (0 without a budget)."""
        if not self.config.max_minutes or self._trainer is None:
            return 0.0
        from lightning.pytorch.callbacks import Timer

        for callback in self.trainer.callbacks:
            if isinstance(callback, Timer):
                elapsed = callback.time_elapsed("train")
                return min(1.0, elapsed / (60.0 * float(self.config.max_minutes)))
        return 0.0

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["musicssl"] = {"frontend": self.frontend_config.to_dict(),
                                  "architecture": self.model.architecture()}


# --------------------------------------------------------------------------- data module
class KeyDataModule(pl.LightningDataModule):
    """Training/validation loaders from prepared track lists (see :func:`prepare_data`)."""

    def __init__(self, config: TrainConfig, train_tracks: Sequence[Track], val_tracks: Sequence[Track],
                 cache: FeatureCache | None, bank=None):
        super().__init__()
        self.config = config
        fe = config.frontend()
        seg = SegmentConfig(config.segment_seconds, config.short_tracks, config.seed)
        self.segments = seg
        self.device_pipeline = config.data_pipeline == "device" or bank is not None
        self.train_set = self.val_set = None
        self.train_bank = self.val_bank = None
        if bank is not None:                       # a packed bank (no tracks, no cache)
            self.train_bank, self.val_bank = bank.subset("train"), bank.subset("val")
        elif self.device_pipeline:
            from musicssl.key.device_data import KeyBank

            if cache is None:
                raise ConfigError("data_pipeline 'device' needs the feature cache (cache_dir) or a bank")
            self.train_bank = KeyBank.from_cache(cache, train_tracks)
            self.val_bank = KeyBank.from_cache(cache, val_tracks, "val") if val_tracks else None
        else:
            self.train_set = PairDataset(train_tracks, fe, seg, cache, eq_db=config.eq_db)
            self.val_set = PairDataset(val_tracks, fe, seg, cache, fixed_epoch=0) if val_tracks else None
        if self.train_bank is not None:
            self.counts = self._device_loader(self.train_bank, "cpu", True).counts
        else:
            self.counts = self.train_set.counts
        self._loader = None
        self._resume: tuple[int, int] | None = None    # (epoch, items to skip) from a checkpoint

    # Position in the data, saved in every checkpoint. (Lightning builds the train loader
    # before restoring loop states, so the loader's own state_dict would be applied too late.)
    def state_dict(self) -> dict:
        if self.trainer is None or self._loader is None:
            return {}
        return {"steps": int(self.trainer.global_step), "batches_per_epoch": len(self._loader)}

    def load_state_dict(self, state: dict) -> None:
        per_epoch = int(state.get("batches_per_epoch", 0))
        if per_epoch > 0:
            epoch, done = divmod(int(state.get("steps", 0)), per_epoch)
            self._resume = (epoch, done * self.config.batch_size)
            if self._loader is not None:
                self._loader.sampler.resume_at(*self._resume)

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _device_loader(self, bank, device, train: bool):
        from musicssl.key.device_data import DeviceBatchLoader

        rank, world = self._rank_world()
        batch = self.config.batch_size if train else max(1, min(self.config.batch_size, len(bank) // world))
        return DeviceBatchLoader(bank.to(device), self.config.frontend(), self.segments, batch,
                                 eq_db=self.config.eq_db if train else 0.0, rank=rank, world_size=world,
                                 shuffle=train, fixed_epoch=None if train else 0)

    def _root_device(self):
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def train_dataloader(self):
        if self.train_bank is not None:
            loader = self._device_loader(self.train_bank, self._root_device(), True)
            if len(loader) == 0:
                raise ConfigError(f"{len(loader.bank)} training tracks give no full batch of "
                                  f"{self.config.batch_size} per process; lower --batch-size")
            if self._resume is not None:
                loader.sampler.resume_at(*self._resume)
            self._loader = loader
            return loader
        rank, world = self._rank_world()
        loader = make_loader(self.train_set, self.config.batch_size, seed=self.config.seed, rank=rank,
                             world_size=world, num_workers=self.config.num_workers)
        if len(loader) == 0:
            fits = len(self.train_set) // world
            raise ConfigError(f"{len(self.train_set)} training tracks give no full batch of "
                              f"{self.config.batch_size} per process; give more audio or lower --batch-size"
                              + (f" to {fits} or less" if fits else ""))
        trainer = self.trainer
        loader.step_source = (lambda: trainer.global_step) if trainer is not None else None
        if self._resume is not None:
            loader.sampler.resume_at(*self._resume)
        self._loader = loader
        return loader

    def val_dataloader(self):
        if self.val_bank is not None:
            return [] if len(self.val_bank) == 0 else self._device_loader(self.val_bank, self._root_device(), False)
        if self.val_set is None or len(self.val_set) == 0:
            return []
        rank, world = self._rank_world()
        batch = max(1, min(self.config.batch_size, len(self.val_set) // world))
        return make_loader(self.val_set, batch, seed=self.config.seed, rank=rank, world_size=world,
                           num_workers=self.config.num_workers, shuffle=False, resumable=False)


# --------------------------------------------------------------------------- orchestration
@dataclass
class PreparedData:
    train: list[Track]
    val: list[Track]
    labelled: list[Track]
    cache: FeatureCache | None
    report: dict


def prepare_data(config: TrainConfig, log=print) -> PreparedData:
    """Gather, scan (cached), split by track and build the feature cache."""
    if not config.data:
        raise ConfigError("no training data: set data (folders or manifests)")
    fe = config.frontend()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    scan_file = Path(config.cache_dir or out) / "scan.json"
    tracks = gather_tracks(config.data)
    scan = scan_tracks(tracks, scan_file, min_duration_s=config.min_track_seconds, sr=fe.sr,
                       progress=config.progress)
    log(f"scan: {scan.summary()}")
    train, val = split_tracks(scan.usable, config.val_fraction, config.seed)
    labelled: list[Track] = []
    if config.val_manifest:
        labelled_scan = scan_tracks(read_manifest(config.val_manifest), scan_file, sr=fe.sr,
                                    progress=config.progress)
        labelled = [t for t in labelled_scan.usable if t.key]
        held = {t.path for t in labelled}
        overlap = [t for t in train if t.path in held]
        if overlap:
            raise ConfigError(f"{len(overlap)} labelled validation files are also training files")
    if config.objective in ("supervised",) and not all(t.key for t in train):
        raise ConfigError("objective 'supervised' needs a key for every training track (manifest 'key' column)")
    cache = None
    failed: dict[str, str] = {}
    if config.cache_dir:
        cache = _build_cache_once(config, fe, train + val + labelled, log,
                                  augment_paths={t.path for t in train + val})
        failed = {t.path: cache.index["failed"][t.path] for t in train + val + labelled
                  if t.path in cache.index["failed"]}
        train = [t for t in train if t.path in cache]
        val = [t for t in val if t.path in cache]
        if failed:
            log(f"feature cache: {len(failed)} tracks failed and are skipped")
    report = {"scan": {"usable": len(scan.usable), "hours": scan.hours, "rejected": scan.rejected},
              "cache_failed": failed, "train_tracks": len(train), "val_tracks": len(val),
              "labelled_val": len(labelled)}
    (out / "data_report.json").write_text(json.dumps(report, indent=1))
    return PreparedData(train, val, labelled, cache, report)


def _env_rank() -> int:
    """Global rank announced by torchrun / SLURM before Lightning starts (0 if none)."""
    for name in ("RANK", "SLURM_PROCID"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def _build_cache_once(config: TrainConfig, fe, tracks: Sequence[Track], log, timeout_s: float = 86400.0,
                      augment_paths: set[str] | None = None) -> FeatureCache:
    """Build the feature cache on rank 0; other ranks wait for it (multi-process launches)."""
    import hashlib

    root = Path(config.cache_dir)
    digest = hashlib.sha1("\n".join(sorted(t.path for t in tracks)).encode()).hexdigest()[:16]
    ready = root / f".ready-{digest}"
    from musicssl.key.augment import cache_settings

    augment = cache_settings(config.augment, config.seed)
    if _env_rank() == 0:
        cache = FeatureCache(root, fe, augment)
        if config.derive_cache_from and not (Path(config.derive_cache_from) / CACHE_INDEX).is_file():
            log(f"feature cache: nothing to derive from in {config.derive_cache_from}; computing every track")
        elif config.derive_cache_from:
            added = cache.derive_from(FeatureCache.open(config.derive_cache_from), tracks)
            log(f"feature cache: {added} tracks subsampled from {config.derive_cache_from}")
        cache.build(tracks, max_track_seconds=config.max_track_seconds, progress=config.progress,
                    num_workers=config.num_workers, augment_paths=augment_paths)
        ready.write_text("ok")
        return cache
    waited = 0.0
    while not ready.is_file():
        if waited > timeout_s:
            raise ConfigError(f"rank {_env_rank()}: gave up waiting for rank 0 to build the cache in {root}")
        time.sleep(1.0)
        waited += 1.0
    return FeatureCache(root, fe, augment)


def _precision(config: TrainConfig, accelerator: str) -> str:
    if config.precision != "auto":
        return config.precision
    if accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available()):
        return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def build_trainer(config: TrainConfig, callbacks: Sequence[pl.Callback] = (), loggers=None) -> pl.Trainer:
    """A Lightning Trainer for ``config`` (checkpoints in OUT/checkpoints, logs in OUT/logs)."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from musicssl.trainer_output import final_checkpoint, trainer_callbacks

    out = Path(config.out)
    if loggers is None:
        loggers = [CSVLogger(out, name="logs", version="")]
        try:
            from lightning.pytorch.loggers import TensorBoardLogger
            import tensorboard  # noqa: F401

            loggers.append(TensorBoardLogger(out, name="tensorboard", version=""))
        except ImportError:
            pass
    checkpoint = ModelCheckpoint(dirpath=out / "checkpoints", filename="step{step:07d}",
                                 every_n_train_steps=config.checkpoint_every, save_top_k=-1,
                                 save_last=True, auto_insert_metric_name=False, enable_version_counter=False)
    devices = config.devices
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    strategy = config.strategy
    return pl.Trainer(
        accelerator=config.accelerator, devices=devices, num_nodes=config.num_nodes, strategy=strategy,
        precision=_precision(config, config.accelerator), max_epochs=config.epochs if config.epochs > 0 else -1,
        max_steps=config.max_steps, gradient_clip_val=config.grad_clip or None,
        check_val_every_n_epoch=config.val_every, log_every_n_steps=config.log_every,
        callbacks=[checkpoint, final_checkpoint(out / "checkpoints" / "last.ckpt"), *callbacks,
                   *trainer_callbacks(config.progress)], logger=loggers, use_distributed_sampler=False,
        enable_progress_bar=config.progress, num_sanity_val_steps=0, deterministic=False,
        enable_model_summary=config.progress, default_root_dir=str(out),
        max_time={"minutes": float(config.max_minutes)} if config.max_minutes else None,
    )


def resolve_resume(config: TrainConfig) -> str | None:
    """Checkpoint to resume from: a path, or ``last`` (OUT/checkpoints/last.ckpt, if it exists)."""
    if not config.resume:
        return None
    if config.resume in ("last", "auto"):
        last = Path(config.out) / "checkpoints" / "last.ckpt"
        if last.is_file():
            return str(last)
        if config.resume == "last":
            raise ConfigError(f"--resume last: {last} does not exist")
        return None
    if not Path(config.resume).is_file():
        raise ConfigError(f"--resume: {config.resume} does not exist")
    return config.resume


def export_model(module: KeyTrainingModule, path: str | Path, extra_provenance: Mapping[str, Any] | None = None,
                 device: str = "cpu") -> dict:
    """Calibrate (SPEC §1.6) and write the project checkpoint; returns the calibration."""
    from musicssl.checkpoint import save_key_model
    from musicssl.key.estimator import calibrate_model

    model = module.final_model.to(device).eval()
    calibration = calibrate_model(model, module.frontend_config, device)
    provenance = {"trainer": "musicssl.key.training", "objective": module.config.objective,
                  "config": module.config.to_dict(), "global_step": int(module.global_step),
                  **dict(extra_provenance or {})}
    save_key_model(path, model.cpu(), module.frontend_config, calibration, provenance)
    return calibration


def load_training_checkpoint(path: str | Path) -> tuple[KeyTrainingModule, int]:
    """The key training module of a Lightning ``.ckpt`` written by :func:`train`, and
    its training step (read with ``weights_only=True``: no pickled code runs)."""
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
        module = KeyTrainingModule(dict(ckpt["hyper_parameters"]["config"]))
        module.load_state_dict(ckpt["state_dict"])
    except (OSError, KeyError, RuntimeError, TypeError, pickle.UnpicklingError) as exc:
        raise CheckpointError(f"{path}: not a musicssl key training checkpoint ({exc})") from exc
    return module.eval(), int(ckpt.get("global_step", -1))


def export_training_checkpoint(path: str | Path, out: str | Path, device: str = "cpu") -> dict:
    """Calibrate the model of a training ``.ckpt`` and write it in the project format
    (e.g. to compare objectives at equal steps); returns the calibration."""
    module, step = load_training_checkpoint(path)
    return export_model(module, out, {"exported_from": str(path), "checkpoint_step": step}, device)


def _init_weights(module: KeyTrainingModule, path: str) -> None:
    """Start from a key model's weights (fine-tuning); its front end and architecture must match."""
    from musicssl.checkpoint import load_key_model

    loaded = load_key_model(path)
    if loaded.frontend_config.to_dict() != module.frontend_config.to_dict():
        raise ConfigError(f"{path}: front end {loaded.frontend_config} differs from the training's "
                          f"{module.frontend_config}")
    try:
        for target in (module.model, module.ema):
            if target is not None:
                target.load_state_dict(loaded.model.state_dict())
    except (RuntimeError, AttributeError) as exc:
        raise ConfigError(f"{path}: its network does not match the training's architecture: {exc}") from exc


def train(config: TrainConfig, callbacks: Sequence[pl.Callback] = (), log=print) -> dict:
    """Run a whole training; returns a summary (paths, steps, calibration, last metrics)."""
    if config.threads:
        torch.set_num_threads(int(config.threads))
    bank = None
    if config.bank:
        from musicssl.key.device_data import KeyBank

        bank = KeyBank.load(config.bank)
        Path(config.out).mkdir(parents=True, exist_ok=True)
        data = PreparedData([], [], [], None, {"bank": str(config.bank), "train_tracks": bank.split.count("train"),
                                               "val_tracks": bank.split.count("val")})
    else:
        data = prepare_data(config, log=log)
        if not data.train:
            raise ConfigError("no usable training tracks")
    pl.seed_everything(config.seed, workers=True, verbose=False)   # after the cache build: same init either way
    datamodule = KeyDataModule(config, data.train, data.val, data.cache, bank)
    counts = datamodule.counts
    n_train = len(datamodule.train_bank) if datamodule.train_bank is not None else len(datamodule.train_set)
    log(f"train: {n_train} tracks, val: {data.report.get('val_tracks', len(data.val))} tracks "
        f"({'device-resident batches' if datamodule.device_pipeline else 'DataLoader'}); segments: {counts}")
    module = KeyTrainingModule(config.to_dict())
    if config.init_model and not config.resume:
        _init_weights(module, config.init_model)
        log(f"weights initialised from {config.init_model}")
    if data.labelled and data.cache is not None:
        module.labelled_validation = LabelledValidation(data.labelled, data.cache, module.frontend_config,
                                                        config.val_labelled_limit)
    elif data.labelled:
        log("labelled validation needs the feature cache (--cache-dir); skipped")
    trainer = build_trainer(config, callbacks)
    started = time.time()
    # weights_only: resuming never unpickles code, whoever wrote the .ckpt
    trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_resume(config), weights_only=True)
    summary = {"global_step": int(trainer.global_step), "seconds": time.time() - started,
               "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
               "data": {k: v for k, v in data.report.items() if k != "scan"}, "segments": counts}
    if config.export and trainer.is_global_zero:
        path = Path(config.out) / "model.safetensors"
        summary["calibration"] = export_model(module, path, {"train_summary": summary})
        summary["model"] = str(path)
        if module.labelled_validation is not None:
            summary["final_labelled"] = module.labelled_validation.evaluate(module.final_model, "cpu")
        (Path(config.out) / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
        log(f"model written to {path}")
    return summary
