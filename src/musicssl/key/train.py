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
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from musicssl.errors import CheckpointError, ConfigError
from musicssl.io.atomic import atomic_write_text
from musicssl.key.augment import cache_settings
from musicssl.key.calibration import (
    calibrate_model,
    check_model_frame,
    describe_frame_check,
)
from musicssl.key.checkpoint import (
    load_key_model,
    read_training_checkpoint,
    save_key_model,
)
from musicssl.key.config import TrainConfig
from musicssl.key.lightning import (
    FrameSelection,
    KeyDataModule,
    KeyTrainingModule,
    LabelledValidation,
)

try:  # lightning is a runtime dependency, but keep `import musicssl.key.train` cheap to fail clearly
    import lightning.pytorch as pl
except ImportError as exc:  # pragma: no cover
    raise ConfigError("training needs the 'lightning' package (pip install lightning)") from exc

from musicssl.io.tracks import (
    Track,
    gather_tracks,
    read_manifest,
    scan_tracks,
    split_tracks,
)
from musicssl.key.dataset import CACHE_INDEX, FeatureCache


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
    atomic_write_text(out / "data_report.json", json.dumps(report, indent=1))
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
    augment = cache_settings(config.augment, config.seed)
    if _env_rank() == 0:
        cache = FeatureCache(root, fe, augment)
        if config.derive_cache_from and not (Path(config.derive_cache_from) / CACHE_INDEX).is_file():
            log(f"feature cache: nothing to derive from in {config.derive_cache_from}; computing every track")
        elif config.derive_cache_from:
            added = cache.derive_from(FeatureCache.open(config.derive_cache_from), tracks)
            log(f"feature cache: {added} tracks subsampled from {config.derive_cache_from}")
        cache.build(tracks, max_track_seconds=config.max_track_seconds, progress=config.progress,
                    num_workers=config.num_workers, augment_paths=augment_paths,
                    retry_failed=config.retry_failed)
        ready.write_text("ok")
        return cache
    waited = 0.0
    while not ready.is_file():
        if waited > timeout_s:
            raise ConfigError(f"rank {_env_rank()}: gave up waiting for rank 0 to build the cache in {root}")
        time.sleep(1.0)
        waited += 1.0
    return FeatureCache(root, fe, augment)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX): there bf16 autocast
    is faster than float32; elsewhere it was 8x slower (2-core EPYC with AVX2, December 6)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def _on_gpu(accelerator: str) -> bool:
    return accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available())


def _precision(config: TrainConfig, accelerator: str) -> str:
    """``auto``: bf16-mixed (else 16-mixed) on GPUs; on CPUs bf16-mixed where bfloat16 is native
    (:func:`cpu_has_native_bf16`), else 32-true."""
    if config.precision != "auto":
        return config.precision
    if _on_gpu(accelerator):
        return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


def precision_note(config: TrainConfig) -> str | None:
    """A warning for the log when bf16 was asked for on a CPU that emulates it."""
    if (config.precision.startswith("bf16") and not _on_gpu(config.accelerator) and not cpu_has_native_bf16()):
        return (f"note: precision {config.precision} on a CPU without native bfloat16 (AVX512-BF16/AMX) runs "
                "several times slower than 32-true (8x on a 2-core AVX2 EPYC); --precision auto picks for you")
    return None


