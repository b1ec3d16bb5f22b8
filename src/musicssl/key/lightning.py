"""The Lightning wrapper of key training: the module (objective, optimiser and
schedule, EMA, logging), the data module and the labelled validation. The networks
are :mod:`musicssl.key.model`, the objectives :mod:`musicssl.key.losses`."""

from __future__ import annotations

import copy
import math
import time
from typing import Any, Mapping, Sequence

import lightning.pytorch as pl
import numpy as np
import torch

from musicssl.dsp.cqt import KeyFrontEnd, compress_db
from musicssl.errors import CalibrationError, ConfigError
from musicssl.io.tracks import Track
from musicssl.key import losses
from musicssl.key.calibration import (
    FrameChecker,
    fit_reference,
    to_canonical,
)
from musicssl.key.config import TrainConfig
from musicssl.key.dataset import (
    FeatureCache,
    PairDataset,
    SegmentConfig,
    audio_batch_views,
    make_loader,
)
from musicssl.key.model import ChromaNet
from musicssl.keys import Key


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
        self.frames = FrameChecker(frontend_config)

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, device, calibration: dict | None = None) -> dict[str, float]:
        """Calibrate ``model`` on the reference signals (unless its ``calibration``, with
        ``"reference_accuracy"``, is given), then score the labelled clips."""

        crop = self.frontend_config.crop_bins
        was_training = model.training
        model.eval()
        try:
            if calibration is None:
                try:
                    calibration = fit_reference(self.frames.native(model, "reference", device))
                except CalibrationError:
                    return {"calib_acc": 0.0}
            out = {"calib_acc": calibration["reference_accuracy"]}
            from musicssl.evaluation import key_metrics  # deferred: mir_eval is absent from the GPU job

            scores = []
            for t in self.tracks:
                db = torch.from_numpy(np.asarray(self.cache.array(t.path), dtype=np.float32))
                x = compress_db(db, self.frontend_config.top_db)[:crop][None, None]
                probs = to_canonical(model(x.to(device)).float().cpu().numpy(), calibration)[0]
                scores.append(key_metrics.score_key(t.key, Key.from_index(int(np.argmax(probs)))))
            if scores:
                s = key_metrics.summarize(scores)
                out.update(mirex=s.mirex, mirex_both=s.mirex_both, ksea=s.ksea, mode_acc=s.mode,
                           key_acc=s.accuracy)
            return out
        finally:
            model.train(was_training)


