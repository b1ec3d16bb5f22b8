"""Model files: the project's checkpoint format and safe import of released S-KEY/STONE ``.pt``.

This is the only module that reads or writes model files (key models and
ZeroNS beat models, :func:`save_zerons_model` / :func:`load_zerons_model`).

Project format (``format_version`` 1): one ``.safetensors`` file holding the
network's state dict, with JSON strings in the safetensors header metadata:

* ``format``: ``"musicssl-key"``; ``format_version``: ``"1"``;
* ``architecture``: ``{"model": "chromanet", "n_rows", "channels", "kernels",
  "n_bins", "temperature"}``;
* ``frontend``: :class:`~musicssl.frontend.cqt.FrontEndConfig` as a dict;
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

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from musicssl.backends import BACKENDS
from musicssl.errors import CheckpointError, ConfigError
from musicssl.frontend.cqt import CQT, FrontEndConfig
from musicssl.key.model import ChromaNet

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "LoadedKeyModel",
    "save_key_model",
    "save_model_file",
    "load_model_file",
    "read_model_file_metadata",
    "load_key_model",
    "read_metadata",
    "import_skey_checkpoint",
    "convert_skey_checkpoint",
    "IMPORTED_SKEY_CALIBRATION",
    "BACKENDS",
    "OnnxNetwork",
    "key_model_onnx",
    "zerons_model_onnx",
    "export_onnx_file",
    "read_onnx_metadata",
    "load_onnx_key_model",
    "load_onnx_zerons_model",
]

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


# --------------------------------------------------------------------------
# project format
# --------------------------------------------------------------------------
def save_model_file(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], format_name: str,
                    format_version: int, fields: Mapping[str, Any]) -> Path:
    """Write ``tensors`` to a ``.safetensors`` file atomically, with ``format``,
    ``format_version`` and each of ``fields`` JSON-encoded in the header metadata.

    Generic writer for every model file of the project (key and beat models).
    """
    from safetensors.torch import save

    from musicssl.outputs import atomic_open

    path = Path(path)
    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    metadata = {"format": str(format_name), "format_version": str(int(format_version))}
    for key, value in fields.items():
        if key in metadata:
            raise CheckpointError(f"metadata field {key!r} is reserved")
        metadata[key] = json.dumps(value, default=str)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as handle:
        handle.write(save(plain, metadata=metadata))
    return path


def read_model_file_metadata(path: str | os.PathLike, format_name: str,
                             format_version: int) -> dict[str, Any]:
    """JSON-decoded header metadata of a file written by :func:`save_model_file`.

    Raises :class:`CheckpointError` if the file is missing, not safetensors,
    of another format or of another version.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if not _is_safetensors(path):
        raise CheckpointError(f"{path}: not a .safetensors model file")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: unreadable safetensors file ({exc})") from exc
    if raw.get("format") != format_name:
        raise CheckpointError(f"{path}: safetensors file is not a {format_name} checkpoint "
                              f"(format={raw.get('format')!r})")
    try:
        version = int(raw.get("format_version", "0"))
    except ValueError:
        version = -1
    if version != int(format_version):
        raise CheckpointError(f"{path}: unsupported format_version {raw.get('format_version')!r} "
                              f"(this musicssl reads {format_version})")
    out: dict[str, Any] = {"format": format_name, "format_version": version}
    for key, value in raw.items():
        if key in out:
            continue
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{path}: metadata field {key!r} is not valid JSON") from exc
    return out


def write_tensor_file(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], kind: str, version: int,
                      info: Mapping[str, Any]) -> Path:
    """:func:`save_model_file` for data files (training banks): ``info`` in one metadata field."""
    return save_model_file(path, tensors, kind, version, {"info": dict(info)})


def read_tensor_file(path: str | os.PathLike, kind: str, version: int, what: str) -> tuple[dict, dict]:
    """``(tensors, info)`` of a file written by :func:`write_tensor_file`; anything else
    raises ``ConfigError`` naming ``what`` (no pickle)."""
    try:
        tensors, meta = load_model_file(path, kind, version)
        return tensors, meta["info"]
    except (CheckpointError, KeyError) as exc:
        raise ConfigError(f"{path}: not a readable {what} ({exc})") from exc


