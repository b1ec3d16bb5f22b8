"""ZeroNS model files: weights + JSON metadata (architecture, front end, separator,
calibration) in the project's safetensors format, and the ONNX form (on
:mod:`musicssl.io.model_file`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch

from musicssl.beat.frontend import (
    BINS_PER_OCTAVE,
    FMIN_C0,
    HOP_LENGTH,
    LOG_EPS,
    N_BINS,
    SAMPLE_RATE,
)
from musicssl.beat.model import ZeroNS
from musicssl.beat.separation import get_separator, separator_description
from musicssl.errors import CheckpointError, ConfigError
from musicssl.io import model_file
from musicssl.io.model_file import (
    OnnxNetwork,
    cached_onnx,
    is_onnx_file,
    load_model_file,
    onnx_bytes,
    read_onnx,
    read_onnx_metadata,
    save_model_file,
    with_metadata,
)

# --------------------------------------------------------------------------
# ZeroNS beat models
# --------------------------------------------------------------------------
#: Beat-model format (``format_version`` 1): the ZeroNS state dict (float32 or
#: float16) with JSON metadata ``architecture`` (``{"model": "zerons", **ZeroNS.config}``),
#: ``frontend`` (VQT settings), ``separator``, ``provenance`` and ``polarity``
#: (``{"percussive": ±1, "non_percussive": ±1, ...}``; optional when reading) and
#: ``readout`` (how :class:`~musicssl.beat.estimator.BeatEstimator` reads the outputs:
#: ``{"combine": "max"|"mean", "rescale": bool, "tracker_params": {...}}``, any key
#: optional; a fine-tuned model stores the readout it was trained for).
ZERONS_FORMAT = "musicssl-zerons"


ZERONS_FORMAT_VERSION = 1


_DEFAULT_POLARITY = {"percussive": 1, "non_percussive": 1}
_META_KEYS = ("architecture", "frontend", "separator", "provenance", "polarity", "readout")


def _zerons_frontend_dict() -> dict:
    return {"sr": SAMPLE_RATE, "hop_length": HOP_LENGTH, "fmin": FMIN_C0, "n_bins": N_BINS,
            "bins_per_octave": BINS_PER_OCTAVE, "log_eps": LOG_EPS}


def save_zerons_model(path: str | os.PathLike, model, separator=None,
                      provenance: Mapping[str, Any] | None = None, half: bool = False,
                      polarity: Mapping[str, int] | None = None,
                      readout: Mapping[str, Any] | None = None) -> Path:
    """Write a ZeroNS ``model`` (architecture, front end, separator) to ``.safetensors``.

    ``half`` stores float16 weights (half the size; loaded back as float32);
    ``readout``: how the estimator combines and decodes the outputs (see ``ZERONS_FORMAT``).
    """

    dtype = torch.float16 if half else torch.float32
    tensors = {k: v.detach().to("cpu", dtype) for k, v in model.state_dict().items()}
    fields = {
        "architecture": {"model": "zerons", **model.config},
        "frontend": _zerons_frontend_dict(),
        "separator": separator_description(separator or get_separator()),
        "provenance": dict(provenance or {}),
        "polarity": dict(polarity or _DEFAULT_POLARITY),
        "readout": dict(readout or {}),
    }
    return save_model_file(path, tensors, ZERONS_FORMAT, ZERONS_FORMAT_VERSION, fields)


def load_zerons_model(path: str | os.PathLike) -> tuple[Any, dict]:
    """``(ZeroNS in eval mode, metadata dict)`` from a file written by :func:`save_zerons_model`
    (or ``(OnnxNetwork, metadata)`` from one written by ``musicssl export-onnx``)."""

    if is_onnx_file(path):
        return load_onnx_zerons_model(path)

    tensors, raw = load_model_file(path, ZERONS_FORMAT, ZERONS_FORMAT_VERSION)
    try:
        meta = {k: raw[k] for k in ("architecture", "frontend", "separator", "provenance")}
    except KeyError as exc:
        raise CheckpointError(f"{path}: malformed metadata (missing {exc})") from exc
    meta["polarity"] = raw.get("polarity", dict(_DEFAULT_POLARITY))
    meta["readout"] = raw.get("readout") or {}
    arch = meta["architecture"]
    if meta["frontend"].get("sr") != SAMPLE_RATE or meta["frontend"].get("hop_length") != HOP_LENGTH:
        raise CheckpointError(f"{path}: front end {meta['frontend']} differs from this musicssl's ZeroNS VQT")
    try:
        model = ZeroNS(n_bins=int(arch["n_bins"]), width=float(arch["width"]),
                       dropout=float(arch.get("dropout", 0.1)),
                       input_norm=bool(arch.get("input_norm", False)))
        model.load_state_dict({k: v.float() for k, v in tensors.items()})
    except (KeyError, RuntimeError, ConfigError) as exc:
        raise CheckpointError(f"{path}: weights do not fit the ZeroNS architecture {arch} ({exc})") from exc
    model.eval()
    return model, meta


ONNX_ZERONS_FORMAT = "musicssl-zerons-onnx"


ONNX_ZERONS_INPUTS = ("percussive_spec", "non_percussive_spec")


ONNX_ZERONS_OUTPUTS = ("percussive", "non_percussive")


class _ZeroNSNoNorm(torch.nn.Module):
    """ZeroNS on inputs already standardised (what ``BeatEstimator`` feeds it)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, percussive_spec, non_percussive_spec):
        return self.model(percussive_spec, non_percussive_spec, normalize=False)


