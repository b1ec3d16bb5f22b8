"""Model files, whatever the task: safetensors with JSON metadata, weights-only
torch loading, ONNX bytes with metadata, the per-user cache folder.

Every model file the project reads or writes goes through here; each task's
own format lives in its package (:mod:`musicssl.key.checkpoint`,
:mod:`musicssl.beat.checkpoint`). A project file is one ``.safetensors`` file
holding a state dict, with JSON strings in the header metadata (``format``,
``format_version`` and what the task stores). Torch files are only ever read
with ``torch.load(weights_only=True)`` and an allow-list of numpy globals, so
no pickled code can run. ONNX files carry the same metadata as
``metadata_props``; ``--backend onnx`` runs them with onnxruntime
(:class:`OnnxNetwork`), exported once into the cache (:func:`cached_onnx`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from musicssl.backends import BACKENDS
from musicssl.errors import CheckpointError, ConfigError
from musicssl.io.atomic import atomic_open

__all__ = [
    "save_model_file",
    "load_model_file",
    "read_model_file_metadata",
    "BACKENDS",
    "OnnxNetwork",
    "export_onnx_file",
    "read_onnx_metadata",
]


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
    if not is_safetensors(path):
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


def encode_below_peak(x: torch.Tensor, lengths: torch.Tensor, span: float) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 codes ``(..., N)`` and float32 peaks ``(n,)`` of log-scale features ``x (..., N)`` of
    ``n`` tracks laid side by side (``lengths (n,)`` frames): half the bytes of float16.

    Code ``q`` of a frame of track ``i`` stands for ``peak_i − span · (1 − q / 255)`` (steps of
    ``span / 255``, error at most half a step); values more than ``span`` below the track's peak
    come back at that floor.
    """
    lengths = lengths.cpu().to(torch.int64)
    x = x.detach().cpu().float()
    ends = torch.cumsum(lengths, 0)
    peaks = torch.tensor([float(x[..., int(e - n):int(e)].amax()) if int(n) else 0.0 for e, n in zip(ends, lengths)],
                         dtype=torch.float32)
    floor = (peaks - span).repeat_interleave(lengths)
    codes = ((x - floor) * (255.0 / span)).round().clamp(0, 255).to(torch.uint8)
    return codes, peaks


def decode_below_peak(codes: torch.Tensor, peaks: torch.Tensor, lengths: torch.Tensor, span: float) -> torch.Tensor:
    """float16 features ``(..., N)`` of :func:`encode_below_peak`'s ``codes`` and ``peaks``."""
    floor = (peaks.float() - span).repeat_interleave(lengths.cpu().to(torch.int64))
    return (codes.float() * (span / 255.0) + floor).to(torch.float16)


#: how a bank file may store its features: exactly, or as :func:`encode_below_peak` codes
BANK_STORAGES = ("float16", "uint8")


def stored_features(name: str, x: torch.Tensor, lengths: torch.Tensor, span: float,
                    storage: str) -> dict[str, torch.Tensor]:
    """The tensors a bank file holds for features ``x (..., N)`` of tracks of ``lengths (n,)`` frames:
    ``{name: x}`` (``"float16"``) or ``{name_codes, name_peak}`` (``"uint8"``, ``span`` below each peak)."""
    if storage == "float16":
        return {name: x}
    if storage == "uint8":
        codes, peaks = encode_below_peak(x, lengths, span)
        return {f"{name}_codes": codes, f"{name}_peak": peaks}
    raise ConfigError(f"bank storage must be one of {', '.join(BANK_STORAGES)}, got {storage!r}")


def restored_features(tensors: Mapping[str, torch.Tensor], name: str, lengths: torch.Tensor, span: float,
                      storage: str) -> torch.Tensor:
    """float16 features ``(..., N)`` from the tensors :func:`stored_features` wrote (``ConfigError``
    for another storage or missing tensors)."""
    try:
        if storage == "float16":
            return tensors[name]
        if storage == "uint8":
            return decode_below_peak(tensors[f"{name}_codes"], tensors[f"{name}_peak"], lengths, span)
    except KeyError as exc:
        raise ConfigError(f"bank file stored as {storage} lacks the tensor {exc}") from exc
    raise ConfigError(f"bank file says its storage is {storage!r}, not one of {', '.join(BANK_STORAGES)}")


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


def is_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    size = int.from_bytes(head[:8], "little")
    return 0 < size < 100_000_000 and head[8:9] == b"{"


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


def safe_torch_load(path: Path) -> Any:
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


ONNX_OPSET = 18


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


def onnx_bytes(module: torch.nn.Module, inputs: tuple, input_names, output_names, min_frames: int) -> bytes:
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


def with_metadata(onnx_bytes: bytes, fields: Mapping[str, Any]) -> bytes:
    """The model with ``fields`` (JSON-encoded) as ``metadata_props``."""
    import onnx

    proto = onnx.load_from_string(onnx_bytes)
    del proto.metadata_props[:]
    for key, value in fields.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value, default=str)
    proto.producer_name = "musicssl"
    return proto.SerializeToString()


def export_onnx_file(path: str | os.PathLike, onnx_bytes: bytes) -> Path:
    """Write ONNX bytes (from :func:`key_model_onnx` / :func:`zerons_model_onnx`) atomically."""

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


def read_onnx(path: Path, expected_format: str) -> tuple[bytes, dict[str, Any]]:
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    data = path.read_bytes()
    meta = read_onnx_metadata(data)
    if meta.get("format") != expected_format:
        raise CheckpointError(f"{path}: not a {expected_format} ONNX model (format={meta.get('format')!r})")
    return data, meta


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




def read_training_checkpoint(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """A Lightning ``.ckpt`` written by this project's training, read with
    ``weights_only=True`` (tensors and plain data only; no pickled code runs).
    ``what`` names the expected kind in the error message."""
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a checkpoint error
        raise CheckpointError(f"{path}: not a {what} ({exc})") from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise CheckpointError(f"{path}: not a {what} (no state_dict / hyper_parameters)")
    return ckpt
