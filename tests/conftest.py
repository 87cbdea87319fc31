import os
from pathlib import Path

import pytest

# Full datasets live outside the repository; tests that need them skip without them.
SHARED_DATA = Path(os.environ.get("REVIEWGEN_SHARED_DATA", "/work/shared/data"))


@pytest.fixture
def imdb_train_csv() -> Path:
    """Path to the full aclImdb train.csv, or skip the test."""
    path = SHARED_DATA / "imdb-aclimdb" / "train.csv"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    return path


@pytest.fixture
def sst5_train_csv() -> Path:
    """Path to the full SST-5 train.csv, or skip the test."""
    path = SHARED_DATA / "sst5" / "train.csv"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    return path


@pytest.fixture(scope="module")
def texts():
    """(train, validation) generator texts from the bundled IMDB sample."""
    from reviewgen import data

    prepared = data.prepare(data.load_sample("imdb"), seed=0)
    return list(prepared.train["generator_text"][:48]), list(prepared.val["generator_text"][:16])


@pytest.fixture(scope="module")
def tiny_gpt2_dir(tmp_path_factory, texts):
    """A random GPT-2 (awkward width 36, 3 heads) with a 400-token byte-level BPE."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    directory = str(tmp_path_factory.mktemp("tiny-gpt2"))
    bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(texts[0] + texts[1], trainer)
    bpe.save(os.path.join(directory, "tokenizer.json"))
    eos = bpe.token_to_id("<|endoftext|>")
    config = transformers.GPT2Config(vocab_size=bpe.get_vocab_size(), n_positions=160, n_embd=36,
                                     n_layer=3, n_head=3, bos_token_id=eos, eos_token_id=eos,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(directory, safe_serialization=True)
    return directory
