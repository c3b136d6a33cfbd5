"""Unlabeled in-domain text for distillation: perturbed copies of the training sentences, labelled by the teacher.

A small student trained on a few thousand labelled sentences learns little more from a teacher's soft targets than
from the labels: on the same inputs the two signals mostly agree. The teacher earns its place when the student sees
inputs the labels do not cover (TinyBERT's data augmentation, Jiao et al. 2020; "distilling on unlabeled data",
Tang et al. 2019). These inputs need no labels, only the teacher's logits.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterable

from ..errors import HfSlimError


def _words(text: str) -> list[str]:
    return text.split()


def augment_texts(
    texts: Iterable[str],
    num_per_text: int = 4,
    *,
    span_probability: float = 0.5,
    min_span_fraction: float = 0.3,
    drop_probability: float = 0.1,
    replace_probability: float = 0.1,
    splice_probability: float = 0.1,
    min_words: int = 3,
    seed: int = 0,
) -> list[str]:
    """Make `num_per_text` perturbed copies of every text, for distillation on teacher-labelled inputs.

    Each copy is built from one source text by, in order:

    - with `span_probability`, keeping only a random contiguous span of at least `min_span_fraction` of its words
      (and at least `min_words`): the sub-phrases a sentiment treebank labels, here labelled by the teacher;
    - with `splice_probability`, replacing its second half by the second half of another random text;
    - dropping each word with `drop_probability`;
    - replacing each word with `replace_probability` by a word drawn from the corpus by frequency.

    Copies equal to their source or to an earlier copy are not returned, so the result can be shorter than
    `num_per_text * len(texts)`. The result is deterministic for a given `seed`. Labels are not produced: the copies
    are meant to be scored by the teacher ([`cache_teacher_logits`]) and trained on with the soft-target loss only
    (label `-100`, see [`DistillationTrainer`]).

    Args:
        texts (`Iterable[str]`): Source texts (e.g. the training split's sentence column). Not modified.
        num_per_text (`int`, defaults to 4): Copies attempted per text.
        span_probability (`float`, defaults to 0.5): Probability of cropping to a random span.
        min_span_fraction (`float`, defaults to 0.3): Shortest span, as a fraction of the words.
        drop_probability (`float`, defaults to 0.1): Per-word deletion probability.
        replace_probability (`float`, defaults to 0.1): Per-word replacement probability.
        splice_probability (`float`, defaults to 0.1): Probability of splicing with another text.
        min_words (`int`, defaults to 3): Texts are never cut below this many words.
        seed (`int`, defaults to 0): Random seed.
    """
    texts = list(texts)
    if not isinstance(num_per_text, int) or isinstance(num_per_text, bool) or num_per_text < 1:
        raise HfSlimError(f"num_per_text must be an integer >= 1, got {num_per_text!r}.")
    for name, value in (
        ("span_probability", span_probability),
        ("min_span_fraction", min_span_fraction),
        ("drop_probability", drop_probability),
        ("replace_probability", replace_probability),
        ("splice_probability", splice_probability),
    ):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
            raise HfSlimError(f"{name} must be a probability in [0, 1], got {value!r}.")
    if not isinstance(min_words, int) or min_words < 1:
        raise HfSlimError(f"min_words must be an integer >= 1, got {min_words!r}.")
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise HfSlimError(f"texts must be strings; item {bad} is {type(texts[bad]).__name__}: {texts[bad]!r:.80}.")
    tokenized = [_words(t) for t in texts]
    counts = Counter(w for words in tokenized for w in words)
    if not counts:
        raise HfSlimError("texts hold no words to augment; pass the (non-empty) training texts.")
    vocabulary, weights = zip(*sorted(counts.items()), strict=True)
    cumulative = list(itertools.accumulate(weights))
    rng = random.Random(seed)
    seen = set(texts)
    out: list[str] = []
    for words in tokenized:
        for _ in range(num_per_text):
            new = _perturb(
                words, tokenized, vocabulary, cumulative, rng, span_probability, min_span_fraction, drop_probability,
                replace_probability, splice_probability, min_words,
            )  # fmt: skip
            text = " ".join(new)
            if text and text not in seen:
                seen.add(text)
                out.append(text)
    return out


def _perturb(
    words, corpus, vocabulary, cumulative, rng, span_p, min_fraction, drop_p, replace_p, splice_p, min_words
) -> list[str]:
    words = list(words)
    n = len(words)
    if n > min_words and rng.random() < span_p:
        shortest = min(n, max(min_words, int(round(min_fraction * n))))
        length = rng.randint(shortest, n)
        start = rng.randint(0, n - length)
        words = words[start : start + length]
    if rng.random() < splice_p:
        other = corpus[rng.randrange(len(corpus))]
        words = words[: max(1, len(words) // 2)] + other[len(other) // 2 :]
    kept = [w for w in words if rng.random() >= drop_p]
    if len(kept) >= min(min_words, len(words)):
        words = kept
    return [rng.choices(vocabulary, cum_weights=cumulative)[0] if rng.random() < replace_p else w for w in words]