def load_model_file(path: str | os.PathLike, format_name: str, format_version: int
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors on CPU, decoded metadata)`` of a file written by :func:`save_model_file`."""
    from safetensors.torch import load_file

    meta = read_model_file_metadata(path, format_name, format_version)
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable tensors ({exc})") from exc
    return tensors, meta


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


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    size = int.from_bytes(head[:8], "little")
    return 0 < size < 100_000_000 and head[8:9] == b"{"


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
    if not _is_safetensors(path):
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


# --------------------------------------------------------------------------
# ZeroNS beat models
# --------------------------------------------------------------------------
#: Beat-model format (``format_version`` 1): the ZeroNS state dict (float32 or
#: float16) with JSON metadata ``architecture`` (``{"model": "zerons", **ZeroNS.config}``),
#: ``frontend`` (VQT settings), ``separator``, ``provenance`` and ``polarity``
#: (``{"percussive": ±1, "non_percussive": ±1, ...}``; optional when reading).
ZERONS_FORMAT = "musicssl-zerons"
ZERONS_FORMAT_VERSION = 1
_DEFAULT_POLARITY = {"percussive": 1, "non_percussive": 1}


def _zerons_frontend_dict() -> dict:
    from musicssl.beat.frontend import BINS_PER_OCTAVE, FMIN_C0, HOP_LENGTH, LOG_EPS, N_BINS, SAMPLE_RATE

    return {"sr": SAMPLE_RATE, "hop_length": HOP_LENGTH, "fmin": FMIN_C0, "n_bins": N_BINS,
            "bins_per_octave": BINS_PER_OCTAVE, "log_eps": LOG_EPS}


def save_zerons_model(path: str | os.PathLike, model, separator=None,
                      provenance: Mapping[str, Any] | None = None, half: bool = False,
                      polarity: Mapping[str, int] | None = None) -> Path:
    """Write a ZeroNS ``model`` (architecture, front end, separator) to ``.safetensors``.

    ``half`` stores float16 weights (half the size; loaded back as float32).
    """
    from musicssl.beat.separation import get_separator, separator_description

    dtype = torch.float16 if half else torch.float32
    tensors = {k: v.detach().to("cpu", dtype) for k, v in model.state_dict().items()}
    fields = {
        "architecture": {"model": "zerons", **model.config},
        "frontend": _zerons_frontend_dict(),
        "separator": separator_description(separator or get_separator()),
        "provenance": dict(provenance or {}),
        "polarity": dict(polarity or _DEFAULT_POLARITY),
    }
    return save_model_file(path, tensors, ZERONS_FORMAT, ZERONS_FORMAT_VERSION, fields)


def load_zerons_model(path: str | os.PathLike) -> tuple[Any, dict]:
    """``(ZeroNS in eval mode, metadata dict)`` from a file written by :func:`save_zerons_model`
    (or ``(OnnxNetwork, metadata)`` from one written by ``musicssl export-onnx``)."""
    from musicssl.beat.frontend import HOP_LENGTH, SAMPLE_RATE
    from musicssl.beat.model import ZeroNS

    if is_onnx_file(path):
        return load_onnx_zerons_model(path)

    tensors, raw = load_model_file(path, ZERONS_FORMAT, ZERONS_FORMAT_VERSION)
    try:
        meta = {k: raw[k] for k in ("architecture", "frontend", "separator", "provenance")}
    except KeyError as exc:
        raise CheckpointError(f"{path}: malformed metadata (missing {exc})") from exc
    meta["polarity"] = raw.get("polarity", dict(_DEFAULT_POLARITY))
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


# --------------------------------------------------------------------------
# released S-KEY / STONE checkpoints
# --------------------------------------------------------------------------
def _numpy_safe_globals() -> list:
    """The numpy globals a released checkpoint pickles (numpy scalars in its metadata)."""
    try:
        scalar = np._core.multiarray.scalar  # numpy >= 2
    except AttributeError:  # pragma: no cover - numpy 1.x
        scalar = np.core.multiarray.scalar
    # files written under numpy 1 name it numpy.core..., under numpy 2 numpy._core...
    allowed: list = [(scalar, "numpy.core.multiarray.scalar"), scalar, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [dtypes.Float64DType, dtypes.Float32DType, dtypes.Int64DType, dtypes.Int32DType]
    return allowed


def _safe_torch_load(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, zipfile errors ...
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        reason = next((ln for ln in lines if "unsupported" in ln.lower() or "blocked" in ln),
                      lines[0] if lines else type(exc).__name__)
        raise CheckpointError(
            f"{path}: refused or unreadable as a weights-only torch checkpoint "
            f"(only tensors and plain data are accepted; no pickled code is run): {reason}") from exc


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
    data = _safe_torch_load(path)
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
    cqt = CQT(sr=frontend.sr, hop_length=frontend.hop_length, fmin=frontend.fmin,
              n_bins=frontend.n_bins, bins_per_octave=frontend.bins_per_octave)
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
ONNX_ZERONS_FORMAT = "musicssl-zerons-onnx"
ONNX_OPSET = 18
#: input / output names of the exported graphs
ONNX_KEY_INPUT, ONNX_KEY_OUTPUT = "logcqt", "probabilities"
ONNX_ZERONS_INPUTS = ("percussive_spec", "non_percussive_spec")
ONNX_ZERONS_OUTPUTS = ("percussive", "non_percussive")


def is_onnx_file(path: str | os.PathLike) -> bool:
    """True for a path ending in ``.onnx`` (ONNX files have no magic number)."""
    return Path(path).suffix.lower() == ".onnx"


def _require_onnx(what: str):
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError as exc:
        raise ConfigError(f"{what} needs onnx and onnxruntime: pip install 'musicssl[onnx]' ({exc})") from None
    return onnxruntime


class _ZeroNSNoNorm(torch.nn.Module):
    """ZeroNS on inputs already standardised (what ``BeatEstimator`` feeds it)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, percussive_spec, non_percussive_spec):
        return self.model(percussive_spec, non_percussive_spec, normalize=False)


