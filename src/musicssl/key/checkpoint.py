"""Key model files: the project's format, the shipped models, safe import of
released S-KEY/STONE ``.pt`` files and the ONNX form (on :mod:`musicssl.io.model_file`).

Project format (``format_version`` 1): one ``.safetensors`` file holding the
network's state dict, with JSON strings in the safetensors header metadata:

* ``format``: ``"musicssl-key"``; ``format_version``: ``"1"``;
* ``architecture``: ``{"model": "chromanet", "n_rows", "channels", "kernels",
  "n_bins", "temperature"}``;
* ``frontend``: :class:`~musicssl.dsp.cqt.FrontEndConfig` as a dict;
* ``calibration``: a dict or ``null``, in the format of
  ``musicssl.key.calibration`` (``{"n_rows": 2, "row_modes": ["major",
  "minor"], "row_offsets": [a, b]}``: the probability at ``[row, j]``
  belongs to the key with tonic ``(row_offsets[row] + j) % 12`` (C = 0) and
  mode ``row_modes[row]``); stored as given;
* ``provenance``: free-form dict (source file, training run, date ...).

Released S-KEY / STONE checkpoints (``torch.save`` of a dict with keys
``stone`` (``hcqt.*`` + ``chromanet.*`` tensors), ``optimizer``,
``gin_info``, ``audio``, ...) are read with ``torch.load(weights_only=True)``
and an allow-list of the few numpy globals they contain, so no pickled code
can run. Their CQT kernels are checked against the project's own front end.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from musicssl.dsp.cqt import CQT, FrontEndConfig
from musicssl.errors import CheckpointError, ConfigError
from musicssl.io import model_file
from musicssl.io.model_file import (
    OnnxNetwork,
    cached_onnx,
    is_onnx_file,
    is_safetensors,
    load_model_file,
    onnx_bytes,
    read_model_file_metadata,
    read_onnx,
    read_onnx_metadata,
    safe_torch_load,
    save_model_file,
    with_metadata,
)
from musicssl.key.model import ChromaNet

FORMAT_NAME = "musicssl-key"


FORMAT_VERSION = 1


#: Expected calibration of the released S-KEY checkpoint (SPEC §1.6): row 0
#: column j is the major key with tonic A + j, row 1 column j the minor key
#: with tonic B + j. Documentation / test value only: imported checkpoints are
#: returned with ``calibration=None`` and calibrated by
#: ``musicssl.key.calibration``.
IMPORTED_SKEY_CALIBRATION: dict[str, Any] = {"n_rows": 2, "row_modes": ["major", "minor"],
                                             "row_offsets": [9, 11]}


@dataclass
class LoadedKeyModel:
    """A key network ready for inference, with what is needed to use it."""

    model: ChromaNet                   # in eval mode, on CPU
    frontend_config: FrontEndConfig
    calibration: dict | None
    provenance: dict = field(default_factory=dict)
    source_format: str = FORMAT_NAME   # "musicssl-key" or "skey-pt"


def save_key_model(path: str | os.PathLike, model: ChromaNet,
                   frontend_config: FrontEndConfig | Mapping[str, Any],
                   calibration: Mapping[str, Any] | None = None,
                   provenance: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` (weights, architecture, front end, calibration) to a ``.safetensors`` file."""
    if not isinstance(model, ChromaNet):
        raise CheckpointError(f"save_key_model expects a ChromaNet, got {type(model).__name__}")
    if not isinstance(frontend_config, FrontEndConfig):
        frontend_config = FrontEndConfig.from_dict(frontend_config)
    if calibration is not None and not isinstance(calibration, Mapping):
        raise CheckpointError("calibration must be a dict or None")
    fields = {
        "architecture": model.architecture(),
        "frontend": frontend_config.to_dict(),
        "calibration": None if calibration is None else dict(calibration),
        "provenance": dict(provenance or {}),
    }
    return save_model_file(path, model.state_dict(), FORMAT_NAME, FORMAT_VERSION, fields)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Decoded JSON metadata of a key checkpoint (architecture, frontend, calibration, provenance)."""
    meta = read_model_file_metadata(path, FORMAT_NAME, FORMAT_VERSION)
    for key in ("architecture", "frontend", "calibration", "provenance"):
        meta.setdefault(key, None)
    return meta


def _build_chromanet(arch: Mapping[str, Any], state: Mapping[str, torch.Tensor], where: str) -> ChromaNet:
    if not isinstance(arch, Mapping) or arch.get("model") != "chromanet":
        raise CheckpointError(f"{where}: unknown architecture {arch!r}")
    kwargs = {k: arch[k] for k in ("n_rows", "channels", "kernels", "n_bins", "temperature") if k in arch}
    try:
        model = ChromaNet(**kwargs)
        model.load_state_dict(dict(state), strict=True)
    except (ConfigError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{where}: weights do not fit the architecture ({exc})") from exc
    return model.eval()


def load_key_model(path: str | os.PathLike) -> LoadedKeyModel:
    """Load a key model: a project ``.safetensors`` file, a released S-KEY/STONE ``.pt``
    or an ONNX file from ``musicssl export-onnx`` (its ``model`` an :class:`OnnxNetwork`)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if is_onnx_file(path):
        return load_onnx_key_model(path)
    if not is_safetensors(path):
        return import_skey_checkpoint(path)
    state, meta = load_model_file(path, FORMAT_NAME, FORMAT_VERSION)
    for key in ("architecture", "frontend", "calibration", "provenance"):
        meta.setdefault(key, None)
    model = _build_chromanet(meta["architecture"], state, str(path))
    try:
        frontend = FrontEndConfig.from_dict(meta["frontend"] or {})
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{path}: bad front-end settings ({exc})") from exc
    calibration = meta["calibration"]
    if calibration is not None and not isinstance(calibration, dict):
        raise CheckpointError(f"{path}: calibration must be an object or null")
    return LoadedKeyModel(model=model, frontend_config=frontend, calibration=calibration,
                          provenance=meta["provenance"] or {}, source_format=FORMAT_NAME)


