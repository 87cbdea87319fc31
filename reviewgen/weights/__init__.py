"""Checkpoints in and out: safetensors, GGUF, the hub resolver and one module per model family.

Every loader returns a :class:`Checkpoint` (its ``build_model()`` writes the
weights into the core) and raises :class:`WeightsError`; every source a user
names goes through :func:`resolve` and its one alias table, :data:`ALIASES`.
"""
from .checkpoint import Checkpoint, UnsupportedModelError, WeightsError
from .hub import ALIASES, ModelNotFoundError, resolve

__all__ = ["Checkpoint", "WeightsError", "UnsupportedModelError", "ModelNotFoundError", "ALIASES", "resolve"]
