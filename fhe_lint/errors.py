"""Typed failures of the tool itself (as opposed to findings about a model).

Every exception here is turned into one line ``fhe-lint: error: ...`` and exit code 2 by the
CLI; nothing else in the package prints or exits.
"""


class FheLintError(Exception):
    """Base class: the model could not be analysed or written."""


class ModelLoadError(FheLintError):
    """The file is missing, unreadable, not ONNX, or structurally broken."""


class UnsupportedModelError(FheLintError):
    """The model is ONNX but uses something fhe-lint cannot interpret soundly."""


class FixError(FheLintError):
    """A fix could not be computed or written (the original file is untouched)."""