_GIN_LINE = re.compile(r"^\s*([\w.]+)\s*=\s*(.+?)\s*$")


def _parse_gin(lines: Any) -> dict[str, Any]:
    """``gin_info`` lines ``Scope.name = value`` → ``{"Scope.name": value}`` (literals parsed)."""
    import ast

    out: dict[str, Any] = {}
    if not isinstance(lines, (list, tuple)):
        return out
    for line in lines:
        if not isinstance(line, str):
            continue
        m = _GIN_LINE.match(line)
        if not m:
            continue
        try:
            out[m.group(1)] = ast.literal_eval(m.group(2))
        except (ValueError, SyntaxError):
            out[m.group(1)] = m.group(2).strip('"')
    return out


def _gin_value(gin: Mapping[str, Any], name: str, default: Any = None) -> Any:
    """Value of ``*.name`` in parsed gin settings (any scope)."""
    for key, value in gin.items():
        if key == name or key.endswith("." + name):
            return value
    return default


def import_skey_checkpoint(path: str | os.PathLike) -> LoadedKeyModel:
    """Read a released S-KEY (24 outputs) or STONE (12 outputs) ``.pt`` safely.

    Architecture comes from the tensor shapes (cross-checked with
    ``gin_info``); the front end from ``gin_info`` / ``audio`` with nnAudio
    defaults (hop 512); the stored CQT kernels must equal the project's.
    ``calibration`` is ``None``: calibrate with ``musicssl.key.calibration``.
    """
    path = Path(path)
    where = str(path)
    data = safe_torch_load(path)
    if not isinstance(data, Mapping) or not isinstance(data.get("stone"), Mapping):
        keys = sorted(map(str, data.keys())) if isinstance(data, Mapping) else type(data).__name__
        raise CheckpointError(f"{where}: unknown checkpoint format (expected a released S-KEY/STONE "
                              f"checkpoint with a 'stone' state dict; found {keys})")
    stone = data["stone"]
    state = {k[len("chromanet."):]: v for k, v in stone.items() if k.startswith("chromanet.")}
    if not state or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{where}: no 'chromanet.*' tensors in the checkpoint")
    if any(k.endswith(".norm.weight") for k in state):
        raise CheckpointError(
            f"{where}: this ChromaNet has learned per-frame LayerNorms (the first STONE code "
            f"release, deezer/stone); only the S-KEY-era layout with parameter-free "
            f"layer norms over (C, F, T) is supported")
    gin = _parse_gin(data.get("gin_info"))

    # architecture from the shapes
    try:
        n_stages = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("convnext_blocks."))
        channels = [int(state[f"time_downsampling_blocks.{i}.conv.weight"].shape[0]) for i in range(n_stages)]
        kernels = [int(state[f"convnext_blocks.{i}.dwconv.weight"].shape[-1]) for i in range(n_stages)]
        in_channels = int(state["time_downsampling_blocks.0.conv.weight"].shape[1])
        n_rows = int(state["classifier.weight"].shape[0])
    except (KeyError, ValueError, IndexError) as exc:
        raise CheckpointError(f"{where}: the ChromaNet tensors are incomplete ({exc})") from exc
    if in_channels != 1:
        raise CheckpointError(f"{where}: harmonic CQT inputs ({in_channels} channels) are not supported")
    for name, from_shapes in (("out_channels", channels), ("kernels", kernels)):
        stated = _gin_value(gin, name)
        if stated is not None and list(stated) != from_shapes:
            raise CheckpointError(f"{where}: gin_info says {name}={stated} but the tensors have {from_shapes}")
    arch = {"model": "chromanet", "n_rows": n_rows, "channels": channels, "kernels": kernels,
            "n_bins": int(_gin_value(gin, "Stone.n_bins", _gin_value(gin, "ChromaNet.n_bins", 84))),
            "temperature": float(_gin_value(gin, "temperature", 1.0))}
    model = _build_chromanet(arch, state, where)

    # front end
    audio = data.get("audio") if isinstance(data.get("audio"), Mapping) else {}
    harmonics = _gin_value(gin, "HarmonicVQT.harmonics", [1])
    if list(harmonics) != [1]:
        raise CheckpointError(f"{where}: harmonic CQT (harmonics={harmonics}) is not supported")
    lengths = stone.get("hcqt.lenghts")
    n_bins_cqt = int(lengths.numel()) if torch.is_tensor(lengths) else 99
    try:
        frontend = FrontEndConfig(
            sr=int(audio.get("sr", _gin_value(gin, "get_datasets.sr", 22050))),
            hop_length=int(_gin_value(gin, "HarmonicVQT.hop_length", 512)),
            fmin=float(_gin_value(gin, "HarmonicVQT.fmin", 27.5)),
            n_bins=int(_gin_value(gin, "HarmonicVQT.n_bins", n_bins_cqt)),
            bins_per_octave=int(_gin_value(gin, "HarmonicVQT.bins_per_octave", 12)),
            crop_bins=arch["n_bins"])
        _check_stored_kernels(stone, frontend, where)
    except ConfigError as exc:
        raise CheckpointError(f"{where}: unusable front-end settings ({exc})") from exc

    provenance = {"source": path.name, "source_format": "skey-pt",
                  "epoch": _plain(data.get("epoch")), "val_loss": _plain(data.get("val_loss")),
                  "training_audio": {k: _plain(v) for k, v in audio.items()},
                  "gin_info": [s for s in data.get("gin_info", []) if isinstance(s, str)]}
    return LoadedKeyModel(model=model, frontend_config=frontend, calibration=None,
                          provenance=provenance, source_format="skey-pt")


