"""reviewgen.text.conditioning: prompts (the chat one against SmolLM2's own Jinja
template), review-only targets, the loss against transformers, and training."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


from reviewgen.text.conditioning import (ChatFormat, ReviewOfFormat, encode_pairs, format_for,  # noqa: E402
                                    generate_reviews, review_loss, train_generator)
from reviewgen.core.config import TrainingConfig  # noqa: E402
from reviewgen.tasks.generator import Generator  # noqa: E402

SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def _render(messages):
    jinja2 = pytest.importorskip("jinja2")
    return jinja2.Template(SMOLLM2_TEMPLATE).render(messages=messages, add_generation_prompt=True)


def test_chat_prompt_is_the_models_own_template():
    fmt = ChatFormat()
    user = "Write a short IMDB user review of a movie you found terrible, 1 out of 5 stars. Only the review."
    assert fmt.user_turn(1) == user
    assert fmt.prompt(1) == _render([{"role": "user", "content": user}])
    own = ChatFormat(system="You write movie reviews.", instruction="A {word} film ({label}/{scale}).")
    assert own.prompt(5) == _render([{"role": "system", "content": "You write movie reviews."},
                                     {"role": "user", "content": "A excellent film (5/5)."}])
    assert ChatFormat(system="").prompt(4).startswith("<|im_start|>user\n")
    with pytest.raises(ValueError, match="rating word"):
        fmt.prompt(7)
    assert ReviewOfFormat().prompt(3) == "Review of 3. "


def test_review_only_targets_and_loss_match_transformers(tiny_gpt2_dir):
    gen = Generator.from_pretrained(tiny_gpt2_dir, max_length=40)
    fmt = ReviewOfFormat()
    reviews = ["A fine film with a good plot.", "Bad. " * 30]
    tokens, mask, targets = encode_pairs(gen, fmt, reviews, [4, 1])
    prompt = gen.tokenizer.encode(fmt.prompt(4))
    assert tokens.shape[1] == 40  # the long review is cut to fit
    for row, review in enumerate(reviews):
        n = int(mask[row].sum())
        assert tokens[row, n - 1] == gen.eos_id
        assert (targets[row, :len(prompt)] == -100).all() and (targets[row, n:] == -100).all()
        np.testing.assert_array_equal(targets[row, len(prompt):n], tokens[row, len(prompt):n])
    assert tokens[0, :int(mask[0].sum())].tolist() == prompt + gen.tokenizer.encode(reviews[0]) + [gen.eos_id]
    ours = review_loss(gen, fmt, reviews, [4, 1], batch_size=2)
    reference = transformers.GPT2LMHeadModel.from_pretrained(tiny_gpt2_dir).eval()
    with torch.no_grad():
        loss = reference(input_ids=torch.tensor(tokens, dtype=torch.long),
                         attention_mask=torch.tensor(mask, dtype=torch.long),
                         labels=torch.tensor(targets, dtype=torch.long)).loss.item()
    assert ours["loss"] == pytest.approx(loss, rel=1e-4)
    assert ours["tokens"] == int((targets[:, 1:] >= 0).sum())
    whole = gen.evaluate([fmt.prompt(4) + reviews[0]])  # prompt counted: a different figure
    assert whole["tokens"] > review_loss(gen, fmt, reviews[:1], [4])["tokens"]


def test_training_on_reviews_only_lowers_their_loss(tiny_gpt2_dir, texts):
    gen = Generator.from_pretrained(tiny_gpt2_dir, max_length=48)
    fmt = format_for(gen)
    assert isinstance(fmt, ReviewOfFormat)  # no chat tokens in the tiny tokenizer
    with pytest.raises(ValueError, match="chat"):
        format_for(gen, "chat")
    reviews = [t.split(". ", 1)[1] for t in texts[0][:24]]
    labels = [int(t.split(" ")[2].rstrip(".")) for t in texts[0][:24]]
    before = review_loss(gen, fmt, reviews, labels)["loss"]
    head_before = gen.model.param("h.0.qkv.w").copy()
    config = TrainingConfig.for_generator(num_train_epochs=3, learning_rate=3e-3, trainable_blocks=1,
                                          gradient_accumulation_steps=1, load_best_model_at_end=False)
    train_generator(gen, fmt, reviews, labels, config=config)
    assert review_loss(gen, fmt, reviews, labels)["loss"] < before - 0.3
    np.testing.assert_array_equal(gen.model.param("h.0.qkv.w"), head_before)  # frozen block untouched
    out = generate_reviews(gen, fmt, 5, 3, max_new_tokens=6, temperature=0.9, repetition_penalty=1.2,
                           no_repeat_ngram_size=2, seed=1)
    assert len(out) == 3 and all(isinstance(t, str) for t in out)
    with pytest.raises(ValueError):
        encode_pairs(gen, fmt, ["a"], [1, 2])
    with pytest.raises(ValueError, match="no room"):
        encode_pairs(gen, ChatFormat(instruction="x " * 60), ["a"], [1], max_length=48)


def test_the_reviewer_prompt_and_overrides(tiny_gpt2_dir):
    from reviewgen.text.conditioning import REVIEWER_PROMPT

    fmt = ChatFormat(**REVIEWER_PROMPT)
    prompt = fmt.prompt(2)
    assert prompt.startswith("<|im_start|>system\nYou are a movie fan")
    assert "disappointing and mostly boring" in prompt and "3/10" in prompt
    assert "9/10" not in ChatFormat(**REVIEWER_PROMPT).prompt(5) and "10/10" in ChatFormat(**REVIEWER_PROMPT).prompt(5)
    generator = Generator.from_pretrained(str(tiny_gpt2_dir))
    with pytest.raises(ValueError, match="<|im_start|>"):
        format_for(generator, "chat", prompt="reviewer")


def test_review_openings_draw_first_words_of_real_reviews():
    from reviewgen.text.conditioning import review_openings

    real = ["The worst film I have seen", "Dull and   long, avoid it", "Nope."]
    got = review_openings(real, 7, words=3, seed=4)
    assert len(got) == 7
    assert set(got) == {"The worst film", "Dull and long,", "Nope."}
    assert all(got[:3].count(o) == 1 for o in got[:3]), "each review once before any repeats"
    assert got == review_openings(real, 7, words=3, seed=4)
    with pytest.raises(ValueError, match="words"):
        review_openings(real, 2, words=0)
    with pytest.raises(ValueError, match="non-empty"):
        review_openings(["", "  "], 2)


def test_generated_reviews_start_with_their_openings(tiny_gpt2_dir):
    from reviewgen.core.generation import generate
    from reviewgen.text.conditioning import stop_ids

    gen = Generator.from_pretrained(tiny_gpt2_dir, max_length=48)
    fmt = ReviewOfFormat()
    openings = ["This film was", "I hated", "Great"]
    out = generate_reviews(gen, fmt, 5, 3, max_new_tokens=6, temperature=0.9, seed=3, openings=openings)
    assert len(out) == 3
    for text, opening in zip(out, openings):
        assert text.startswith(opening)
    # the same as continuing each prompt-plus-opening by hand
    prompts = [gen.tokenizer.encode(fmt.prompt(5) + o) for o in openings]
    new = generate(gen.model, prompts, 6, temperature=0.9, eos_id=stop_ids(gen), pad_id=gen.pad_id, seed=3,
                   batch_size=20, include_eos=False)
    for text, prompt, ids in zip(out, prompts, new):
        assert gen.tokenizer.decode(prompt + ids).rstrip() == (fmt.prompt(5) + text).rstrip()
    with pytest.raises(ValueError, match="2 openings for 3 reviews"):
        generate_reviews(gen, fmt, 5, 3, max_new_tokens=2, openings=openings[:2])
