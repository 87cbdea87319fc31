"""reviewgen: rating-conditioned review generation and classification with a C core.

A generator fine-tuned on "Review of {label}. {text}" writes new reviews for a
rating; a classifier fine-tuned on real reviews checks each one; only the
reviews the classifier agrees with are kept.
"""
from .core._native import _core
from ._core import (CommError, CoreError, CoreIOError, CorruptFileError, CudaError, EmptyInputError, InvalidArgumentError,
                    LabelRangeError, NonFiniteError, ShapeError, StateError,
                    UnsupportedError)

__version__ = "0.1.0"

# The main classes, imported on first use so that `import reviewgen` stays light.
_LAZY = {
    "Generator": "reviewgen.tasks.generator",
    "Classifier": "reviewgen.tasks.classifier",
    "TrainingConfig": "reviewgen.core.config",
    "Trainer": "reviewgen.core.training",
    "DemoConfig": "reviewgen.experiments.demo",
    "run_demo": "reviewgen.experiments.demo",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'reviewgen' has no attribute {name!r}")


def has_cuda() -> bool:
    """True when this build compiled the CUDA sources and a CUDA device is usable now."""
    return bool(_core.cuda_compiled()) and _core.cuda_device_count() > 0


def cuda_compiled() -> bool:
    """True when this build compiled the CUDA sources (whether or not a GPU is present)."""
    return bool(_core.cuda_compiled())


__all__ = [
    "CommError", "CoreError", "CoreIOError", "CorruptFileError", "CudaError", "EmptyInputError", "InvalidArgumentError", "LabelRangeError",
    "NonFiniteError", "ShapeError", "StateError", "UnsupportedError",
    "has_cuda", "cuda_compiled", "__version__", *_LAZY,
]
