"""Format adapters: how each quantized ONNX format (QONNX, QDQ, QOperator, float with assumed
bits) turns into integer weights and input ranges. Importing this package imports nothing heavy
(rules read ``formats.ops``)."""
