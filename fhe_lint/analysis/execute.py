"""Run a model in numpy (onnx's reference evaluator) with QONNX quantizers, for calibration data
and for measuring what a fix changes. Only used when the user gives data: linting never runs."""

from __future__ import annotations

import zipfile

import numpy as np

from fhe_lint.errors import FheLintError
from fhe_lint.formats.channels_last import as_channels_first, is_channels_last
from fhe_lint.formats.ops import QONNX_DOMAINS
from fhe_lint.formats.quantizer import ROUNDING, integer_range
from fhe_lint.io.onnx_proto import ModelProto


def _quant_ops() -> list[type]:
    from onnx.reference.op_run import OpRun

    def quant(self, x, scale, zero_point, bit_width, signed=1, narrow=0, rounding_mode="ROUND"):
        grid = integer_range(int(bit_width), bool(signed), bool(narrow))
        mode = rounding_mode.decode("utf-8", "replace") if isinstance(rounding_mode, bytes) else rounding_mode
        y = ROUNDING[mode.upper()](x.astype(np.float64) / scale + zero_point)
        return ((np.clip(y, grid.lo, grid.hi) - zero_point) * scale).astype(x.dtype),

    def bipolar(self, x, scale):
        return (np.where(x >= 0, 1.0, -1.0) * scale).astype(x.dtype),

    # the evaluator finds an implementation by class name (the op type) and op_domain
    qonnx = [type(op, (OpRun,), {"op_domain": domain, "_run": fn})
             for domain in sorted(QONNX_DOMAINS) for op, fn in (("Quant", quant), ("BipolarQuant", bipolar))]
    return qonnx + _linear_quantizers()


def _linear_quantizers() -> list[type]:
    """onnx >= 1.2x's evaluator dropped QuantizeLinear/DequantizeLinear before opset 19, which
    every onnxruntime QDQ model of opset 10-18 uses: opset 19's implementations do the same on
    the integer types those versions allow (19 adds float8 and saturation)."""
    from onnx.reference.ops.op_dequantize_linear import DequantizeLinear_19
    from onnx.reference.ops.op_quantize_linear import QuantizeLinear_19

    # the evaluator hands an unversioned class the newest version's attributes: keep opset 19's
    def quantize(self, x, scale, zero_point=None, axis=1, saturate=1, **_):
        return QuantizeLinear_19._run(self, x, scale, zero_point, axis=1 if axis is None else axis,
                                      saturate=1 if saturate is None else saturate)

    def dequantize(self, x, scale, zero_point=None, axis=1, **_):
        return DequantizeLinear_19._run(self, x, scale, zero_point, axis=1 if axis is None else axis)

    return [type("QuantizeLinear", (QuantizeLinear_19,), {"op_domain": "", "_run": quantize}),
            type("DequantizeLinear", (DequantizeLinear_19,), {"op_domain": "", "_run": dequantize})]


def _runnable(model: ModelProto) -> ModelProto:
    """The model as onnx's evaluator takes it: channels-last ops in standard layout, and an
    opset import for each custom domain used without one (FINN and qonnx exports omit them)."""
    imported = {o.domain for o in model.opset_import}
    missing = {n.domain for n in model.graph.node} - imported - {"", "ai.onnx"}
    if not missing and not any(is_channels_last(n) for n in model.graph.node):
        return model
    copy = ModelProto()
    copy.CopyFrom(model)
    for domain in sorted(missing):
        copy.opset_import.add(domain=domain, version=1)
    return as_channels_first(copy)


def evaluate(model: ModelProto, data: np.ndarray, names: list[str]) -> list[np.ndarray]:
    """Values of the tensors ``names`` when the model's first input is ``data`` (a batch)."""
    import onnx  # the evaluator is onnx's: imported only when a model is run
    from onnx.reference import ReferenceEvaluator

    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    dims = inputs[0].type.tensor_type.shape.dim
    batch = dims[0].dim_value if len(dims) and dims[0].HasField("dim_value") else 0
    elem = onnx.helper.tensor_dtype_to_np_dtype(inputs[0].type.tensor_type.elem_type)
    try:
        evaluator = ReferenceEvaluator(_runnable(model), new_ops=_quant_ops())
        try:
            return evaluator.run(names, {inputs[0].name: data.astype(elem)})
        except Exception:
            if not batch or batch == len(data) or len(data) % batch:
                raise
        # Exported for a fixed batch (Brevitas's export with one example hard-codes a Reshape to
        # (1, ...)): run the data that many examples at a time, as Concrete ML does.
        runs = [evaluator.run(names, {inputs[0].name: chunk.astype(elem)})
                for chunk in np.split(data, len(data) // batch)]
        return [np.concatenate(values) for values in zip(*runs)]
    except NotImplementedError as e:  # an op onnx's evaluator lacks (onnxruntime's contrib ops)
        unknown = e
    except Exception as e:  # noqa: BLE001 - any failure of the reference run is a data/model mismatch
        raise FheLintError(f"cannot run the model on the calibration data ({type(e).__name__}: {e})") from e
    try:
        return _onnxruntime(model, data.astype(elem), names)
    except ImportError:
        raise FheLintError(f"cannot run the model on the calibration data ({unknown}; "
                           "onnxruntime runs it: python -m pip install onnxruntime)") from unknown
    except Exception as e:  # noqa: BLE001 - as above
        raise FheLintError(f"cannot run the model on the calibration data ({type(e).__name__}: {e})") from e


def _onnxruntime(model: ModelProto, data: np.ndarray, names: list[str]) -> list[np.ndarray]:
    """``evaluate`` by onnxruntime, for the ops only it has (QGemm, QLinearGlobalAveragePool...):
    each wanted tensor made a graph output, no graph optimization (it would rename or fuse them)."""
    import onnxruntime as ort

    copy = ModelProto()
    copy.CopyFrom(model)
    outputs = {o.name for o in copy.graph.output}
    for name in names:
        if name not in outputs:
            copy.graph.output.add(name=name)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(copy.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(names, {session.get_inputs()[0].name: data})


def load_data(path) -> np.ndarray:
    """A .npy array, or the first (or ``x``/``inputs``) array of a .npz, batch first.

    The format is decided from the file's first bytes: anything else would reach numpy's pickle
    fallback, whose message ("pickled data") misleads about a text or CSV file."""
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic != b"\x93NUMPY" and not magic.startswith(b"PK\x03\x04"):
            raise FheLintError(f"{path}: calibration data is not a NumPy .npy or .npz file (save it with numpy.save)")
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            keys = list(loaded.keys())
            if not keys:
                raise FheLintError(f"{path}: empty .npz")
            loaded = loaded[next((k for k in ("x", "inputs", "X") if k in keys), keys[0])]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise FheLintError(f"{path}: cannot read calibration data: {e}") from e
    if loaded.ndim == 0 or not np.issubdtype(loaded.dtype, np.number):
        raise FheLintError(f"{path}: calibration data must be a numeric array with a batch axis")
    return loaded
