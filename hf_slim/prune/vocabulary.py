"""Vocabulary (embedding) trimming: keep only the tokens a corpus uses.

A small encoder spends most of its parameters on the word embedding: MiniLM-L6's 30522 x 384 embedding is half of
the model. A model fine-tuned for one domain or language only ever sees a fraction of those rows, so
[`prune_vocabulary`] keeps the special tokens and the tokens that occur in a corpus, slices the embedding (and a tied
or untied output embedding such as an MLM decoder), and returns a tokenizer whose ids match the smaller embedding.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import (
    BertTokenizer,
    BertTokenizerFast,
    DistilBertTokenizer,
    DistilBertTokenizerFast,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from ..architectures import get_adapter
from ..errors import HfSlimError
from .structured import _sync_config, pruning_record

# WordPiece tokenizers whose whole state is a vocab.txt plus a few options; the pruned tokenizer has the same class.
SUPPORTED_TOKENIZERS = (BertTokenizer, BertTokenizerFast, DistilBertTokenizer, DistilBertTokenizerFast)
BATCH_SIZE = 1000
PROGRESS_MIN_TEXTS = 1000
_SPECIAL_ATTRIBUTES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def prune_vocabulary(model: nn.Module, tokenizer: PreTrainedTokenizerBase, texts: Iterable[str], min_count: int = 1):
    """Trim the vocabulary of a text model in place to the tokens a corpus uses, and return a matching tokenizer.

    `texts` are tokenized (without special tokens) and every token id that occurs at least `min_count` times is
    kept, together with the tokenizer's special tokens (`[PAD]`, `[UNK]`, `[CLS]`, `[SEP]`, `[MASK]`, additional
    special tokens), tokens added with `add_tokens`, the embedding's `padding_idx` and the token ids named in the
    config (`pad_token_id`, `bos_token_id`, ...). Kept tokens keep their relative order: the new id of a token is its
    position in the sorted list of kept old ids.

    The model is changed in place:

    - the word embedding (`model.get_input_embeddings()`) is replaced by a new `nn.Embedding` holding the kept rows,
      with `padding_idx` remapped;
    - the output embedding (`model.get_output_embeddings()`, e.g. the MLM decoder), if any, loses the same rows of its
      weight and bias; weights that were shared (a decoder tied to the word embedding, BERT's decoder bias shared
      with `cls.predictions.bias`) are still shared afterwards;
    - `config.vocab_size` and the `*_token_id` entries of the config are updated, and the operation is appended to
      the `history` of the `config.hf_slim` record, so both `AutoModel*.from_pretrained` and
      [`hf_slim.from_pretrained`] reload the saved model.

    Position and token-type embeddings are not touched. Nothing is modified if an argument is refused.

    Text made only of kept tokens is encoded exactly as before (WordPiece's greedy longest match cannot find a longer
    piece in a subset of the vocabulary), so the model's outputs on it are unchanged; with `min_count=1` this holds
    for every text of the corpus. Other text is encoded by the same greedy longest match on the reduced vocabulary: a
    word whose pieces were dropped is spelled with other kept pieces when it can be (e.g. `"playing"` as `"play"`,
    `"##ing"` if `"##ing"` was kept elsewhere, or as shorter pieces), and otherwise becomes the unknown token; as in
    BERT, a word with any part that cannot be matched becomes a single `[UNK]`. Such text gives different (usually
    worse) predictions than the original model, so pass a corpus representative of the text the model will see.

    Only BERT-style WordPiece tokenizers are supported: `BertTokenizer`, `BertTokenizerFast`, `DistilBertTokenizer`
    and `DistilBertTokenizerFast`.

    Args:
        model (`PreTrainedModel`):
            A text model of a family in the hf_slim registry (e.g. `BertForSequenceClassification`), whose word
            embedding has one row per token of `tokenizer`.
        tokenizer (`PreTrainedTokenizerBase`):
            The model's tokenizer. It is not modified.
        texts (`Iterable[str]`):
            The corpus: a list, a generator or a `datasets` column of strings. It is read once.
        min_count (`int`, *optional*, defaults to 1):
            Keep a (non-special) token only if it occurs at least this many times in `texts`.

    Returns:
        `tuple(PreTrainedModel, PreTrainedTokenizerBase)`: `(model, new_tokenizer)`, the same model object (modified
        in place) and a new tokenizer of the same class as `tokenizer` and with its settings (lower-casing, accent
        stripping, special tokens, `model_max_length`, padding side...), whose vocabulary is the kept tokens. Save
        both with `save_pretrained` to the same folder; the tokenizer holds no reference to temporary files.

    Raises:
        [`HfSlimError`]: `min_count` is not an integer >= 1, the model is not a text model, the tokenizer is not a
        supported WordPiece tokenizer, the embedding size does not match `len(tokenizer)`, or `texts` is not an
        iterable of strings or is empty.

    Example:

    ```python
    >>> from hf_slim.prune.vocabulary import prune_vocabulary
    >>> model, tokenizer = prune_vocabulary(model, tokenizer, dataset["train"]["text"])
    >>> model.save_pretrained("pruned")
    >>> tokenizer.save_pretrained("pruned")
    ```
    """
    if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer)) or min_count < 1:
        raise HfSlimError(
            f"prune_vocabulary: min_count={min_count!r} is invalid; expected an integer >= 1 (1 keeps every token "
            "that occurs in texts)."
        )
    min_count = int(min_count)
    adapter = get_adapter(model)
    if adapter.modality != "text":
        raise HfSlimError(
            f"prune_vocabulary trims the token embedding of text models; {type(model).__name__} is a "
            f"{adapter.modality} model (model_type {model.config.model_type!r}) and has no vocabulary."
        )
    _check_tokenizer(tokenizer)
    vocab_size = len(tokenizer)
    embedding = model.get_input_embeddings()
    if type(embedding) is not nn.Embedding:
        raise HfSlimError(
            f"prune_vocabulary: {type(model).__name__}.get_input_embeddings() is a {type(embedding).__name__}; "
            "only plain torch.nn.Embedding word embeddings can be trimmed."
        )
    config_vocab = getattr(model.config, "vocab_size", None)
    if embedding.num_embeddings != vocab_size or config_vocab != vocab_size:
        raise HfSlimError(
            f"prune_vocabulary: the model has {embedding.num_embeddings} token embeddings (config.vocab_size="
            f"{config_vocab}) but the {type(tokenizer).__name__} has {vocab_size} tokens; pass the tokenizer the "
            "model was trained with (if you added tokens, call model.resize_token_embeddings(len(tokenizer)) first)."
        )
    output = model.get_output_embeddings()
    if output is not None and (
        not isinstance(getattr(output, "weight", None), torch.Tensor) or output.weight.shape[0] != vocab_size
    ):
        shape = tuple(output.weight.shape) if isinstance(getattr(output, "weight", None), torch.Tensor) else None
        raise HfSlimError(
            f"prune_vocabulary: the output embedding {type(output).__name__} of {type(model).__name__} has weight "
            f"shape {shape}; expected {vocab_size} rows, one per token."
        )

    counts = _count_tokens(tokenizer, texts, vocab_size)
    keep = _kept_ids(model, tokenizer, counts, min_count, vocab_size)
    new_tokenizer = _build_tokenizer(tokenizer, keep)

    # -- everything is checked: modify the model ------------------------------------------------------------------
    record = pruning_record(model)
    new_id = {old: new for new, old in enumerate(keep)}
    index = torch.tensor(keep, dtype=torch.long, device=embedding.weight.device)
    replacements: dict[int, nn.Parameter] = {}

    def sliced(param: nn.Parameter) -> nn.Parameter:
        if id(param) not in replacements:
            index_here = index.to(param.device)
            data = param.detach().index_select(0, index_here).clone()
            replacements[id(param)] = nn.Parameter(data, requires_grad=param.requires_grad)
        return replacements[id(param)]

    weight = sliced(embedding.weight)
    if output is not None:
        sliced(output.weight)
        bias = getattr(output, "bias", None)
        if isinstance(bias, nn.Parameter) and bias.dim() == 1 and bias.shape[0] == vocab_size:
            sliced(bias)
    padding_idx = None if embedding.padding_idx is None else new_id[embedding.padding_idx]
    new_embedding = nn.Embedding(
        len(keep),
        embedding.embedding_dim,
        padding_idx=padding_idx,
        max_norm=embedding.max_norm,
        norm_type=embedding.norm_type,
        scale_grad_by_freq=embedding.scale_grad_by_freq,
        sparse=embedding.sparse,
        _weight=weight.detach(),
    )
    new_embedding.train(embedding.training)
    model.set_input_embeddings(new_embedding)
    # Re-point every reference to a sliced parameter, so that ties (decoder.weight is the word embedding, the MLM
    # decoder.bias is cls.predictions.bias) survive.
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is not None and id(param) in replacements:
                module._parameters[name] = replacements[id(param)]
    new_embedding.weight = weight
    if output is not None and hasattr(output, "out_features"):
        output.out_features = len(keep)

    config = model.config
    for name, value in _config_token_ids(config).items():
        setattr(config, name, [new_id[v] for v in value] if isinstance(value, list) else new_id[value])
    config.vocab_size = len(keep)
    removed = vocab_size - len(keep)
    record["history"].append({"op": "prune_vocabulary", "kept": len(keep), "removed": removed, "min_count": min_count})
    _sync_config(model, adapter, record)
    return model, new_tokenizer


# -- checks and counting ---------------------------------------------------------------------------------------------
def _check_tokenizer(tokenizer) -> None:
    name = type(tokenizer).__name__
    supported = ", ".join(cls.__name__ for cls in SUPPORTED_TOKENIZERS)
    if not isinstance(tokenizer, SUPPORTED_TOKENIZERS):
        raise HfSlimError(
            f"prune_vocabulary does not support {name}: it trims BERT-style WordPiece vocabularies ({supported}). "
            "Byte-level BPE (RoBERTa, GPT-2) and SentencePiece tokenizers are not supported."
        )
    if isinstance(tokenizer, PreTrainedTokenizerFast):
        model_type = type(tokenizer.backend_tokenizer.model).__name__
        if model_type != "WordPiece":
            raise HfSlimError(
                f"prune_vocabulary: this {name} wraps a {model_type} model, not WordPiece; only WordPiece "
                f"vocabularies can be trimmed ({supported})."
            )
    if tokenizer.unk_token is None or tokenizer.unk_token_id is None:
        raise HfSlimError(
            f"prune_vocabulary: the {name} has no unknown token; words whose pieces are removed need one "
            "(set tokenizer.unk_token, e.g. '[UNK]')."
        )


def _batches(texts: Iterable[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise HfSlimError(
                f"prune_vocabulary: texts must be strings; item {position} is a {type(text).__name__} ({text!r:.60}). "
                "Pass a column of text, e.g. dataset['text']."
            )
        batch.append(text)
        if len(batch) == BATCH_SIZE:
            yield batch
            batch = []
    if batch:
        yield batch


def _count_tokens(tokenizer, texts: Iterable[str], vocab_size: int) -> np.ndarray:
    """How often each token id occurs in `texts`, tokenized without special tokens."""
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Iterable):
        raise HfSlimError(
            f"prune_vocabulary: texts must be an iterable of strings (a list, generator or dataset column), got "
            f"{type(texts).__name__}; wrap a single text in a list."
        )
    try:
        total = len(texts)
    except TypeError:
        total = None
    counts = np.zeros(vocab_size, dtype=np.int64)
    seen = 0
    with tqdm(
        total=total,
        desc="Counting tokens",
        unit="texts",
        disable=total is not None and total < PROGRESS_MIN_TEXTS,
    ) as bar:
        for batch in _batches(texts):
            encoded = tokenizer(
                batch,
                add_special_tokens=False,
                return_attention_mask=False,
                return_token_type_ids=False,
                verbose=False,
            )["input_ids"]
            ids = np.fromiter((i for row in encoded for i in row), dtype=np.int64)
            if ids.size:
                counts += np.bincount(ids, minlength=vocab_size)[:vocab_size]
            seen += len(batch)
            bar.update(len(batch))
    if seen == 0:
        raise HfSlimError(
            "prune_vocabulary: texts is empty; pass the corpus whose tokens should be kept (a generator can only be "
            "read once)."
        )
    return counts


def _config_token_ids(config) -> dict[str, int | list[int]]:
    """The config's `*_token_id` entries that name a token of the current vocabulary."""
    found = {}
    for name, value in vars(config).items():
        if not name.endswith("_token_id") or value is None:
            continue
        values = value if isinstance(value, list) else [value]
        if values and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v < config.vocab_size for v in values
        ):
            found[name] = value
    return found


