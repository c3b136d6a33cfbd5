"""Vocabulary trimming: exact outputs on kept text, remapped ids, tied MLM heads, save/reload, refusals."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from datasets import Dataset
from tiny_models import build_model
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertTokenizer,
    BertTokenizerFast,
    DistilBertConfig,
    DistilBertForMaskedLM,
    DistilBertForSequenceClassification,
    DistilBertTokenizerFast,
    RobertaTokenizerFast,
)

from hf_slim.errors import HfSlimError
from hf_slim.modeling import from_pretrained as slim_from_pretrained
from hf_slim.prune.structured import prune_heads
from hf_slim.prune.vocabulary import prune_vocabulary

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "the a cat dog sat on mat is was good bad movie film great terrible and it this that very not i love hate "
    "play playing walk run fast slow red blue green . , ! ?"
).split()
PIECES = ["##ing", "##ed", "##s", "##ly", "##er", "##a", "##t", "##e", "##r", "##n", "##o"]
LETTERS = [c for c in "abcdefghijklmnorst" if c not in WORDS]
VOCAB = SPECIAL + WORDS + PIECES + LETTERS
assert len(set(VOCAB)) == len(VOCAB)
HIDDEN = 32

CORPUS = [
    "The cat sat on the mat.",
    "This movie is very good!",
    "I love this film, it was great.",
    "walking and running fast",
    "the film was not bad",
]
# Only words (and pieces) that occur in CORPUS.
KEPT_SENTENCES = ["the cat sat on the mat", "this film was very good!", "I love walking, it was great."]


@pytest.fixture
def vocab_file(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture
def tokenizer(vocab_file):
    return BertTokenizerFast(vocab_file=vocab_file, model_max_length=64)


def make_model(kind: str = "bert", seed: int = 0):
    torch.manual_seed(seed)
    size = dict(vocab_size=len(VOCAB), max_position_embeddings=64, num_labels=3)
    bert = dict(hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
    distil = dict(dim=HIDDEN, n_layers=2, n_heads=4, hidden_dim=37)
    model = {
        "bert": lambda: BertForSequenceClassification(BertConfig(**size, **bert)),
        "bert-mlm": lambda: BertForMaskedLM(BertConfig(**size, **bert)),
        "distilbert": lambda: DistilBertForSequenceClassification(DistilBertConfig(**size, **distil)),
        "distilbert-mlm": lambda: DistilBertForMaskedLM(DistilBertConfig(**size, **distil)),
    }[kind]()
    # Non-zero MLM biases, so a bias sliced at the wrong rows shows in the logits.
    for name, param in model.named_parameters():
        if name.endswith("bias") and param.shape[0] == len(VOCAB):
            with torch.no_grad():
                param.copy_(torch.randn(param.shape))
    return model.eval()


def logits(model, tokenizer, sentences):
    with torch.no_grad():
        return model(**tokenizer(sentences, padding=True, return_tensors="pt")).logits


def kept_ids(tokenizer, texts, min_count=1):
    counts = {}
    for text in texts:
        for i in tokenizer(text, add_special_tokens=False)["input_ids"]:
            counts[i] = counts.get(i, 0) + 1
    return sorted({i for i, c in counts.items() if c >= min_count} | set(tokenizer.all_special_ids))


def assert_unchanged(model, state):
    after = model.state_dict()
    assert after.keys() == state.keys()
    for key, value in state.items():
        assert after[key].shape == value.shape, key
        assert torch.equal(after[key], value), key


# -- equivalence and remapping ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["bert", "distilbert", "bert-mlm", "distilbert-mlm"])
def test_identical_logits_on_kept_text(kind, vocab_file):
    cls = DistilBertTokenizerFast if kind.startswith("distilbert") else BertTokenizerFast
    tokenizer = cls(vocab_file=vocab_file)
    model = make_model(kind)
    original = copy.deepcopy(model)
    keep = kept_ids(tokenizer, CORPUS)
    assert len(keep) < len(VOCAB) // 2  # the test trims a lot

    pruned, new_tokenizer = prune_vocabulary(model, tokenizer, CORPUS)

    assert pruned is model
    assert type(new_tokenizer) is cls
    before, after = logits(original, tokenizer, KEPT_SENTENCES), logits(pruned, new_tokenizer, KEPT_SENTENCES)
    if kind.endswith("mlm"):
        before = before[..., keep]  # the MLM head scores the kept tokens only
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)


def test_remapped_ids_config_and_sizes(tokenizer):
    model = make_model("bert")
    params_before = sum(p.numel() for p in model.parameters())
    keep = kept_ids(tokenizer, CORPUS)

    model, new_tokenizer = prune_vocabulary(model, tokenizer, CORPUS)

    removed = len(VOCAB) - len(keep)
    assert len(new_tokenizer) == len(keep) == model.config.vocab_size
    assert new_tokenizer.convert_ids_to_tokens(list(range(len(keep)))) == tokenizer.convert_ids_to_tokens(keep)
    for sentence in KEPT_SENTENCES:
        old_ids = tokenizer(sentence)["input_ids"]
        assert new_tokenizer(sentence)["input_ids"] == [keep.index(i) for i in old_ids]
    for token in SPECIAL:
        assert new_tokenizer.convert_tokens_to_ids(token) == keep.index(tokenizer.convert_tokens_to_ids(token))
    assert new_tokenizer.all_special_tokens == tokenizer.all_special_tokens
    assert new_tokenizer.model_max_length == 64
    embedding = model.get_input_embeddings()
    assert type(embedding) is torch.nn.Embedding
    assert embedding.weight.shape == (len(keep), HIDDEN)
    assert embedding.padding_idx == keep.index(0) == model.config.pad_token_id
    assert sum(p.numel() for p in model.parameters()) == params_before - removed * HIDDEN
    # Position and token-type embeddings are untouched.
    assert model.bert.embeddings.position_embeddings.weight.shape == (64, HIDDEN)
    assert model.bert.embeddings.token_type_embeddings.weight.shape == (2, HIDDEN)
    history = model.config.hf_slim["history"]
    assert history[-1] == {"op": "prune_vocabulary", "kept": len(keep), "removed": removed, "min_count": 1}
    json.dumps(model.config.to_dict())


def test_unseen_words_become_unk_or_kept_pieces(tokenizer):
    model = make_model("bert")
    assert tokenizer.tokenize("playing dog") == ["playing", "dog"]
    _, new_tokenizer = prune_vocabulary(model, tokenizer, ["play walking"])

    # "playing" is spelled with kept pieces, "dog" has none left (its letters were never seen) and is unknown.
    assert new_tokenizer.tokenize("playing dog") == ["play", "##ing", "[UNK]"]
    assert "dog" not in new_tokenizer.get_vocab()
    out = logits(model, new_tokenizer, ["playing dog", "zebra!", "the cat sat on the mat"])
    assert torch.isfinite(out).all()


def test_min_count_drops_rare_tokens(tokenizer):
    model = make_model("bert")
    texts = ["the dog sat", "the dog ran", "a cat"]
    model, new_tokenizer = prune_vocabulary(model, tokenizer, texts, min_count=2)
    vocab = new_tokenizer.get_vocab()
    assert "the" in vocab and "dog" in vocab and "sat" not in vocab and "cat" not in vocab
    assert set(SPECIAL) <= set(vocab)
    assert len(vocab) == len(SPECIAL) + 2
    assert model.config.hf_slim["history"][-1]["min_count"] == 2
    assert new_tokenizer.tokenize("the cat") == ["the", "[UNK]"]


def test_counts_add_up_across_batches(tokenizer):
    texts = ["the cat"] * 1500 + ["the dog"]  # more than one tokenization batch, with a progress bar
    _, new_tokenizer = prune_vocabulary(make_model("bert"), tokenizer, texts, min_count=1500)
    assert set(new_tokenizer.get_vocab()) == set(SPECIAL) | {"the", "cat"}


def test_texts_from_generator_and_dataset_column(tokenizer):
    expected = kept_ids(tokenizer, CORPUS)
    _, from_generator = prune_vocabulary(make_model("bert"), tokenizer, (text for text in CORPUS))
    column = Dataset.from_dict({"text": CORPUS})["text"]
    _, from_column = prune_vocabulary(make_model("bert"), tokenizer, column)
    assert len(from_generator) == len(from_column) == len(expected)
    assert from_generator.get_vocab() == from_column.get_vocab()


def test_slow_tokenizer_returns_slow_tokenizer(vocab_file, tokenizer):
    slow = BertTokenizer(vocab_file=vocab_file, do_lower_case=True)
    _, new_slow = prune_vocabulary(make_model("bert"), slow, CORPUS)
    _, new_fast = prune_vocabulary(make_model("bert"), tokenizer, CORPUS)
    assert type(new_slow) is BertTokenizer
    assert new_slow.get_vocab() == new_fast.get_vocab()
    for sentence in KEPT_SENTENCES + ["playing dog"]:
        assert new_slow(sentence)["input_ids"] == new_fast(sentence)["input_ids"]


def test_tokenizer_settings_are_kept(vocab_file):
    tokenizer = BertTokenizerFast(vocab_file=vocab_file, do_lower_case=False, padding_side="left", model_max_length=16)
    assert tokenizer.tokenize("The cat") == ["[UNK]", "cat"]
    _, new_tokenizer = prune_vocabulary(make_model("bert"), tokenizer, ["The cat"])
    assert new_tokenizer.tokenize("The cat") == ["[UNK]", "cat"]  # still case-sensitive
    assert new_tokenizer.padding_side == "left" and new_tokenizer.model_max_length == 16
    batch = new_tokenizer(["cat", "cat cat cat"], padding=True)["input_ids"]
    assert batch[0][0] == new_tokenizer.pad_token_id


def test_custom_normalizer_is_kept(tokenizer, tmp_path):
    from tokenizers import normalizers

    tokenizer.backend_tokenizer.normalizer = normalizers.Sequence(
        [normalizers.BertNormalizer(lowercase=True), normalizers.Replace("film", "movie")]
    )
    assert tokenizer.tokenize("Film") == ["movie"]
    _, new_tokenizer = prune_vocabulary(make_model("bert"), tokenizer, CORPUS)
    assert new_tokenizer.tokenize("Film") == ["movie"]
    new_tokenizer.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).tokenize("Film") == ["movie"]


def test_config_token_ids_and_padding_idx_are_remapped(tmp_path):
    vocab = WORDS + PIECES + SPECIAL  # special tokens last, so their ids change
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=HIDDEN,
        num_hidden_layers=1,
        num_attention_heads=4,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=vocab.index("hate"),  # not in the corpus, kept because the config names it
    )
    model = BertForSequenceClassification(config).eval()
    original = copy.deepcopy(model)

    model, new_tokenizer = prune_vocabulary(model, tokenizer, CORPUS)

    assert model.config.pad_token_id == new_tokenizer.pad_token_id == model.get_input_embeddings().padding_idx
    assert new_tokenizer.convert_ids_to_tokens(model.config.pad_token_id) == "[PAD]"
    assert new_tokenizer.convert_ids_to_tokens(model.config.eos_token_id) == "hate"
    assert model.config.pad_token_id < tokenizer.pad_token_id
    torch.testing.assert_close(
        logits(model, new_tokenizer, KEPT_SENTENCES), logits(original, tokenizer, KEPT_SENTENCES), atol=1e-6, rtol=0
    )


def test_added_tokens_are_kept_after_the_vocabulary(tokenizer):
    tokenizer.add_tokens(["<ent>"])
    model = make_model("bert")
    model.resize_token_embeddings(len(tokenizer))
    model.config.vocab_size = len(tokenizer)
    row = model.get_input_embeddings().weight[len(VOCAB)].detach().clone()

    model, new_tokenizer = prune_vocabulary(model, tokenizer, ["the cat"])

    assert new_tokenizer.convert_ids_to_tokens(len(new_tokenizer) - 1) == "<ent>"
    assert new_tokenizer.tokenize("the <ent> cat") == ["the", "<ent>", "cat"]
    torch.testing.assert_close(model.get_input_embeddings().weight[-1], row, atol=0, rtol=0)


# -- tied output embeddings -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["bert-mlm", "distilbert-mlm"])
def test_tied_mlm_decoder_sliced_and_still_tied(kind, tokenizer):
    model = make_model(kind)
    output = model.get_output_embeddings()
    assert output.weight is model.get_input_embeddings().weight
    old_weight, old_bias = output.weight.detach().clone(), output.bias.detach().clone()
    params_before = sum(p.numel() for p in model.parameters())
    keep = kept_ids(tokenizer, CORPUS)

    model, _ = prune_vocabulary(model, tokenizer, CORPUS)

    output = model.get_output_embeddings()
    assert output.weight is model.get_input_embeddings().weight
    assert output.out_features == len(keep)
    torch.testing.assert_close(output.weight.detach(), old_weight[keep], atol=0, rtol=0)
    torch.testing.assert_close(output.bias.detach(), old_bias[keep], atol=0, rtol=0)
    if kind == "bert-mlm":
        assert model.cls.predictions.bias is output.bias
    removed = len(VOCAB) - len(keep)
    assert sum(p.numel() for p in model.parameters()) == params_before - removed * (HIDDEN + 1)
    model.tie_weights()  # what from_pretrained does; must keep the sliced tensors
    assert output.weight.shape == (len(keep), HIDDEN) and output.bias.shape == (len(keep),)


# -- save and reload --------------------------------------------------------------------------------------------------
def test_save_and_reload_with_auto_classes(tokenizer, tmp_path):
    model = make_model("bert")
    model, new_tokenizer = prune_vocabulary(model, tokenizer, CORPUS)
    expected = logits(model, new_tokenizer, KEPT_SENTENCES)
    model.save_pretrained(tmp_path / "out")
    new_tokenizer.save_pretrained(tmp_path / "out")
    for path in (tmp_path / "out").iterdir():
        if path.suffix in (".json", ".txt"):
            assert "hf_slim_vocab_" not in path.read_text(encoding="utf-8"), path.name

    reloaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    reloaded, info = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert isinstance(reloaded_tokenizer, BertTokenizerFast)
    assert reloaded_tokenizer.get_vocab() == new_tokenizer.get_vocab()
    torch.testing.assert_close(
        logits(reloaded.eval(), reloaded_tokenizer, KEPT_SENTENCES), expected, atol=1e-6, rtol=0
    )

    slim = slim_from_pretrained(str(tmp_path / "out"))
    torch.testing.assert_close(logits(slim, reloaded_tokenizer, KEPT_SENTENCES), expected, atol=1e-6, rtol=0)

    slow = AutoTokenizer.from_pretrained(tmp_path / "out", use_fast=False)
    assert slow(KEPT_SENTENCES)["input_ids"] == new_tokenizer(KEPT_SENTENCES)["input_ids"]


def test_save_and_reload_mlm_after_head_pruning(tokenizer, tmp_path):
    model = prune_heads(make_model("bert-mlm"), {0: [1], 1: [0, 3]})
    model, new_tokenizer = prune_vocabulary(model, tokenizer, CORPUS)
    assert [step["op"] for step in model.config.hf_slim["history"]] == ["prune_heads", "prune_vocabulary"]
    expected = logits(model, new_tokenizer, KEPT_SENTENCES)
    model.save_pretrained(tmp_path / "out")
    new_tokenizer.save_pretrained(tmp_path / "out")

    reloaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    stock, info = AutoModelForMaskedLM.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert stock.get_output_embeddings().weight is stock.get_input_embeddings().weight
    torch.testing.assert_close(logits(stock.eval(), reloaded_tokenizer, KEPT_SENTENCES), expected, atol=1e-6, rtol=0)


def test_hf_slim_loader_reloads_pruned_mlm(tokenizer, tmp_path):
    model, new_tokenizer = prune_vocabulary(make_model("bert-mlm"), tokenizer, CORPUS)
    expected = logits(model, new_tokenizer, KEPT_SENTENCES)
    model.save_pretrained(tmp_path / "out")
    slim = slim_from_pretrained(str(tmp_path / "out"))
    assert slim.get_output_embeddings().weight is slim.get_input_embeddings().weight
    torch.testing.assert_close(logits(slim, new_tokenizer, KEPT_SENTENCES), expected, atol=1e-6, rtol=0)


# -- refusals, before anything changes --------------------------------------------------------------------------------
@pytest.fixture
def roberta_tokenizer(tmp_path):
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4, "a": 5, "b": 6, "ab": 7, "Ġ": 8}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b\n", encoding="utf-8")
    return RobertaTokenizerFast(vocab_file=str(tmp_path / "vocab.json"), merges_file=str(tmp_path / "merges.txt"))


def test_refuses_byte_level_bpe_tokenizer(roberta_tokenizer):
    model = make_model("bert")
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(HfSlimError, match="RobertaTokenizerFast.*BertTokenizerFast"):
        prune_vocabulary(model, roberta_tokenizer, ["ab"])
    assert_unchanged(model, state)
    assert getattr(model.config, "hf_slim", None) is None


def test_refuses_non_text_model(tokenizer):
    model = build_model("vit", num_layers=2)
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(HfSlimError, match="image model"):
        prune_vocabulary(model, tokenizer, CORPUS)
    assert_unchanged(model, state)


@pytest.mark.parametrize("min_count", [0, -1, 1.5, True, None])
def test_refuses_bad_min_count(tokenizer, min_count):
    model = make_model("bert")
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(HfSlimError, match="min_count"):
        prune_vocabulary(model, tokenizer, CORPUS, min_count=min_count)
    assert_unchanged(model, state)


def test_refuses_tokenizer_of_another_size(tokenizer):
    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(vocab_size=len(VOCAB) + 7, hidden_size=HIDDEN, num_hidden_layers=1, num_attention_heads=4)
    )
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(HfSlimError, match=f"{len(VOCAB) + 7} token embeddings.*{len(VOCAB)} tokens"):
        prune_vocabulary(model, tokenizer, CORPUS)
    assert_unchanged(model, state)
    assert model.config.vocab_size == len(VOCAB) + 7


@pytest.mark.parametrize(
    ("texts", "match"), [("the cat sat", "wrap a single text"), ([], "empty"), (["the cat", None], "item 1")]
)
def test_refuses_bad_texts(tokenizer, texts, match):
    model = make_model("bert")
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(HfSlimError, match=match):
        prune_vocabulary(model, tokenizer, texts)
    assert_unchanged(model, state)
    assert len(tokenizer) == len(VOCAB)
