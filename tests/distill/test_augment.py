import pytest

from hf_slim import HfSlimError, augment_texts

TEXTS = [
    "a stirring , funny and finally transporting re-imagining of beauty and the beast",
    "apparently reassembled from the cutting-room floor of any given daytime soap .",
    "this is a visually stunning rumination on love , memory , history and the war between art and commerce .",
    "a dull movie",
]
NO_OPS = dict(span_probability=0.0, drop_probability=0.0, replace_probability=0.0, splice_probability=0.0)


def test_deterministic_for_a_seed_and_different_across_seeds():
    assert augment_texts(TEXTS, 3, seed=1) == augment_texts(TEXTS, 3, seed=1)
    assert augment_texts(TEXTS, 3, seed=1) != augment_texts(TEXTS, 3, seed=2)


def test_copies_are_new_and_unique_and_at_most_num_per_text_each():
    out = augment_texts(TEXTS, 5, seed=0)
    assert 0 < len(out) <= 5 * len(TEXTS)
    assert len(set(out)) == len(out)
    assert not set(out) & set(TEXTS)


def test_no_operation_means_no_copies():
    # Every copy would equal its source, and those are never returned.
    assert augment_texts(TEXTS, 3, **NO_OPS) == []


def test_spans_are_contiguous_pieces_of_the_source_never_shorter_than_min_words():
    source = " ".join(f"w{i}" for i in range(20))
    out = augment_texts([source], 50, **{**NO_OPS, "span_probability": 1.0}, min_span_fraction=0.25, min_words=3)
    assert out
    for text in out:
        words = text.split()
        assert len(words) >= 5  # 25% of 20 words
        assert f" {text} " in f" {source} "


def test_replacements_draw_words_of_the_corpus():
    vocabulary = {w for t in TEXTS for w in t.split()}
    out = augment_texts(TEXTS, 10, **{**NO_OPS, "replace_probability": 0.5})
    assert out
    assert all(set(text.split()) <= vocabulary for text in out)
    # Replacement keeps the word count.
    lengths = {len(t.split()) for t in TEXTS}
    assert all(len(text.split()) in lengths for text in out)


def test_dropping_never_goes_below_min_words():
    out = augment_texts(TEXTS, 20, **{**NO_OPS, "drop_probability": 0.9}, min_words=3)
    assert out
    assert all(len(text.split()) >= 3 for text in out)


def test_inputs_are_not_modified_and_generators_are_accepted():
    texts = list(TEXTS)
    assert augment_texts(iter(texts), 2, seed=3) == augment_texts(texts, 2, seed=3)
    assert texts == TEXTS


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_per_text": 0}, "num_per_text must be an integer >= 1, got 0"),
        ({"num_per_text": 1.5}, "num_per_text"),
        ({"drop_probability": 1.5}, "drop_probability must be a probability in \\[0, 1\\], got 1.5"),
        ({"span_probability": -0.1}, "span_probability"),
        ({"min_words": 0}, "min_words must be an integer >= 1"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(HfSlimError, match=match):
        augment_texts(TEXTS, **kwargs)


def test_non_string_items_and_empty_corpus_are_refused():
    with pytest.raises(HfSlimError, match="item 1 is int"):
        augment_texts(["fine text", 3])
    with pytest.raises(HfSlimError, match="no words"):
        augment_texts(["", "  "])
