"""Trainer checkpoints (checkpoint.npz, best.npz) are checksummed: every array in the zip
carries a CRC-32 that is checked when it is read, so a bit flip in the saved parameters is a
TrainingError naming the file and the array, not a silently different model."""
import os
import zipfile

import numpy as np
import pytest

from reviewgen.core.training import Trainer, TrainingError
from test_training import SoftmaxRegression, batches_of, make_data, small_config


def _flip_inside(path, member):
    """Flip one bit in the stored bytes of `member` of the zip at `path`."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    blob = bytearray(open(path, "rb").read())
    # local header: 30 bytes + name + extra; the data follows
    name_len = int.from_bytes(blob[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(blob[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    blob[start + info.compress_size - 3] ^= 0x10  # inside the array data, past the .npy header
    open(path, "wb").write(bytes(blob))


@pytest.mark.parametrize("member", ["parameters.npy", "adam_m.npy", "adam_v.npy"])
def test_a_bit_flip_in_a_checkpoint_array_is_caught_and_named(tmp_path, member):
    x, y = make_data(16)
    model = SoftmaxRegression()
    trainer = Trainer(model, small_config(num_train_epochs=1), batches_of(x, y, [4] * 4), None, tmp_path / "run")
    trainer.train()
    trainer.load_checkpoint()  # the clean file loads
    _flip_inside(trainer.checkpoint_path, member)
    with pytest.raises(TrainingError) as info:
        trainer.load_checkpoint()
    message = str(info.value)
    assert trainer.checkpoint_path in message and member in message and "CRC" in message