def _onnx_bytes(module: torch.nn.Module, inputs: tuple, input_names, output_names, min_frames: int) -> bytes:
    """``module`` exported with torch's ONNX exporter (batch and time axes dynamic)."""
    import io
    import logging
    import warnings

    _require_onnx("ONNX export")
    frames = torch.export.Dim("frames", min=min_frames)
    shapes = tuple({0: torch.export.Dim(f"batch{i}"), 3: frames} for i in range(len(inputs)))
    buffer = io.BytesIO()
    quiet = logging.getLogger("torch.onnx")       # e.g. "torchvision is not installed"
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module.eval(), inputs, buffer, input_names=list(input_names),
                              output_names=list(output_names), opset_version=ONNX_OPSET, dynamo=True,
                              dynamic_shapes=shapes, optimize=False, verbose=False)
        except Exception as exc:   # the exporter raises many types
            raise CheckpointError(f"ONNX export failed: {exc}") from exc
        finally:
            quiet.setLevel(level)
    return buffer.getvalue()


def _with_metadata(onnx_bytes: bytes, fields: Mapping[str, Any]) -> bytes:
    """The model with ``fields`` (JSON-encoded) as ``metadata_props``."""
    import onnx

    proto = onnx.load_from_string(onnx_bytes)
    del proto.metadata_props[:]
    for key, value in fields.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value, default=str)
    proto.producer_name = "musicssl"
    return proto.SerializeToString()


def key_model_onnx(model: ChromaNet, frontend_config: FrontEndConfig, calibration: Mapping[str, Any] | None,
                   provenance: Mapping[str, Any] | None = None) -> bytes:
    """A ChromaNet as ONNX bytes: input ``logcqt`` ``(B, 1, n_bins, T)`` (a crop of the
    log-CQT, ``T >= model.min_frames``), output ``probabilities`` ``(B, 12 * n_rows)``;
    metadata ``format``, ``architecture``, ``frontend``, ``calibration``, ``provenance`` (JSON)."""
    example = torch.zeros(1, 1, model.n_bins, max(2 * model.min_frames, 256))
    raw = _onnx_bytes(model, (example,), [ONNX_KEY_INPUT], [ONNX_KEY_OUTPUT], model.min_frames)
    return _with_metadata(raw, {"format": ONNX_KEY_FORMAT, "format_version": str(FORMAT_VERSION),
                                "architecture": model.architecture(), "frontend": frontend_config.to_dict(),
                                "calibration": None if calibration is None else dict(calibration),
                                "provenance": dict(provenance or {})})


