"""Reading and writing model files: the only module that touches the disk for models.

Reading refuses anything that is not plausibly ONNX before parsing it, and never follows
external-data references out of the model's directory. Writing is atomic: a temp file in the
target's directory, fsync, rename; on any failure the original is untouched and nothing is left.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import stat
import tempfile
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper

from fhe_lint.errors import FixError, ModelLoadError
from fhe_lint.quantizers import QONNX_DOMAINS

# protobuf writes fields in number order and ModelProto's field 1 is ir_version (a varint):
# every serialized ONNX model starts with the tag byte 0x08. Checking it first keeps a huge
# non-ONNX file from being read whole.
_ONNX_FIRST_BYTE = 0x08
_PROTOBUF_LIMIT = 2**31


def read_model(path: Path) -> onnx.ModelProto:
    """Parse ``path`` as an ONNX model."""
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file")
    if not path.is_file():
        raise ModelLoadError(f"{path}: not a regular file")
    try:
        size = path.stat().st_size
        if size >= _PROTOBUF_LIMIT:
            raise ModelLoadError(
                f"{path}: {size} bytes is past protobuf's 2 GiB limit, so not a single-file ONNX model "
                "(large models keep their weights in external data files)"
            )
        with path.open("rb") as f:
            if f.read(1) != bytes([_ONNX_FIRST_BYTE]):
                raise ModelLoadError(f"{path}: not an ONNX model (empty or wrong header)")
            f.seek(0)
            data = f.read()
    except OSError as e:
        raise ModelLoadError(f"{path}: cannot read: {e.strerror or e}") from e
    return parse_model(data, path)


def parse_model(data: bytes, path: Path) -> onnx.ModelProto:
    """Parse and validate serialized ONNX ``data``; ``path`` locates external data and messages."""
    if data[:1] != bytes([_ONNX_FIRST_BYTE]):
        raise ModelLoadError(f"{path}: not an ONNX model (empty or wrong header)")
    # The checker parses the bytes in C++: running it before Python's own parse keeps the two
    # parsed copies from coexisting (peak memory); its verdict waits until the parse has told
    # whether the input is ONNX at all.
    verdict = _check(data, path)
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ModelLoadError(f"{path}: not an ONNX model or truncated ({e})") from e
    if model.ir_version < 3 or not model.HasField("graph") or not model.graph.node:
        raise ModelLoadError(f"{path}: not an ONNX model (no ir_version or empty graph)")
    if _external_tensors(model):  # the bytes alone cannot be checked: their data is elsewhere
        _load_external_data(model, path)  # validates every location first
        verdict = _check(model.SerializeToString() if model.ByteSize() < _PROTOBUF_LIMIT else str(path), path)
    if verdict is not None:
        raise verdict
    return model


def _check(model: bytes | str, path: Path) -> ModelLoadError | None:
    """onnx.checker's verdict, tolerating one quirk of QONNX exports: custom quantizer domains
    used without an opset import."""
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as e:  # ValueError: e.g. invalid UTF-8 in names
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        missing = re.match(r"No opset import for domain '([^']*)'", first)
        if missing and missing.group(1) in QONNX_DOMAINS:
            return None
        error = ModelLoadError(f"{path}: invalid ONNX model: {first}")
        error.__cause__ = e
        return error
    return None


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


def write_model(fixed: onnx.ModelProto, source: Path, target: Path, touched: frozenset[str]) -> None:
    """Write a fixed model over ``target``.

    A model whose initializers live in external data keeps them there when fixed in place: each
    data file holding a ``touched`` tensor is replaced by a patched copy (atomically, offsets
    unchanged), then the small ``.onnx`` is replaced. Written elsewhere (``--output``), the data
    is embedded, if it fits in one protobuf.
    """
    refs = {t.name: t for t in onnx.load_model(str(source), load_external_data=False).graph.initializer
            if t.data_location == onnx.TensorProto.EXTERNAL}
    same = os.path.realpath(target) == os.path.realpath(source)
    if refs and not same and fixed.ByteSize() >= _PROTOBUF_LIMIT:
        raise FixError(f"{target}: the fixed model is past 2 GiB with its data embedded; fix it in place instead")
    if not refs or not same:
        write_atomic(target, fixed.SerializeToString())
        return
    base = Path(os.path.realpath(source)).parent
    patches: dict[str, list[tuple[int, bytes]]] = {}
    for t in fixed.graph.initializer:
        ref = refs.get(t.name)
        if ref is None:
            continue  # inline, or a copy the fix made: it stays in the .onnx
        info = {e.key: e.value for e in ref.external_data}
        if t.name in touched:
            offset, length = int(info.get("offset", 0)), info.get("length")
            if length is not None and int(length) != len(t.raw_data):
                raise FixError(f"{source}: tensor {t.name!r} changed size; cannot patch its external data")
            patches.setdefault(info["location"], []).append((offset, t.raw_data))
        t.ClearField("raw_data")
        t.data_location = onnx.TensorProto.EXTERNAL
        del t.external_data[:]
        t.external_data.extend(ref.external_data)
    for location, changes in patches.items():
        _patch_copy(base / location, changes)
    write_atomic(target, fixed.SerializeToString())


def _patch_copy(path: Path, changes: list[tuple[int, bytes]]) -> None:
    """Replace ``path`` by a copy with ``changes`` (offset, bytes) applied, all or nothing."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.close(fd)
        shutil.copyfile(path, tmp)
        with open(tmp, "r+b") as f:
            for offset, data in changes:
                f.seek(offset)
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise FixError(f"{path}: cannot write: {e.strerror or e}; the original is untouched") from e


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` (through a symlink: its target) with ``data``, all or nothing.

    The data goes to an unnamed file in the target's directory (``O_TMPFILE``), which a crash
    simply discards; only once it is complete and fsynced does it get a name, immediately renamed
    over the target. Where ``O_TMPFILE`` is unavailable a named temp file is used and removed on
    any error.
    """
    target = Path(os.path.realpath(path))
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    except OSError as e:
        raise FixError(f"{path}: cannot write: {e.strerror or e}") from e
    tmp: Path | None = None
    try:
        fd, tmp = _open_temp(target, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), mode)
            if tmp is None:  # unnamed: give it a name only now that it is whole
                tmp = _name_unnamed(f.fileno(), target)
        os.replace(tmp, target)
        tmp = None
        _fsync_dir(target.parent)
    except OSError as e:
        raise FixError(f"{path}: cannot write: {e.strerror or e}; the original is untouched") from e
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def _open_temp(target: Path, mode: int) -> tuple[int, Path | None]:
    if hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd"):
        try:
            return os.open(target.parent, os.O_TMPFILE | os.O_WRONLY, mode), None
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    return fd, Path(name)


def _name_unnamed(fd: int, target: Path) -> Path:
    """linkat(AT_SYMLINK_FOLLOW) of an O_TMPFILE file; a dir fd makes Python use linkat."""
    name = f".{target.name}.{secrets.token_hex(6)}.tmp"
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dir_fd, follow_symlinks=True)
    finally:
        os.close(dir_fd)
    return target.parent / name


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