def build_trainer(config: TrainConfig, callbacks: Sequence[pl.Callback] = (), loggers=None) -> pl.Trainer:
    """A Lightning Trainer for ``config`` (checkpoints in OUT/checkpoints, logs in OUT/logs)."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from musicssl.trainer_output import final_checkpoint, trainer_callbacks

    out = Path(config.out)
    if loggers is None:
        loggers = [CSVLogger(out, name="logs", version="")]
        try:
            import tensorboard  # noqa: F401
            from lightning.pytorch.loggers import TensorBoardLogger

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
                 device: str = "cpu", selection: FrameSelection | None = None) -> dict:
    """Calibrate (SPEC §1.6), check the frame on random progressions and write the project
    checkpoint (the check in its provenance); returns the calibration with ``"frame_check"``
    (:func:`musicssl.key.calibration.frame_check`) and ``"selected_step"``.

    With a ``selection`` (``select: frame_check``) whose last agreeing step is not the last
    step, and a last step whose frame is uncertain, that step's weights are written instead
    (provenance ``"selected"``: the rule, both steps, the last step's check, the history).
    """
    model = module.final_model.to(device).eval()
    step = int(module.global_step)
    calibration = calibrate_model(model, module.frontend_config, device)
    check = check_model_frame(model, module.frontend_config, calibration, device)
    provenance = {"trainer": "musicssl.key.train", "objective": module.config.objective,
                  "config": module.config.to_dict(), "global_step": step,
                  "frame_check": check, **dict(extra_provenance or {})}
    selected = None
    if selection is not None and selection.step is not None and not check["agrees"] and selection.step != step:
        earlier = copy.deepcopy(model)
        earlier.load_state_dict(selection.state)
        earlier_calibration = calibrate_model(earlier, module.frontend_config, device)
        earlier_check = check_model_frame(earlier, module.frontend_config, earlier_calibration, device)
        if earlier_check["agrees"]:
            selected = selection.step
            provenance["selected"] = {"rule": "frame_check", "step": selected, "last_step": step,
                                      "last_frame_check": check,
                                      "history": selection.rows()}
            model, calibration, check = earlier, earlier_calibration, earlier_check
            provenance.update(global_step=selected, frame_check=check)
    save_key_model(path, model.cpu(), module.frontend_config, calibration, provenance)
    return {**calibration, "frame_check": check, "selected_step": selected}


def describe_selection(result: Mapping[str, Any], last_step: int) -> str:
    """One line for a training log: which step's weights :func:`export_model` wrote."""
    if result.get("selected_step") is None:
        return f"exported the weights of the last step ({last_step})"
    return (f"exported the weights of step {result['selected_step']}, the last whose frame check agrees "
            f"(the last step, {last_step}, has an uncertain frame)")


def load_training_checkpoint(path: str | Path) -> tuple[KeyTrainingModule, int]:
    """The key training module of a Lightning ``.ckpt`` written by :func:`train`, and
    its training step (read with ``weights_only=True``: no pickled code runs)."""
    config, state, step = read_training_checkpoint(path)
    try:
        module = KeyTrainingModule(config)
        module.load_state_dict(state)
    except (KeyError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{path}: not a musicssl key training checkpoint ({exc})") from exc
    return module.eval(), step


def export_training_checkpoint(path: str | Path, out: str | Path, device: str = "cpu") -> dict:
    """Calibrate the model of a training ``.ckpt`` and write it in the project format
    (e.g. to compare objectives at equal steps); returns the calibration."""
    module, step = load_training_checkpoint(path)
    return export_model(module, out, {"exported_from": str(path), "checkpoint_step": step}, device)


def _init_weights(module: KeyTrainingModule, path: str) -> None:
    """Start from a key model's weights (fine-tuning); its front end and architecture must match."""
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


def training_set(config: TrainConfig, log=print):
    """The dataset a run of ``config`` draws its training items from (scan, split, feature
    cache as :func:`prepare_data`), without training: for diagnostics on training batches."""
    data = prepare_data(config, log=log)
    return KeyDataModule(config, data.train, data.val, data.cache).train_set


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
    note = precision_note(config)
    if note:
        log(note)
    pl.seed_everything(config.seed, workers=True, verbose=False)   # after the cache build: same init either way
    datamodule = KeyDataModule(config, data.train, data.val, data.cache, bank)
    counts = datamodule.counts
    n_train = len(datamodule.train_bank) if datamodule.train_bank is not None else len(datamodule.train_set)
    log(f"train: {n_train} tracks, val: {data.report.get('val_tracks', len(data.val))} tracks "
        f"({'device-resident batches' if datamodule.device_pipeline else 'DataLoader'}); segments: {counts}")
    module = KeyTrainingModule(config.to_dict())
    resume = resolve_resume(config)   # None also for "auto" when nothing is there yet: then init_model applies
    if config.init_model and resume is None:
        _init_weights(module, config.init_model)
        log(f"weights initialised from {config.init_model}")
    if data.labelled and data.cache is not None:
        module.labelled_validation = LabelledValidation(data.labelled, data.cache, module.frontend_config,
                                                        config.val_labelled_limit)
    elif data.labelled:
        log("labelled validation needs the feature cache (--cache-dir); skipped")
    selection = None
    if config.select == "frame_check" and module.objective_config.n_rows == 2:
        selection = FrameSelection(config.select_every)
        callbacks = [selection, *callbacks]
    trainer = build_trainer(config, callbacks)
    started = time.time()
    # weights_only: resuming never unpickles code, whoever wrote the .ckpt
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    summary = {"global_step": int(trainer.global_step), "seconds": time.time() - started,
               "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
               "data": {k: v for k, v in data.report.items() if k != "scan"}, "segments": counts}
    if config.export and trainer.is_global_zero:
        path = Path(config.out) / "model.safetensors"
        summary["calibration"] = export_model(module, path, {"train_summary": summary}, selection=selection)
        summary["model"] = str(path)
        if selection is not None:
            summary["frame_history"] = selection.rows()
            log(describe_selection(summary["calibration"], summary["global_step"]))
        log(describe_frame_check(summary["calibration"]["frame_check"], summary["calibration"]))
        if module.labelled_validation is not None:            # what was written, selected or last
            summary["final_labelled"] = module.labelled_validation.evaluate(load_key_model(path).model, "cpu")
        atomic_write_text(Path(config.out) / "summary.json", json.dumps(summary, indent=1, default=str))
        log(f"model written to {path}")
    return summary
