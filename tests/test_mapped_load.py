"""Reading weights in place (mapped) must be invisible: same model, same analysis, same fixed file."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import LOSSY, FIXTURES, THIRDPARTY, lint_json, run_cli
from qonnx_builder import QonnxBuilder

from fhe_lint.io import protowire, protowrite
from fhe_lint.fix import fix_model
from fhe_lint.linter import lint_model
from fhe_lint.io.model_io import read_model, write_model
from fhe_lint.settings import Settings
from fhe_lint.io.tensor_data import TensorData, is_external

MODELS = sorted(FIXTURES.glob("*.onnx")) + sorted(THIRDPARTY.glob("*.onnx"))


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_mapped_model_is_the_parsed_model_with_data_moved_out(path):
    model, data, _ = read_model(path, map_threshold=0)
    external = [t for t in model.graph.initializer if is_external(t)]
    assert external and all(len(t.raw_data) == 0 for t in external)
    assert data.standalone(model) == onnx.load(path)
    for t in external:  # every view decodes to what onnx decodes
        np.testing.assert_array_equal(data.array(t), onnx.numpy_helper.to_array(data.embedded(t)))


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_analysis_is_the_same_mapped_or_parsed(path):
    mapped = lint_model(*_read(path, 0))
    parsed = lint_model(onnx.load(path), path, Settings())
    assert [d.__dict__ for d in mapped.diagnostics] == [d.__dict__ for d in parsed.diagnostics]
    for a, b in zip(mapped.analysis.layers, parsed.analysis.layers, strict=True):
        assert (a.bounds is None) == (b.bounds is None)
        if a.bounds is not None:
            assert (a.bounds.lo == b.bounds.lo).all() and (a.bounds.hi == b.bounds.hi).all()


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_streamed_serialization_is_protobufs_own(path):
    """The writer that streams each weight from its file writes the bytes protobuf would for the
    model with its data embedded, whatever the model's fields."""
    model, data, _ = read_model(path, map_threshold=0)
    out = io.BytesIO()
    size, write = protowrite.streamed(model, lambda t: data.raw(t) if is_external(t) else None, data.release_bytes)
    write(out)
    assert len(out.getvalue()) == size and out.getvalue() == onnx.load(path).SerializeToString()


def test_a_model_with_unknown_fields_is_serialized_by_protobuf(tmp_path):
    """Unknown fields (a newer onnx's) cannot be split by field number: protobuf writes the model,
    and nothing of it is lost."""
    model = onnx.load(FIXTURES / "mlp_w2a2.onnx")
    unknown = bytes([99 << 3 & 0x7F | 0x80, 99 >> 4, 1])  # field 99 (varint) = 1
    model.graph.node[0].MergeFromString(unknown)  # inside a field: streamed as it is
    out = io.BytesIO()
    protowrite.streamed(model, lambda t: None, lambda v: None)[1](out)
    assert out.getvalue() == model.SerializeToString()
    model.graph.MergeFromString(unknown)  # beside the initializers: not split
    assert protowrite.streamed(model, lambda t: None, lambda v: None) is None
    src = tmp_path / "m.onnx"
    src.write_bytes(model.SerializeToString())
    loaded, data, _ = read_model(src, map_threshold=0)
    write_model(loaded, loaded, data, tmp_path / "out.onnx", frozenset({"not-a-tensor"}))
    assert (tmp_path / "out.onnx").read_bytes() == model.SerializeToString()


def _read(path: Path, threshold: int):
    model, data, _ = read_model(path, map_threshold=threshold)
    return model, path, Settings(), data


def test_released_pages_read_back_the_same_values():
    model, data, _ = read_model(FIXTURES / "mlp_w4a4_deep.onnx", map_threshold=0)  # no ../shared needed
    t = max((t for t in model.graph.initializer if is_external(t)), key=lambda t: int(np.prod(t.dims)))
    a = data.array(t)
    before = a.copy()
    data.release(a)
    np.testing.assert_array_equal(a, before)
    assert not a.flags.writeable  # a view of the file can never be written through


