"""Checkpoints in and out: safetensors, GGUF, the hub resolver and one module per model family."""
