"""Every setting of a key training run (:class:`TrainConfig`, YAML ``configs/*.yaml``)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from musicssl.dsp.cqt import FrontEndConfig
from musicssl.errors import ConfigError
from musicssl.key import losses
from musicssl.key.augment import AugmentConfig
from musicssl.key.dataset import SegmentConfig


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
    retry_failed: bool = False                           # try the tracks the cache recorded as failed again
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
    balance_target: str = "half"                         # balance term's major share: half (SPEC) | pseudo
    shift_momentum: float = 0.0                          # project: running tonic-shift vote (0 = per batch)
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
    select: str = "frame_check"                          # which weights are exported (24-class models):
                                                         # last | frame_check: the last whose frame check
                                                         # agrees (docs/training.md, "Choosing the step")
    select_every: int = 50                               # optimizer steps between frame checks (select)
    name: str | None = None

    def __post_init__(self):
        if isinstance(self.data, (str, Path)):
            self.data = [str(self.data)]
        self.data = [str(d) for d in self.data]
        losses.ObjectiveConfig(**self.objective_kwargs())   # validates
        SegmentConfig(self.segment_seconds, self.short_tracks, self.seed)
        for name in ("batch_size", "num_nodes", "checkpoint_every", "log_every", "val_every", "select_every"):
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
        if AugmentConfig.parse(self.augment) is not None and not self.cache_dir:   # validates, too
            raise ConfigError("augment (waveform augmentation) is applied when the feature cache is built: "
                              "set cache_dir")
        if self.select not in ("last", "frame_check"):
            raise ConfigError(f"select must be 'last' or 'frame_check', got {self.select!r}")
        if self.data_pipeline not in ("loader", "device"):
            raise ConfigError(f"data_pipeline must be 'loader' or 'device', got {self.data_pipeline!r}")
        if len(self.channels) != len(self.kernels):
            raise ConfigError("channels and kernels must have the same length")

    # -- helpers
    def objective_kwargs(self) -> dict:
        return dict(name=self.objective, omega=self.omega, key_weight=self.key_weight,
                    mode_weight=self.mode_weight, balance_weight=self.balance_weight,
                    supervised_rows=self.supervised_rows, mode_rule=self.mode_rule,
                    mode_profile=self.mode_profile, tonic_weight=self.tonic_weight,
                    balance_target=self.balance_target, shift_momentum=self.shift_momentum)

    def frontend(self):
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
