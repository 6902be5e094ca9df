"""fhe-lint: prove that a quantized model's accumulators fit Concrete ML's table-lookup limit."""

__version__ = "0.1.0"