def zerons_model_onnx(model, meta: Mapping[str, Any]) -> bytes:
    """Both ZeroNS networks as one ONNX graph: inputs ``percussive_spec`` and
    ``non_percussive_spec`` ``(B, 1, 96, T)`` (log-VQT, already standardised when
    ``architecture.input_norm``), outputs ``percussive`` / ``non_percussive`` ``(B, T)``
    in (0, 1); metadata as the ``.safetensors`` file (architecture, frontend, separator,
    provenance, polarity)."""
    n_bins = int(model.config["n_bins"])
    example = torch.zeros(1, 1, n_bins, 256)
    raw = _onnx_bytes(_ZeroNSNoNorm(model), (example, example.clone()), ONNX_ZERONS_INPUTS,
                      ONNX_ZERONS_OUTPUTS, 16)
    fields = {"format": ONNX_ZERONS_FORMAT, "format_version": str(ZERONS_FORMAT_VERSION)}
    fields.update({k: meta.get(k) for k in ("architecture", "frontend", "separator", "provenance", "polarity")})
    return _with_metadata(raw, fields)


def export_onnx_file(path: str | os.PathLike, onnx_bytes: bytes) -> Path:
    """Write ONNX bytes (from :func:`key_model_onnx` / :func:`zerons_model_onnx`) atomically."""
    from musicssl.outputs import atomic_open

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as handle:
        handle.write(onnx_bytes)
    return path


def read_onnx_metadata(source: str | os.PathLike | bytes) -> dict[str, Any]:
    """JSON-decoded ``metadata_props`` of a musicssl ONNX file (or bytes)."""
    _require_onnx("reading an ONNX model")
    import onnx

    try:
        proto = (onnx.load_from_string(source) if isinstance(source, bytes)
                 else onnx.load(str(source), load_external_data=False))
    except Exception as exc:
        raise CheckpointError(f"{source if not isinstance(source, bytes) else 'ONNX bytes'}: "
                              f"not a readable ONNX model ({exc})") from exc
    out: dict[str, Any] = {}
    for entry in proto.metadata_props:
        try:
            out[entry.key] = json.loads(entry.value)
        except json.JSONDecodeError:
            out[entry.key] = entry.value
    return out


