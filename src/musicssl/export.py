"""ONNX export of the project's networks: a model spec → an ``.onnx`` file.

* Key models (any spec :func:`musicssl.key.estimator.load_estimator` accepts for
  a network: shipped name, project ``.safetensors``, released ``.pt``): the
  ChromaNet alone, input ``logcqt`` ``(B, 1, 84, T)`` (a crop of the log-CQT),
  output the network's ``probabilities`` ``(B, 24)`` in its own column order;
  the ONNX metadata holds ``frontend`` (CQT settings, crop size), ``calibration``
  (column → key mapping; uncalibrated checkpoints are calibrated first),
  ``architecture`` and ``provenance``. Transposition averaging and template priors
  stay outside the graph (they are post-processing in ``KeyEstimator``).
* ZeroNS beat models (``zerons`` = the shipped one, or a ZeroNS ``.safetensors``):
  both networks in one graph (see :func:`musicssl.io.model_file.zerons_model_onnx`).

Files are written atomically; ``musicssl key/beats --checkpoint FILE.onnx`` (or
``--backend onnx``) runs them with onnxruntime.
"""

from __future__ import annotations

import os
from pathlib import Path

from musicssl.beat.checkpoint import ZERONS_FORMAT, load_zerons_model, zerons_model_onnx
from musicssl.beat.estimator import DEFAULT_CHECKPOINT
from musicssl.errors import CheckpointError
from musicssl.io.model_file import (
    OnnxNetwork,
    export_onnx_file,
    is_safetensors,
    read_model_file_metadata,
)
from musicssl.key.checkpoint import key_model_onnx
from musicssl.key.estimator import KeyEstimator
from musicssl.key.registry import load_estimator

#: model spec of the shipped ZeroNS beat model
ZERONS_SPEC = "zerons"


def model_kind(spec: str | os.PathLike) -> str:
    """``"zerons"`` or ``"key"`` for a model spec (by name or by the file's format)."""

    if str(spec) == ZERONS_SPEC:
        return "zerons"
    path = Path(spec)
    if path.is_file() and is_safetensors(path):
        try:
            read_model_file_metadata(path, ZERONS_FORMAT, 1)
            return "zerons"
        except CheckpointError:
            pass
    return "key"


def export_onnx(spec: str | os.PathLike, destination: str | os.PathLike) -> tuple[Path, str]:
    """Export the network(s) of model ``spec`` to ``destination``; returns ``(path, kind)``."""

    kind = model_kind(spec)
    if kind == "zerons":
        model, meta = load_zerons_model(DEFAULT_CHECKPOINT if str(spec) == ZERONS_SPEC else spec)
        return export_onnx_file(destination, zerons_model_onnx(model, meta)), kind

    estimator = load_estimator(str(spec), prior="none", transpositions=1)
    if not isinstance(estimator, KeyEstimator):
        raise CheckpointError(f"{spec}: a template has no network to export")
    if isinstance(estimator.model, OnnxNetwork):
        raise CheckpointError(f"{spec}: already an ONNX model")
    provenance = {"exported_from": Path(str(spec)).name, "name": estimator.name}
    data = key_model_onnx(estimator.model, estimator.frontend_config, estimator.calibration, provenance)
    return export_onnx_file(destination, data), kind
