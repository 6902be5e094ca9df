"""Reading and writing model files: the only module that touches the disk for models.

Reading refuses anything that is not plausibly ONNX before parsing it, and never follows
external-data references out of the model's directory. Writing is atomic: a temp file in the
target's directory, fsync, rename; on any failure the original is untouched and nothing is left.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, NamedTuple

from google.protobuf.message import DecodeError, Message

from fhe_lint.io import protowire
from fhe_lint.io.protowrite import serialized
from fhe_lint.errors import FixError, ModelLoadError
from fhe_lint.io.onnx_proto import ModelProto, ValidationError, check_model
from fhe_lint.formats.ops import QONNX_DOMAINS
from fhe_lint.io.tensor_data import TensorData, external_tensors, is_external, map_file

# protobuf writes fields in number order and ModelProto's field 1 is ir_version (a varint):
# every serialized ONNX model starts with the tag byte 0x08. Checking it first keeps a huge
# non-ONNX file from being read whole.
_ONNX_FIRST_BYTE = 0x08
_PROTOBUF_LIMIT = 2**31
# Initializers at least this large are read in place (mapped) rather than parsed into memory;
# smaller ones (scales, shapes) are cheaper parsed, and shape inference needs their values
# (the same threshold as onnx's own default for external data).
MAP_THRESHOLD = 1024


class LoadedModel(NamedTuple):
    model: ModelProto
    data: TensorData  # reads the model's tensors, mapped or external
    complaint: str | None  # onnx.checker's objection, if any: reported, not fatal


def read_model(path: Path, map_threshold: int = MAP_THRESHOLD) -> LoadedModel:
    """Parse ``path`` as an ONNX model whose large initializers stay in the file.

    Each initializer holding at least ``map_threshold`` bytes becomes an external-data reference
    to its own bytes in ``path``, read through the returned :class:`TensorData` by mapping the
    file: loading copies no weight, and the model proto stays small (cheap to check and copy).

    A model that onnx.checker rejects is still returned, with the checker's first line: real
    producers write models onnxruntime runs and the checker refuses (unsorted nodes, a
    value_info without a type), and a linter must be as lenient as the runtime. What the analysis
    cannot stand (a cycle, an undefined tensor, undecodable data) it refuses itself.
    """
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
            mapped = map_file(f.fileno())
    except OSError as e:
        raise ModelLoadError(f"{path}: cannot read: {e.strerror or e}") from e
    data = TensorData(path, mapped)
    try:
        model = protowire.parse_leaving_weights(memoryview(mapped), data.model_path.name, map_threshold)
    except (DecodeError, RuntimeError, ValueError):
        model = None  # protobuf's own parse below says what is wrong
    if model is None:
        return _parse_model(bytes(mapped), path, data)
    return LoadedModel(model, data, _accept(model, path, data))


def _parse_model(data: bytes, path: Path, tensors: TensorData) -> LoadedModel:
    """Parse serialized ONNX ``data`` (external tensors stay external, read through ``tensors``)."""
    if data[:1] != bytes([_ONNX_FIRST_BYTE]):
        raise ModelLoadError(f"{path}: not an ONNX model (empty or wrong header)")
    # The checker parses the bytes in C++: running it before Python's own parse keeps the two
    # parsed copies from coexisting (peak memory); its verdict waits until the parse has told
    # whether the input is ONNX at all.
    verdict = _check(data)
    model = ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ModelLoadError(f"{path}: not an ONNX model or truncated ({e})") from e
    return LoadedModel(model, tensors, _accept(model, path, tensors, checked=True, verdict=verdict))


def _accept(model: ModelProto, path: Path, tensors: TensorData, checked: bool = False,
            verdict: str | None = None) -> str | None:
    """What every parsed model must be: ONNX at all, and with every external reference inside
    the model's directory and inside its file; returns onnx.checker's complaint (when
    ``checked``, ``verdict`` is its word on the serialized bytes, which stands unless some
    tensor's data is elsewhere)."""
    if model.ir_version < 3 or not model.HasField("graph") or not model.graph.node:
        raise ModelLoadError(f"{path}: not an ONNX model (no ir_version or empty graph)")
    broken = _not_utf8(model)
    if broken is not None:  # protobuf hands such a string over as bytes: no name would compare
        raise ModelLoadError(f"{path}: a {broken} is not valid UTF-8")
    external = external_tensors(model)
    if external or not checked:
        verdict = _check(_without_external_data(model))
    for t in external:  # checked before any analysis reads one
        try:
            tensors.reference(t)
        except ModelLoadError as e:
            raise ModelLoadError(f"{path}: {e}") from e
    return verdict


def _not_utf8(message: Message) -> str | None:
    """The first text field (a name, an op type, a domain...) holding bytes that are not UTF-8:
    the checker refused these, and leniency must not let them through."""
    for field, value in message.ListFields():
        repeated = getattr(field, "is_repeated", None)  # protobuf >= 5.28; older ones have only label
        values = value if (repeated if repeated is not None else field.label == field.LABEL_REPEATED) else (value,)
        if field.type == field.TYPE_STRING and any(isinstance(v, bytes) for v in values):
            return f"{message.DESCRIPTOR.name}.{field.name}"
        if field.type == field.TYPE_MESSAGE:
            for v in values:
                if isinstance(v, Message):
                    broken = _not_utf8(v)
                    if broken is not None:
                        return broken
    return None


def _check(model: bytes) -> str | None:
    """onnx.checker's first line of complaint, or None; one quirk of QONNX exports (a custom
    quantizer domain used without an opset import) is not worth a word."""
    try:
        check_model(model)
    except (ValidationError, ValueError) as e:  # ValueError: e.g. invalid UTF-8 in names
        said = " ".join(str(e).split()) or type(e).__name__  # one line: the node it names included
        missing = re.match(r"No opset import for domain '([^']*)'", said)
        if missing and missing.group(1) in QONNX_DOMAINS:
            return None
        return said if len(said) <= 300 else said[:297] + "..."
    return None


def _without_external_data(model: ModelProto) -> bytes:
    """What onnx.checker is given for a model with external tensors: it would look for their files
    relative to the working directory, so they become empty tensors; ``_accept`` checks the
    references themselves."""
    copy = ModelProto()
    copy.CopyFrom(model)
    for t in external_tensors(copy):
        del t.external_data[:], t.dims[:]
        t.ClearField("data_location")
        t.dims.append(0)
    return copy.SerializeToString()


def write_model(fixed: ModelProto, original: ModelProto, data: TensorData, target: Path,
                touched: frozenset[str]) -> None:
    """Write ``fixed``, a fix of ``original``, over ``target``; ``data`` reads both (the fix's new
    weights are its patches over the original's bytes).

    When the fix only rewrote the bytes of tensors that sit in files (the model's own mapped
    initializers, or external data), those bytes are patched into copies at unchanged offsets: a
    model of hundreds of MB costs a file copy, not a re-serialization. Otherwise the model is
    serialized with its own tensors embedded; external data stays external when fixed in place
    (each touched data file replaced by a patched copy) and is embedded when written elsewhere
    (``--output``), if it then fits in one protobuf.
    """
    source = data.model_path
    same = Path(os.path.realpath(target)) == source
    refs = {t.name: t for t in original.graph.initializer if is_external(t)}
    files = {name: data.reference(t) for name, t in refs.items()}
    patches: dict[Path, list[tuple[int, memoryview]]] = {}  # bytes read one at a time when written
    for t in fixed.graph.initializer:
        if t.name in touched and t.name in files:
            file, offset, length = files[t.name]
            if is_external(t):  # the fix's new values, over the same bytes
                new = data.raw(t) if data.reference(t) == files[t.name] else None
            else:
                new = memoryview(t.raw_data)
            if new is None or len(new) != length:
                raise FixError(f"{source}: tensor {t.name!r} changed size; cannot patch it in place")
            patches.setdefault(file, []).append((offset, new))
    external_files = {file for file, _, _ in files.values()} - {source}
    only_data_changed = [t.name for t in fixed.graph.initializer] == [t.name for t in original.graph.initializer] \
        and len(fixed.graph.node) == len(original.graph.node) and touched <= files.keys()
    if only_data_changed and (same or not external_files):
        for file in external_files & patches.keys():
            _write_patched(data, file, file, patches[file])
        if not same or source in patches:
            _write_patched(data, source, target, patches.get(source, []))
        return
    out = ModelProto()
    out.CopyFrom(fixed)
    for t in out.graph.initializer:  # touched external data goes back to its file, patched
        if same and t.name in touched and t.name in files and files[t.name][0] != source:
            t.CopyFrom(refs[t.name])
    size, contents = serialized(out, data, lambda t: not same or data.reference(t)[0] == source, _PROTOBUF_LIMIT)
    if size >= _PROTOBUF_LIMIT:
        raise FixError(f"{target}: the fixed model is past 2 GiB with its data embedded; fix it in place instead")
    if same:
        for file in external_files & patches.keys():
            _write_patched(data, file, file, patches[file])
    write_atomic(target, contents)


def _write_patched(data: TensorData, source: Path, target: Path, changes: list[tuple[int, memoryview]]) -> None:
    """Replace ``target`` by the original bytes of ``source`` (its mapping: a file replaced since
    is not mixed in), with each change's bytes written at its offset, atomically."""

    def fill(f: BinaryIO) -> None:
        data.copy_file(source, f)
        for offset, new in changes:
            f.seek(offset)
            f.write(new)

    write_atomic(target, fill)


def write_atomic(path: Path, data: bytes | Callable[[BinaryIO], None]) -> None:
    """Replace ``path`` (through a symlink: its target) with ``data`` (or what ``data(file)``
    writes), all or nothing.

    The data goes to an unnamed file in the target's directory (``O_TMPFILE``), which a crash
    simply discards; only once it is complete and fsynced does it get a name, immediately renamed
    over the target. Where ``O_TMPFILE`` is unavailable a named temp file is used and removed on
    any error.
    """
    target = Path(os.path.realpath(path))
    if not target.parent.is_dir():
        raise FixError(f"{path}: cannot write: directory {target.parent} does not exist")
    existed = True
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        mode, existed = 0o666 & ~_umask(), False
    except OSError as e:
        raise FixError(f"{path}: cannot write: {e.strerror or e}") from e
    tmp: Path | None = None
    try:
        fd, tmp = _open_temp(target, mode)
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
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
        kept = "; the original is untouched" if existed else "; nothing was written"
        raise FixError(f"{path}: cannot write: {e.strerror or e}{kept}") from e
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
    name = f".{target.name}.{os.urandom(6).hex()}.tmp"
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