def test_a_tensor_with_two_raw_data_fields_is_parsed_by_protobuf_rules():
    """Protobuf keeps the last of repeated scalar fields; the splitter leaves such bytes to it."""
    t = onnx.numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")
    second = onnx.TensorProto(raw_data=np.arange(4, 8, dtype=np.float32).tobytes()).SerializeToString()
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["w"], ["y"])], "g", [],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4])])
    model = onnx.helper.make_model(graph)
    tensor_bytes = t.SerializeToString() + second
    graph_bytes = onnx.GraphProto(node=graph.node, output=graph.output).SerializeToString() + \
        _field(5, tensor_bytes)
    model_bytes = onnx.ModelProto(ir_version=model.ir_version, opset_import=model.opset_import).SerializeToString()
    buf = model_bytes + _field(7, graph_bytes)
    split = protowire.parse_leaving_weights(memoryview(buf), "m.onnx", 0)
    assert split == onnx.ModelProto.FromString(buf)
    assert onnx.numpy_helper.to_array(split.graph.initializer[0]).tolist() == [4, 5, 6, 7]


def _field(number: int, payload: bytes) -> bytes:
    out, n = bytearray([number << 3 | 2]), len(payload)
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]) + payload)


def test_group_wire_type_falls_back_to_a_whole_parse():
    buf = onnx.ModelProto(ir_version=8).SerializeToString() + bytes([7 << 3 | 3])
    assert protowire.parse_leaving_weights(memoryview(buf), "m.onnx", 0) is None


def _big_overflowing_model(path: Path) -> Path:
    """A 300x256 Gemm (300 KB of float32 weights: mapped by default) that overflows 16 bits."""
    rng = np.random.default_rng(0)
    b = QonnxBuilder()
    x = b.quant(b.input([1, 256]), 1.0, 8, signed=False)
    w = b.weight(rng.standard_normal((300, 256)).astype(np.float32), 0.02, 8, name="big.weight")
    b.node("Gemm", [x, w], name="fc", transB=1)
    onnx.save(b.build(b.nodes[-1].output[0]), path)
    return path


@pytest.mark.parametrize("in_place", [True, False])
def test_fix_patches_the_mapped_weights_into_a_copy_of_the_file(in_place, tmp_path):
    src = _big_overflowing_model(tmp_path / "m.onnx")
    model, data, _ = read_model(src)
    (weight,) = [t for t in model.graph.initializer if is_external(t)]
    original = src.read_bytes()
    outcome = fix_model(lint_model(model, src, Settings(max_prune=100.0, max_damage=100.0), data))
    target = src if in_place else tmp_path / "out.onnx"
    fixed = outcome.fixed
    expected = fixed.data.standalone(fixed.model)
    write_model(fixed.model, model, fixed.data, target, fixed.touched)
    written = target.read_bytes()
    _, offset, length = data.reference(weight)
    assert len(written) == len(original)  # same layout: only the weight's bytes differ
    assert written[:offset] == original[:offset] and written[offset + length:] == original[offset + length:]
    assert written[offset:offset + length] != original[offset:offset + length]
    _assert_same_content(onnx.load(target), expected)
    assert lint_json(target)[0] == 0


def test_fix_that_clones_a_shared_mapped_weight_writes_the_whole_model(tmp_path):
    rng = np.random.default_rng(1)
    b = QonnxBuilder()
    x = b.quant(b.input([1, 256]), 1.0, 8, signed=False)
    w = b.weight(rng.standard_normal((300, 256)).astype(np.float32), 0.02, 8, name="shared.weight")
    y = b.node("Gemm", [x, w], name="fc", transB=1)
    w2 = b.node("Transpose", [b.nodes[1].output[0]], perm=[1, 0])
    b.node("MatMul", [x, w2], name="other")
    b.outputs.append(y)
    src = tmp_path / "m.onnx"
    onnx.save(b.build(b.nodes[-1].output[0]), src)
    p = run_cli(src, "--fix", *LOSSY, "--max-prune", "100", "-o", tmp_path / "out.onnx")
    assert p.returncode == 0, p.stdout + p.stderr
    fixed = onnx.load(tmp_path / "out.onnx")
    assert len(fixed.graph.initializer) > len(onnx.load(src).graph.initializer)  # the clones
    assert lint_json(tmp_path / "out.onnx")[0] == 0