class OnnxNetwork(torch.nn.Module):
    """An ONNX graph run by onnxruntime behind the interface of the torch network it
    replaces: tensors in, tensors out (CPU float32 numpy inside). ``n_rows`` (key
    networks) and ``percussive.input_norm`` (ZeroNS) are set from the metadata."""

    def __init__(self, onnx_bytes: bytes, metadata: Mapping[str, Any]):
        super().__init__()
        ort = _require_onnx("--backend onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, torch.get_num_threads())   # as torch would run it
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise CheckpointError(f"onnxruntime cannot load the model ({exc})") from exc
        self.metadata = dict(metadata)
        self.input_names = [i.name for i in self.session.get_inputs()]
        arch = self.metadata.get("architecture") or {}
        self.n_rows = int(arch.get("n_rows", 2))
        norm = bool(arch.get("input_norm", False))
        self.percussive = self.non_percussive = type("Branch", (), {"input_norm": norm})()

    def forward(self, *inputs, normalize: bool | None = None):
        if normalize:
            raise ConfigError("an ONNX ZeroNS graph expects standardised inputs (normalize=False)")
        feed = {name: x.detach().to("cpu", torch.float32).contiguous().numpy()
                for name, x in zip(self.input_names, inputs)}
        outputs = [torch.from_numpy(o) for o in self.session.run(None, feed)]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


def _read_onnx(path: Path, expected_format: str) -> tuple[bytes, dict[str, Any]]:
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    data = path.read_bytes()
    meta = read_onnx_metadata(data)
    if meta.get("format") != expected_format:
        raise CheckpointError(f"{path}: not a {expected_format} ONNX model (format={meta.get('format')!r})")
    return data, meta


def load_onnx_key_model(path: str | os.PathLike) -> LoadedKeyModel:
    """A key model from an ONNX file written by ``musicssl export-onnx``; its ``model``
    is an :class:`OnnxNetwork`."""
    path = Path(path)
    data, meta = _read_onnx(path, ONNX_KEY_FORMAT)
    try:
        frontend = FrontEndConfig.from_dict(meta.get("frontend") or {})
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{path}: bad front-end settings ({exc})") from exc
    calibration = meta.get("calibration")
    if calibration is not None and not isinstance(calibration, dict):
        raise CheckpointError(f"{path}: calibration must be an object or null")
    return LoadedKeyModel(model=OnnxNetwork(data, meta), frontend_config=frontend, calibration=calibration,
                          provenance=meta.get("provenance") or {}, source_format="onnx")


def load_onnx_zerons_model(path: str | os.PathLike) -> tuple[OnnxNetwork, dict]:
    """``(OnnxNetwork, metadata)`` from a ZeroNS ONNX file, as :func:`load_zerons_model`."""
    data, meta = _read_onnx(Path(path), ONNX_ZERONS_FORMAT)
    meta["polarity"] = meta.get("polarity") or dict(_DEFAULT_POLARITY)
    return OnnxNetwork(data, meta), meta


def cache_dir(kind: str) -> Path:
    """The project's cache folder for ``kind`` (``calibration``, ``onnx``): under
    ``$MUSICSSL_CACHE``, else ``$XDG_CACHE_HOME/musicssl`` or ``~/.cache/musicssl``."""
    base = os.environ.get("MUSICSSL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "musicssl")
    return Path(base) / kind


def onnx_cache_dir() -> Path:
    """Where ``--backend onnx`` keeps the ONNX graphs it exported from torch checkpoints."""
    return cache_dir("onnx")


def cached_onnx(source: str | os.PathLike, make_bytes) -> bytes:
    """ONNX bytes for the checkpoint ``source``: read from :func:`onnx_cache_dir` (by the
    file's SHA-256 and this musicssl's version) or made by ``make_bytes()`` and stored."""
    import hashlib

    from musicssl import __version__

    digest = hashlib.sha256(Path(source).read_bytes()).hexdigest()
    cache = onnx_cache_dir() / f"{digest[:32]}-{__version__}.onnx"
    if cache.is_file():
        return cache.read_bytes()
    data = make_bytes()
    try:
        export_onnx_file(cache, data)
    except OSError:
        pass  # a read-only cache only costs time
    return data


#: inference backends of the network models (``None`` in the APIs: as the file is)
def check_backend(path: str | os.PathLike, backend: str | None) -> str:
    """The backend a model file runs on: ``backend``, or by default ``onnx`` for ``.onnx``
    files and ``torch`` for the others; a ``.onnx`` file cannot run on torch."""
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if is_onnx_file(path):
        if backend == "torch":
            raise ConfigError(f"{path}: an ONNX model runs with the onnx backend only")
        return "onnx"
    return backend or "torch"


def key_onnx_network(source: str | os.PathLike, loaded: LoadedKeyModel, calibration: Mapping[str, Any]) -> OnnxNetwork:
    """The key network of checkpoint ``source`` (loaded as ``loaded``) on onnxruntime,
    exported once and cached (:func:`cached_onnx`)."""
    if isinstance(loaded.model, OnnxNetwork):
        return loaded.model
    data = cached_onnx(source, lambda: key_model_onnx(loaded.model, loaded.frontend_config, calibration,
                                                      loaded.provenance))
    return OnnxNetwork(data, read_onnx_metadata(data))


def zerons_onnx_network(source: str | os.PathLike, model, meta: Mapping[str, Any]) -> OnnxNetwork:
    """The ZeroNS networks of checkpoint ``source`` on onnxruntime, exported once and cached."""
    if isinstance(model, OnnxNetwork):
        return model
    data = cached_onnx(source, lambda: zerons_model_onnx(model, meta))
    return OnnxNetwork(data, read_onnx_metadata(data))