def _plain(value: Any) -> Any:
    """numpy scalars → Python numbers (for JSON)."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def _check_stored_kernels(stone: Mapping[str, Any], frontend: FrontEndConfig, where: str) -> None:
    """The checkpoint's ``hcqt.*`` buffers must equal the kernels our CQT computes."""
    if not any(k.startswith("hcqt.") for k in stone):
        return
    cqt = CQT.from_config(frontend)
    checks = [("hcqt.lowpass_filter", cqt.lowpass)]
    for i in range(cqt.n_octaves):
        checks += [(f"hcqt.cqt_kernels_real_{i}", cqt.kernels_real),
                   (f"hcqt.cqt_kernels_imag_{i}", cqt.kernels_imag)]
    for name, ours in checks:
        stored = stone.get(name)
        if not torch.is_tensor(stored) or stored.numel() != ours.numel():
            raise CheckpointError(f"{where}: CQT buffer {name} missing or of unexpected shape")
        if not torch.allclose(stored.reshape(ours.shape).float(), ours, atol=1e-6, rtol=0):
            raise CheckpointError(f"{where}: CQT buffer {name} differs from the project's front end")


def convert_skey_checkpoint(src_pt: str | os.PathLike, dst_safetensors: str | os.PathLike,
                            calibration: Mapping[str, Any] | None = None) -> Path:
    """Import a released ``.pt`` and save it in the project format (optionally with a calibration)."""
    loaded = import_skey_checkpoint(src_pt)
    return save_key_model(dst_safetensors, loaded.model, loaded.frontend_config,
                          calibration=calibration, provenance=loaded.provenance)