def _assert_same_content(a: onnx.ModelProto, b: onnx.ModelProto) -> None:
    assert list(a.graph.node) == list(b.graph.node)
    arrays = [{t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer} for m in (a, b)]
    assert arrays[0].keys() == arrays[1].keys()
    for name, value in arrays[0].items():
        np.testing.assert_array_equal(value, arrays[1][name])


def test_truncated_mapped_tensor_is_a_clean_error(tmp_path):
    src = _big_overflowing_model(tmp_path / "m.onnx")
    raw = src.read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(raw[: len(raw) // 2])
    p = run_cli(cut)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr


def test_data_files_outside_the_directory_are_refused_by_the_reader(tmp_path):
    d = tmp_path / "ext"
    d.mkdir()
    shutil.copy(FIXTURES / "mlp_w2a2.onnx", d / "m.onnx")
    model = onnx.load(d / "m.onnx")
    t = model.graph.initializer[0]
    t.data_location = onnx.TensorProto.EXTERNAL
    t.external_data.add(key="location", value="../secret")
    with pytest.raises(Exception, match="outside the model's directory"):
        TensorData(d / "m.onnx").reference(t)


def test_external_data_past_2_gib(tmp_path):
    """A model whose data file is larger than protobuf's 2 GiB limit (sparse: no disk used), its
    tensors beyond that offset: linted like the original, and fixed."""
    d = tmp_path / "big"
    d.mkdir()
    model = onnx.load(FIXTURES / "mlp_w6a6_unsigned_in.onnx")
    onnx.save(model, d / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.data", size_threshold=0)
    small = (d / "m.data").read_bytes()
    base = 2**31 + 4096
    with open(d / "m.data", "wb") as f:
        f.truncate(base + len(small) + 2**20)
        f.seek(base)
        f.write(small)
    ext = onnx.load(d / "m.onnx", load_external_data=False)
    for t in ext.graph.initializer:
        for e in t.external_data:
            if e.key == "offset":
                e.value = str(int(e.value) + base)
    onnx.save(ext, d / "m.onnx")
    assert (d / "m.data").stat().st_size > 2**31
    rc, rep = lint_json(d / "m.onnx")
    rc0, rep0 = lint_json(FIXTURES / "mlp_w6a6_unsigned_in.onnx")
    assert rc == rc0 == 1
    assert [la["accumulator_range"] for la in rep["files"][0]["layers"]] == \
        [la["accumulator_range"] for la in rep0["files"][0]["layers"]]
    p = run_cli(d / "m.onnx", "--fix", *LOSSY, "-o", tmp_path / "fixed.onnx")  # in place would copy the 2 GiB
    assert p.returncode == 0, p.stdout + p.stderr
    assert lint_json(tmp_path / "fixed.onnx")[0] == 0


def test_fix_writes_the_model_it_read_even_if_the_file_was_replaced_since(tmp_path):
    src = _big_overflowing_model(tmp_path / "m.onnx")
    original = src.read_bytes()
    model, data, _ = read_model(src)
    outcome = fix_model(lint_model(model, src, Settings(max_prune=100.0, max_damage=100.0), data))
    replacement = tmp_path / "other.onnx"
    shutil.copy(FIXTURES / "mlp_w2a2.onnx", replacement)
    replacement.replace(src)  # another writer renames a different model over it meanwhile
    fixed = outcome.fixed
    write_model(fixed.model, model, fixed.data, tmp_path / "out.onnx", fixed.touched)
    written = (tmp_path / "out.onnx").read_bytes()
    assert len(written) == len(original)
    _assert_same_content(onnx.load(tmp_path / "out.onnx"), fixed.data.standalone(fixed.model))


def test_model_symlinked_from_another_directory(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "links").mkdir()
    src = _big_overflowing_model(tmp_path / "real" / "m.onnx")
    link = tmp_path / "links" / "alias.onnx"
    link.symlink_to(src)
    assert lint_json(link)[1]["files"][0]["layers"] == lint_json(src)[1]["files"][0]["layers"]
