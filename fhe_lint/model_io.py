"""Reading and writing model files: the only module that touches the disk for models.

Reading refuses anything that is not plausibly ONNX before parsing it, and never follows
external-data references out of the model's directory. Writing is atomic: a temp file in the
target's directory, fsync, rename; on any failure the original is untouched and nothing is left.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper

from fhe_lint.errors import FixError, ModelLoadError

# protobuf writes fields in number order and ModelProto's field 1 is ir_version (a varint):
# every serialized ONNX model starts with the tag byte 0x08. Checking it first keeps a huge
# non-ONNX file from being read whole.
_ONNX_FIRST_BYTE = 0x08


def read_model(path: Path) -> tuple[onnx.ModelProto, bytes]:
    """Parse ``path`` as an ONNX model; return it with the exact bytes read (for no-op fixes)."""
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file")
    if not path.is_file():
        raise ModelLoadError(f"{path}: not a regular file")
    try:
        with path.open("rb") as f:
            head = f.read(1)
            if head != bytes([_ONNX_FIRST_BYTE]):
                raise ModelLoadError(f"{path}: not an ONNX model (empty or wrong header)")
            data = head + f.read()
    except OSError as e:
        raise ModelLoadError(f"{path}: cannot read: {e.strerror or e}") from e
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ModelLoadError(f"{path}: not an ONNX model or truncated ({e})") from e
    if model.ir_version < 3 or not model.HasField("graph") or not model.graph.node:
        raise ModelLoadError(f"{path}: not an ONNX model (no ir_version or empty graph)")
    _load_external_data(model, path)
    return model, data


def _external_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    return [
        t
        for t in external_data_helper._get_all_tensors(model)  # noqa: SLF001 - onnx's own walker
        if t.data_location == onnx.TensorProto.EXTERNAL
    ]


def _load_external_data(model: onnx.ModelProto, path: Path) -> None:
    """Load external tensors, refusing any location that leaves the model's directory."""
    tensors = _external_tensors(model)
    if not tensors:
        return
    base = path.resolve().parent
    for t in tensors:
        info = {e.key: e.value for e in t.external_data}
        location = info.get("location", "")
        target = (base / location).resolve()
        if not location or os.path.isabs(location) or not target.is_relative_to(base):
            raise ModelLoadError(
                f"{path}: tensor {t.name!r} has external data outside the model's directory "
                f"({location!r}); refusing to read it"
            )
        if not target.is_file():
            raise ModelLoadError(f"{path}: tensor {t.name!r}: external data {location!r} is missing")
    try:
        external_data_helper.load_external_data_for_model(model, str(base))
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{path}: cannot read external data: {e}") from e


def has_external_data(model: onnx.ModelProto) -> bool:
    return bool(_external_tensors(model))


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` (through a symlink: its target) with ``data``, all or nothing."""
    target = Path(os.path.realpath(path))
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as e:
        raise FixError(f"{path}: cannot write: {e.strerror or e}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise FixError(f"{path}: cannot write: {e.strerror or e}") from e
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
