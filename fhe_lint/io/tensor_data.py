"""Tensor data that stays in its file: external-data references resolved by memory-mapping.

A model's weights are read as views of mapped files, so loading copies nothing and memory holds
only the pages being read; :meth:`TensorData.release` hands pages back once a weight has been
quantized. The same references serve the model's own file (see ``protowire``) and ONNX external
data files, and every location is checked to stay inside the model's directory.

A fix does not copy new weights into the model proto: :meth:`TensorData.patched` puts them over
the bytes they replace, so the fixed model is read (re-lint, evaluation) and written (patched
into a copy of the file) from the one array per tensor, never a second serialized copy.
"""

from __future__ import annotations

import copy
import mmap
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from fhe_lint.errors import ModelLoadError
from fhe_lint.io.onnx_proto import ModelProto, PLAIN_DTYPES, TensorProto, all_tensors, to_array

_COPY_CHUNK = 16 << 20  # a multiple of every page size; pages copied leave memory a chunk at a time


def is_external(tensor: TensorProto) -> bool:
    return tensor.data_location == TensorProto.EXTERNAL


def external_tensors(model: ModelProto, main_initializers: bool = True) -> list[TensorProto]:
    """Every tensor of ``model`` (initializers, Constant nodes, subgraphs) whose data is elsewhere."""
    return [t for t in all_tensors(model, main_initializers) if is_external(t)]