def zerons_model_onnx(model, meta: Mapping[str, Any]) -> bytes:
    """Both ZeroNS networks as one ONNX graph: inputs ``percussive_spec`` and
    ``non_percussive_spec`` ``(B, 1, 96, T)`` (log-VQT, already standardised when
    ``architecture.input_norm``), outputs ``percussive`` / ``non_percussive`` ``(B, T)``
    in (0, 1); metadata as the ``.safetensors`` file (architecture, frontend, separator,
    provenance, polarity)."""
    n_bins = int(model.config["n_bins"])
    example = torch.zeros(1, 1, n_bins, 256)
    raw = onnx_bytes(_ZeroNSNoNorm(model), (example, example.clone()), ONNX_ZERONS_INPUTS,
                      ONNX_ZERONS_OUTPUTS, 16)
    fields = {"format": ONNX_ZERONS_FORMAT, "format_version": str(ZERONS_FORMAT_VERSION)}
    fields.update({k: meta.get(k) for k in _META_KEYS})
    return with_metadata(raw, fields)


def load_onnx_zerons_model(path: str | os.PathLike) -> tuple[OnnxNetwork, dict]:
    """``(OnnxNetwork, metadata)`` from a ZeroNS ONNX file, as :func:`load_zerons_model`."""
    data, meta = read_onnx(Path(path), ONNX_ZERONS_FORMAT)
    meta["polarity"] = meta.get("polarity") or dict(_DEFAULT_POLARITY)
    meta["readout"] = meta.get("readout") or {}
    return OnnxNetwork(data, meta), meta


def zerons_onnx_network(source: str | os.PathLike, model, meta: Mapping[str, Any]) -> OnnxNetwork:
    """The ZeroNS networks of checkpoint ``source`` on onnxruntime, exported once and cached."""
    if isinstance(model, OnnxNetwork):
        return model
    data = cached_onnx(source, lambda: zerons_model_onnx(model, meta))
    return OnnxNetwork(data, read_onnx_metadata(data))


def read_training_checkpoint(path: str | os.PathLike) -> tuple[dict, dict, int]:
    """``(PretrainConfig dict, ZeroNS state dict, global step)`` of a ZeroNS training ``.ckpt``."""
    ckpt = model_file.read_training_checkpoint(path, "ZeroNS training checkpoint")
    try:
        config = dict(ckpt["hyper_parameters"]["config_dict"])
        state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
        return config, state, int(ckpt.get("global_step", 0))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path}: not a ZeroNS training checkpoint ({exc})") from exc