# --------------------------------------------------------------------------
# ONNX: export and onnxruntime inference (optional extra ``musicssl[onnx]``)
# --------------------------------------------------------------------------
#: ``metadata_props`` ``format`` values of the ONNX files this module writes.
ONNX_KEY_FORMAT = "musicssl-key-onnx"
#: input / output names of the exported graph
ONNX_KEY_INPUT, ONNX_KEY_OUTPUT = "logcqt", "probabilities"


def key_model_onnx(model: ChromaNet, frontend_config: FrontEndConfig, calibration: Mapping[str, Any] | None,
                   provenance: Mapping[str, Any] | None = None) -> bytes:
    """A ChromaNet as ONNX bytes: input ``logcqt`` ``(B, 1, n_bins, T)`` (a crop of the
    log-CQT, ``T >= model.min_frames``), output ``probabilities`` ``(B, 12 * n_rows)``;
    metadata ``format``, ``architecture``, ``frontend``, ``calibration``, ``provenance`` (JSON)."""
    example = torch.zeros(1, 1, model.n_bins, max(2 * model.min_frames, 256))
    raw = onnx_bytes(model, (example,), [ONNX_KEY_INPUT], [ONNX_KEY_OUTPUT], model.min_frames)
    return with_metadata(raw, {"format": ONNX_KEY_FORMAT, "format_version": str(FORMAT_VERSION),
                                "architecture": model.architecture(), "frontend": frontend_config.to_dict(),
                                "calibration": None if calibration is None else dict(calibration),
                                "provenance": dict(provenance or {})})


def load_onnx_key_model(path: str | os.PathLike) -> LoadedKeyModel:
    """A key model from an ONNX file written by ``musicssl export-onnx``; its ``model``
    is an :class:`OnnxNetwork`."""
    path = Path(path)
    data, meta = read_onnx(path, ONNX_KEY_FORMAT)
    try:
        frontend = FrontEndConfig.from_dict(meta.get("frontend") or {})
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{path}: bad front-end settings ({exc})") from exc
    calibration = meta.get("calibration")
    if calibration is not None and not isinstance(calibration, dict):
        raise CheckpointError(f"{path}: calibration must be an object or null")
    return LoadedKeyModel(model=OnnxNetwork(data, meta), frontend_config=frontend, calibration=calibration,
                          provenance=meta.get("provenance") or {}, source_format="onnx")


def key_onnx_network(source: str | os.PathLike, loaded: LoadedKeyModel, calibration: Mapping[str, Any]) -> OnnxNetwork:
    """The key network of checkpoint ``source`` (loaded as ``loaded``) on onnxruntime,
    exported once and cached (:func:`cached_onnx`)."""
    if isinstance(loaded.model, OnnxNetwork):
        return loaded.model
    data = cached_onnx(source, lambda: key_model_onnx(loaded.model, loaded.frontend_config, calibration,
                                                      loaded.provenance))
    return OnnxNetwork(data, read_onnx_metadata(data))


#: Name of the shipped model that ``"default"`` means, when the package has it.
DEFAULT_MODEL = "skey-band"


def shipped_key_models() -> dict[str, Path]:
    """Key models shipped inside the package: ``{name: path}``, e.g.
    ``{"skey-debian": .../data/models/skey_debian.safetensors}``."""
    folder = Path(str(resources.files("musicssl") / "data" / "models"))
    return {p.stem.replace("_", "-"): p for p in sorted(folder.glob("*.safetensors"))
            if p.stem.startswith(("skey", "stone"))}


def default_model_path() -> Path | None:
    """Path of the shipped default key model, or None if this build has none."""
    return shipped_key_models().get(DEFAULT_MODEL)


def read_training_checkpoint(path: str | os.PathLike) -> tuple[dict, dict, int]:
    """``(TrainConfig dict, module state dict, global step)`` of a key training ``.ckpt``."""
    ckpt = model_file.read_training_checkpoint(path, "musicssl key training checkpoint")
    try:
        return dict(ckpt["hyper_parameters"]["config"]), ckpt["state_dict"], int(ckpt.get("global_step", -1))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a musicssl key training checkpoint ({exc})") from exc