def _kept_ids(model, tokenizer, counts: np.ndarray, min_count: int, vocab_size: int) -> list[int]:
    keep = set(np.flatnonzero(counts >= min_count).tolist())
    keep.update(tokenizer.all_special_ids)
    keep.update(i for i in tokenizer.added_tokens_decoder if i >= tokenizer.vocab_size)
    padding_idx = model.get_input_embeddings().padding_idx
    if padding_idx is not None:
        keep.add(padding_idx)
    for value in _config_token_ids(model.config).values():
        keep.update(value if isinstance(value, list) else [value])
    return sorted(i for i in keep if 0 <= i < vocab_size)


# -- the new tokenizer -----------------------------------------------------------------------------------------------
def _build_tokenizer(tokenizer, keep: list[int]):
    """A tokenizer of the same class and settings as `tokenizer` whose token `j` is `tokenizer`'s token `keep[j]`."""
    cls = type(tokenizer)
    base_size = tokenizer.vocab_size
    tokens = tokenizer.convert_ids_to_tokens(keep)
    base_tokens = [t for i, t in zip(keep, tokens, strict=True) if i < base_size]
    base_set = set(base_tokens)
    added = [tokenizer.added_tokens_decoder[i] for i in keep if i >= base_size]

    kwargs = {
        "model_max_length": tokenizer.model_max_length,
        "padding_side": tokenizer.padding_side,
        "truncation_side": tokenizer.truncation_side,
        "model_input_names": list(tokenizer.model_input_names),
        "clean_up_tokenization_spaces": tokenizer.clean_up_tokenization_spaces,
    }
    late_special = {}
    special = tokenizer.special_tokens_map
    for attr in _SPECIAL_ATTRIBUTES:
        value = special.get(attr)
        if value is None or value in base_set:
            kwargs[attr] = value
        else:
            kwargs[attr] = None  # an added token: set after the added tokens, whose ids must stay in order
            late_special[attr] = value
    if isinstance(tokenizer, PreTrainedTokenizerFast):
        state = json.loads(tokenizer.backend_tokenizer.normalizer.__getstate__()) if _normalizer(tokenizer) else {}
        kwargs["do_lower_case"] = state.get("lowercase", tokenizer.init_kwargs.get("do_lower_case", True))
        kwargs["strip_accents"] = state.get("strip_accents", tokenizer.init_kwargs.get("strip_accents"))
        kwargs["tokenize_chinese_chars"] = state.get(
            "handle_chinese_chars", tokenizer.init_kwargs.get("tokenize_chinese_chars", True)
        )
    else:
        basic = getattr(tokenizer, "basic_tokenizer", None) if tokenizer.do_basic_tokenize else None
        kwargs["do_lower_case"] = basic.do_lower_case if basic else tokenizer.init_kwargs.get("do_lower_case", True)
        kwargs["do_basic_tokenize"] = tokenizer.do_basic_tokenize
        if basic is not None:
            kwargs["never_split"] = sorted(basic.never_split)
            kwargs["tokenize_chinese_chars"] = basic.tokenize_chinese_chars
            kwargs["strip_accents"] = basic.strip_accents

    with tempfile.TemporaryDirectory(prefix="hf_slim_vocab_") as tmp:
        vocab_file = os.path.join(tmp, "vocab.txt")
        with open(vocab_file, "w", encoding="utf-8") as f:
            f.writelines(token + "\n" for token in base_tokens)
        new = cls(vocab_file=vocab_file, **kwargs)
        if isinstance(new, PreTrainedTokenizerFast):
            # Rebuilt from vocab.txt the backend has default components; copy the original's so that text is
            # normalised and split exactly as before, then reload it from memory (no reference to the temp file).
            new_state = json.loads(new.backend_tokenizer.to_str())
            old_state = json.loads(tokenizer.backend_tokenizer.to_str())
            for key in ("normalizer", "pre_tokenizer", "decoder"):
                new_state[key] = old_state[key]
            for key in ("unk_token", "continuing_subword_prefix", "max_input_chars_per_word"):
                if key in old_state["model"]:
                    new_state["model"][key] = old_state["model"][key]
            from tokenizers import Tokenizer

            backend = Tokenizer.from_str(json.dumps(new_state))
            new = cls(tokenizer_object=backend, **kwargs)
        else:
            new.wordpiece_tokenizer.max_input_chars_per_word = tokenizer.wordpiece_tokenizer.max_input_chars_per_word
            new.init_kwargs.pop("vocab_file", None)
    for token in added:
        new.add_tokens([token], special_tokens=token.special)
    for attr, value in late_special.items():
        new.add_special_tokens({attr: value})
    extra = list(tokenizer.additional_special_tokens)
    if extra:
        new.add_special_tokens({"additional_special_tokens": extra}, replace_additional_special_tokens=True)
    new.name_or_path = tokenizer.name_or_path
    _check_rebuilt(tokenizer, new, keep, tokens)
    return new


def _normalizer(tokenizer) -> bool:
    normalizer = tokenizer.backend_tokenizer.normalizer
    return normalizer is not None and type(normalizer).__name__ == "BertNormalizer"


def _check_rebuilt(old, new, keep: list[int], tokens: list[str]) -> None:
    """The rebuilt tokenizer must map new id `j` to the token of old id `keep[j]` and add special tokens alike."""
    problem = None
    if len(new) != len(keep):
        problem = f"it has {len(new)} tokens instead of {len(keep)}"
    elif new.convert_ids_to_tokens(list(range(len(keep)))) != tokens:
        problem = "its token ids are not the kept tokens in order"
    else:
        for args in (("",), ("", "")):
            before, after = old(*args), new(*args)
            if old.convert_ids_to_tokens(before["input_ids"]) != new.convert_ids_to_tokens(after["input_ids"]) or (
                before.get("token_type_ids") != after.get("token_type_ids")
            ):
                problem = "it adds special tokens differently ([CLS]/[SEP] template)"
                break
    if problem:
        raise HfSlimError(
            f"prune_vocabulary could not rebuild this {type(old).__name__} from its kept vocabulary: {problem}. "
            "The tokenizer is customised beyond what a vocab.txt and the standard BERT options describe."
        )