class TensorData:
    """Resolves the external tensors of models read from ``model_path``'s directory."""

    def __init__(self, model_path: Path, model_map: mmap.mmap | None = None) -> None:
        self.model_path = Path(os.path.realpath(model_path))
        self.base = self.model_path.parent
        self._maps: dict[Path, mmap.mmap] = {}
        self._patches: dict[tuple[Path, int], np.ndarray] = {}  # new bytes at (file, offset)
        if model_map is not None:
            self._maps[self.model_path] = model_map

    def patched(self, values: Iterable[tuple[TensorProto, np.ndarray]]) -> TensorData:
        """The same files read with each external tensor of ``values`` holding its new values
        (stored as the tensor's own plain element type; the files are not touched)."""
        out = copy.copy(self)
        out._patches = dict(self._patches)
        for tensor, a in values:
            path, offset, length = self.reference(tensor)
            stored = np.ascontiguousarray(a, dtype=PLAIN_DTYPES[tensor.data_type].newbyteorder("<"))
            if stored.nbytes != length:
                raise ValueError(f"tensor {tensor.name!r}: {stored.nbytes} new bytes for {length}")
            out._patches[path, offset] = stored.reshape(-1)
        return out

    def reference(self, tensor: TensorProto) -> tuple[Path, int, int]:
        """(file, offset, length) of an external tensor, refusing any location outside the
        model's directory and any range outside the file."""
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        target = Path(os.path.realpath(self.base / location))
        if not location or os.path.isabs(location) or not target.is_relative_to(self.base):
            raise ModelLoadError(f"tensor {tensor.name!r} has external data outside the model's directory "
                                 f"({location!r}); refusing to read it")
        if target in self._maps:  # once mapped, the mapping is what is read, whatever the path holds now
            size = len(self._maps[target])
        elif target.is_file():
            size = target.stat().st_size
        else:
            raise ModelLoadError(f"tensor {tensor.name!r}: external data {location!r} is missing")
        try:
            offset = int(info.get("offset", 0))
            length = int(info["length"]) if "length" in info else size - offset
        except ValueError as e:
            raise ModelLoadError(f"tensor {tensor.name!r}: malformed external data offset/length") from e
        if offset < 0 or length < 0 or offset + length > size:
            raise ModelLoadError(f"tensor {tensor.name!r}: external data [{offset}, {offset + length}) "
                                 f"is outside {location!r} ({size} bytes)")
        return target, offset, length

    def raw(self, tensor: TensorProto) -> memoryview:
        """The stored bytes of an external tensor (a view of the mapped file)."""
        path, offset, length = self.reference(tensor)
        if (path, offset) in self._patches:
            return memoryview(self._patches[path, offset]).cast("B")
        if length == 0:  # an empty file cannot be mapped
            return memoryview(b"")
        return memoryview(self._map(path))[offset:offset + length]

    def array(self, tensor: TensorProto) -> np.ndarray:
        """An external tensor's values: a read-only view of the file for plain element types."""
        raw = self.raw(tensor)
        if tensor.data_type in PLAIN_DTYPES and sys.byteorder == "little" and not tensor.HasField("segment"):
            dtype = PLAIN_DTYPES[tensor.data_type]
            count = int(np.prod(tensor.dims, dtype=np.int64))
            if count * dtype.itemsize != len(raw):
                raise ModelLoadError(f"tensor {tensor.name!r}: {len(raw)} bytes of external data for "
                                     f"{count} elements of {dtype}")
            return np.frombuffer(raw, dtype=dtype, count=count).reshape(tuple(tensor.dims))
        return to_array(self.embedded(tensor))

    def embedded(self, tensor: TensorProto) -> TensorProto:
        """A copy of ``tensor`` carrying its data itself (for writers and evaluators)."""
        out = TensorProto()
        out.CopyFrom(tensor)
        if is_external(tensor):
            out.raw_data = bytes(self.raw(tensor))
            del out.external_data[:]
            out.ClearField("data_location")
        return out

    def standalone(self, model: ModelProto) -> ModelProto:
        """A copy of ``model`` with every external tensor's data embedded."""
        out = ModelProto()
        out.CopyFrom(model)
        for t in external_tensors(out):
            t.CopyFrom(self.embedded(t))
        return out

    def release_bytes(self, view: memoryview) -> None:
        """:meth:`release` for bytes read through :meth:`raw`."""
        if len(view):
            self.release(np.frombuffer(view, dtype=np.uint8))

    def release(self, a: np.ndarray) -> None:
        """Drop the pages behind ``a``, a view of a mapped file, from this process's memory;
        they are read again from the page cache if ever touched."""
        base = a.base
        while isinstance(base, np.ndarray):
            base = base.base
        owner = base.obj if isinstance(base, memoryview) else None
        if not isinstance(owner, mmap.mmap) or not hasattr(owner, "madvise"):
            return
        start = a.__array_interface__["data"][0] - np.frombuffer(owner, np.uint8, 1).__array_interface__["data"][0]
        first = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE
        last = (start + a.nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
        if last > first:
            owner.madvise(mmap.MADV_DONTNEED, first, last - first)

    def evict(self) -> None:
        """Drop every mapped page from this process's memory (a fix reads each weight several
        times, a layer at a time); they are read again from the page cache if ever touched."""
        for mapped in self._maps.values():
            if hasattr(mapped, "madvise") and len(mapped):
                mapped.madvise(mmap.MADV_DONTNEED)

    def copy_file(self, path: Path, out: BinaryIO) -> None:
        """Write the whole mapped ``path`` to ``out`` in chunks, each leaving memory once written."""
        mapped = self._map(path)
        for start in range(0, len(mapped), _COPY_CHUNK):
            out.write(memoryview(mapped)[start:start + _COPY_CHUNK])
            if hasattr(mapped, "madvise"):
                mapped.madvise(mmap.MADV_DONTNEED, start, min(_COPY_CHUNK, len(mapped) - start))

    def _map(self, path: Path) -> mmap.mmap:
        if path not in self._maps:
            try:
                with open(path, "rb") as f:
                    self._maps[path] = map_file(f.fileno())
            except OSError as e:
                raise ModelLoadError(f"{path.name}: cannot read: {e.strerror or e}") from e
        return self._maps[path]


def map_file(fd: int) -> mmap.mmap:
    """A read-only mapping of a whole (non-empty) file."""
    try:
        return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot map the file: {e}") from e