# --------------------------------------------------------------------------- the objective of a batch
def three_view_objective(network: torch.nn.Module, objective_config: losses.ObjectiveConfig, views: torch.Tensor,
                         log_profile: torch.Tensor, k: torch.Tensor, top_db: float, *, channels_last: bool = False,
                         targets: torch.Tensor | None = None, labelled: torch.Tensor | None = None,
                         shift_scores: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """The training loss of one batch: ``views`` ``(B, 3, F, T)`` (A, B, A′) go through
    ``network`` as one ``(3B, 1, F, T)`` batch, then :func:`losses.objective` (in float32)
    with the mode pseudo-label profile of ``objective_config.mode_profile`` (from ``views``
    or the log-CQT ``log_profile`` ``(B, 12)``), shifts ``k`` ``(B,)`` and, for the
    label-using objectives, ``targets``/``labelled``; ``shift_scores`` ``(12,)``: the running
    ballot of the voting pseudo-label rules (:func:`losses.objective`). Returns the loss and its terms."""
    profile = losses.mode_label_profile(objective_config.mode_profile, views, log_profile, top_db)
    b, _, f, t = views.shape
    x = views.transpose(0, 1).reshape(3 * b, 1, f, t)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    probs = network(x)
    with torch.autocast(device_type=probs.device.type, enabled=False):
        probs = probs.float()
        return losses.objective(objective_config, probs[:b], probs[b:2 * b], probs[2 * b:], k,
                                profile=profile.float(), targets_a=targets, labelled=labelled,
                                shift_scores=shift_scores)


# --------------------------------------------------------------------------- the Lightning module
class KeyTrainingModule(pl.LightningModule):
    """ChromaNet + objective. Batches come from :class:`musicssl.key.dataset.PairDataset`.

    The three views of a batch go through the network as one ``(3B, 1, 84, T)``
    batch (A's, then B's, then A′'s), so the final batch norm (H = 2) sees all
    three views.
    """

    def __init__(self, config: Mapping[str, Any]):
        super().__init__()

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
        self._frames: FrameChecker | None = None      # the frame check of validation, built on first use
        self._timer: dict[str, float] = {}
        self._window = {"items": 0, "compute": 0.0, "wait": 0.0, "start": None}
        if self.objective_config.running_vote:
            # the running ballot of the pseudo-label's tonic-shift vote (zeros: no batch yet);
            # saved in checkpoints so a resumed run votes as the interrupted one would have
            self.register_buffer("shift_scores", torch.zeros(12))

    # -- network
    def _frontend_module(self):
        if self._frontend is None:
            self._frontend = KeyFrontEnd(self.frontend_config)
        self._frontend = self._frontend.to(self.device)
        return self._frontend

    def _views(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if "views" in batch:
            return batch["views"], batch["profile"]
        with torch.no_grad():
            return audio_batch_views(self._frontend_module(), batch["audio"], batch["o"], batch["o2"],
                                     self.frontend_config.crop_bins)

    def _loss(self, batch: dict, update_vote: bool = False) -> tuple[torch.Tensor, dict]:
        """Loss and loggable terms of a batch; with ``update_vote`` (training steps) the running
        ballot of the pseudo-label vote takes this batch's (averaged over processes)."""
        views, log_profile = self._views(batch)
        targets = labelled = None
        if self.objective_config.uses_labels:
            targets = losses.key_targets(batch["tonic_column"], batch["is_major"].bool(),
                                         self.objective_config.n_rows).to(views.device)
            labelled = batch["labelled"].bool()
        running = None
        if self.objective_config.running_vote and bool(self.shift_scores.sum() > 0):
            running = self.shift_scores
        loss, terms = three_view_objective(self._network, self.objective_config, views, log_profile, batch["k"],
                                           self.frontend_config.top_db, channels_last=self.config.channels_last,
                                           targets=targets, labelled=labelled, shift_scores=running)
        ballot = terms.pop("shift_scores", None)
        if update_vote and ballot is not None:
            if self.trainer.world_size > 1:
                ballot = self.all_gather(ballot).reshape(-1, 12).mean(dim=0)
            self.shift_scores.copy_(ballot)
        return loss, terms

    def frame_checker(self) -> FrameChecker:
        """The frame check of validation and of :class:`FrameSelection` (the labelled
        validation's signals when there is one), built on first use."""
        if self._frames is None:
            self._frames = (self.labelled_validation.frames if self.labelled_validation is not None
                            else FrameChecker(self.frontend_config))
        return self._frames

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
        loss, terms = self._loss(batch, update_vote=True)
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
        if self.trainer.sanity_checking:
            return
        if self.global_rank == 0 and self.objective_config.n_rows == 2:
            # label-free: 1 when random progressions give the SPEC signal's frame (docs/training.md,
            # "Which calibration"); 0 has come with falling held-out accuracy
            check = self.frame_checker()(self.final_model, self.device)
            self.log("val/frame_check", float(check["agrees"]), rank_zero_only=True)
        else:
            check = None
        if self.labelled_validation is None:
            return
        if self.global_rank == 0:                      # the check's SPEC calibration serves it too
            metrics = self.labelled_validation.evaluate(self.final_model, self.device,
                                                        None if check is None else check["calibration"])
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

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # a run resumed with a running vote from a checkpoint written without one starts its ballot empty
        state = checkpoint.get("state_dict", {})
        if self.objective_config.running_vote and "shift_scores" not in state:
            state["shift_scores"] = torch.zeros(12)
        elif not self.objective_config.running_vote:
            state.pop("shift_scores", None)


# --------------------------------------------------------------------------- step selection
class FrameSelection(pl.Callback):
    """``select: frame_check``: every ``every`` optimizer steps, the frame check (label-free,
    :class:`musicssl.key.calibration.FrameChecker`) of the weights that would be exported; the
    weights of the last step where it agrees are kept (CPU) for :func:`musicssl.key.train.export_model`.

    Its history and weights travel in training checkpoints, so a resumed run selects as the
    interrupted one would have. Rank 0 only; 24-class (two-row) models only.
    """

    def __init__(self, every: int):
        self.every = int(every)
        self.history: list[tuple[int, bool]] = []     # (global step, agrees)
        self.step: int | None = None                  # the last agreeing step
        self.state: dict[str, torch.Tensor] | None = None

    def check(self, trainer: pl.Trainer, module: KeyTrainingModule) -> None:
        step = int(trainer.global_step)
        if self.history and self.history[-1][0] == step:
            return
        agrees = bool(module.frame_checker()(module.final_model, module.device)["agrees"])
        self.history.append((step, agrees))
        if agrees:
            self.step = step
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in module.final_model.state_dict().items()}
        for logger in trainer.loggers:
            logger.log_metrics({"train/frame_check": float(agrees)}, step=step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.is_global_zero and trainer.global_step > 0 and trainer.global_step % self.every == 0:
            self.check(trainer, pl_module)

    def rows(self) -> list[list]:
        """The history as ``[[step, agrees], ...]`` (for summaries and provenance)."""
        return [[s, a] for s, a in self.history]

    def state_dict(self) -> dict:
        return {"history": [[s, int(a)] for s, a in self.history],
                "step": -1 if self.step is None else self.step, "state": dict(self.state or {})}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = [(int(s), bool(a)) for s, a in state_dict.get("history", [])]
        step = int(state_dict.get("step", -1))
        self.step = None if step < 0 else step
        self.state = dict(state_dict["state"]) if self.step is not None else None


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
