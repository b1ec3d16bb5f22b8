"""Every setting of a ZeroNS pretext training run (:class:`PretrainConfig`, YAML ``configs/zerons_*.yaml``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from musicssl.beat.losses import DEFAULT_TEMPERATURE
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
