"""Trainer checkpoints are checksummed: the core's checkpoint.rgck (what resume reads)
carries a checksum per section, and best.npz a CRC-32 per zip member, so a bit flip in
saved parameters or optimizer moments is a TrainingError naming the file, not a silently
different model."""
import os
import zipfile

import pytest

from reviewgen.core.training import Trainer, TrainingError
from test_training import batches_of, make_data, small_config, tiny_classifier


def _train(tmp_path):
    x, y = make_data(16)
    model = tiny_classifier()
    evaluation = batches_of(x[:4], y[:4], [4])
    trainer = Trainer(model, small_config(num_train_epochs=1), batches_of(x, y, [4] * 4), evaluation,
                      tmp_path / "run")
    trainer.train()
    return trainer


@pytest.mark.parametrize("where", [0.3, 0.6, 0.9])
def test_a_bit_flip_in_the_core_checkpoint_is_caught_and_named(tmp_path, where):
    trainer = _train(tmp_path)
    trainer.load_checkpoint()  # the clean file loads
    path = trainer.checkpoint_path
    blob = bytearray(open(path, "rb").read())
    blob[int(len(blob) * where)] ^= 0x10  # parameters, moments and state lie in the body
    open(path, "wb").write(bytes(blob))
    with pytest.raises(TrainingError) as info:
        trainer.load_checkpoint()
    assert path in str(info.value)


def test_a_bit_flip_in_best_npz_is_caught_and_named(tmp_path):
    trainer = _train(tmp_path)
    if not os.path.exists(trainer.best_path):
        pytest.skip("this run kept no best.npz")
    trainer.load_best()
    with zipfile.ZipFile(trainer.best_path) as archive:
        info = archive.getinfo("parameters.npy")
    blob = bytearray(open(trainer.best_path, "rb").read())
    name_len = int.from_bytes(blob[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(blob[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    blob[start + info.compress_size - 3] ^= 0x10  # inside the array data, past the .npy header
    open(trainer.best_path, "wb").write(bytes(blob))
    with pytest.raises(TrainingError) as error:
        trainer.load_best()
    assert trainer.best_path in str(error.value)
