"""`reviewgen.metrics` is reviewgen.core.metrics under its public name (the same module object)."""
import sys

from .core import metrics as _metrics

sys.modules[__name__] = _metrics
