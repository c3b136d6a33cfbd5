"""Tiny models and datasets for offline tests: every supported architecture, built from a config."""

from __future__ import annotations

import os

import torch
from datasets import Dataset
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DeiTConfig,
    DeiTForImageClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    HubertConfig,
    HubertForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
    ViTConfig,
    ViTForImageClassification,
    Wav2Vec2Config,
    Wav2Vec2ForSequenceClassification,
)

NUM_LABELS = 3
VOCAB_SIZE = 99
LABELS = {0: "neg", 1: "neu", 2: "pos"}

_TEXT_COMMON = dict(vocab_size=VOCAB_SIZE, max_position_embeddings=64, num_labels=NUM_LABELS)
_AUDIO_COMMON = dict(
    vocab_size=10,
    hidden_size=32,
    num_attention_heads=4,
    intermediate_size=37,
    conv_dim=(16, 16),
    conv_stride=(4, 4),
    conv_kernel=(8, 8),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
    num_labels=NUM_LABELS,
    classifier_proj_size=16,
    mask_time_prob=0.0,
    layerdrop=0.0,
)
_VISION_COMMON = dict(image_size=16, patch_size=4, num_channels=3, num_labels=NUM_LABELS)


def _config_kwargs(num_layers, hidden, heads, intermediate):
    return dict(
        hidden_size=hidden, num_hidden_layers=num_layers, num_attention_heads=heads, intermediate_size=intermediate
    )


def build_model(
    model_type: str, num_layers: int = 4, hidden: int = 32, heads: int = 4, intermediate: int = 37, seed=0
):
    """A randomly initialised classification model of `model_type`, deterministic for a seed."""
    torch.manual_seed(seed)
    size = _config_kwargs(num_layers, hidden, heads, intermediate)
    if model_type == "bert":
        model = BertForSequenceClassification(BertConfig(**_TEXT_COMMON, **size, id2label=LABELS))
    elif model_type == "roberta":
        model = RobertaForSequenceClassification(
            RobertaConfig(**_TEXT_COMMON, **size, pad_token_id=1, id2label=LABELS)
        )
    elif model_type == "distilbert":
        config = DistilBertConfig(
            **_TEXT_COMMON, dim=hidden, n_layers=num_layers, n_heads=heads, hidden_dim=intermediate, id2label=LABELS
        )
        model = DistilBertForSequenceClassification(config)
    elif model_type == "vit":
        model = ViTForImageClassification(ViTConfig(**_VISION_COMMON, **size, id2label=LABELS))
    elif model_type == "deit":
        model = DeiTForImageClassification(DeiTConfig(**_VISION_COMMON, **size, id2label=LABELS))
    elif model_type == "wav2vec2":
        config = Wav2Vec2Config(**{**_AUDIO_COMMON, **size}, use_weighted_layer_sum=True, id2label=LABELS)
        model = Wav2Vec2ForSequenceClassification(config)
    elif model_type == "hubert":
        model = HubertForSequenceClassification(HubertConfig(**{**_AUDIO_COMMON, **size}, id2label=LABELS))
    else:
        raise KeyError(model_type)
    return model


MODEL_TYPES = ("bert", "roberta", "distilbert", "vit", "deit", "wav2vec2", "hubert")


def make_inputs(model_type: str, batch_size: int = 4, seed: int = 0, padded: bool = True) -> dict[str, torch.Tensor]:
    """A batch of random inputs for `model_type` (text batches have padding at the end of some rows)."""
    generator = torch.Generator().manual_seed(seed)
    if model_type in ("bert", "roberta", "distilbert"):
        seq = 12
        input_ids = torch.randint(5, VOCAB_SIZE, (batch_size, seq), generator=generator)
        attention_mask = torch.ones(batch_size, seq, dtype=torch.long)
        if padded:
            for row in range(1, batch_size, 2):
                attention_mask[row, seq - 3 - row % 4 :] = 0
        pad = 1 if model_type == "roberta" else 0
        input_ids = input_ids.masked_fill(attention_mask == 0, pad)
        return {"input_ids": input_ids, "attention_mask": attention_mask}
    if model_type in ("vit", "deit"):
        return {"pixel_values": torch.randn(batch_size, 3, 16, 16, generator=generator)}
    return {"input_values": torch.randn(batch_size, 400, generator=generator)}


def make_dataset(model_type: str, num_rows: int = 24, seed: int = 0) -> Dataset:
    """A learnable toy classification dataset for `model_type`: the label is a function of the input."""
    inputs = make_inputs(model_type, batch_size=num_rows, seed=seed, padded=False)
    key, values = next(iter(inputs.items()))
    flat = values.float().flatten(1)
    labels = (flat[:, : flat.shape[1] // 2].mean(1) > flat[:, flat.shape[1] // 2 :].mean(1)).long()
    labels = labels + (flat[:, 0] > flat[:, 0].median()).long()
    columns = {k: v.tolist() for k, v in inputs.items()}
    columns["labels"] = labels.tolist()
    return Dataset.from_dict(columns)


def _auto_classes():
    from transformers import (
        AutoModelForAudioClassification,
        AutoModelForImageClassification,
        AutoModelForSequenceClassification,
    )

    by_modality = {
        "text": AutoModelForSequenceClassification,
        "image": AutoModelForImageClassification,
        "audio": AutoModelForAudioClassification,
    }
    modality = {"bert": "text", "roberta": "text", "distilbert": "text", "vit": "image", "deit": "image"}
    return {t: by_modality[modality.get(t, "audio")] for t in MODEL_TYPES}


AUTO_CLASSES = _auto_classes()  # model type -> the Auto class that loads its classification checkpoints


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART_RECIPE = os.path.join(REPO_ROOT, "recipes", "quickstart.yaml")
# The quickstart recipe shrunk to a few seconds: one epoch on 200 rows, 100 eval rows, two latency repeats.
QUICKSTART_REDUCED = [
    "stages[0].finetune.num_train_epochs=1",
    "stages[1].distill.num_train_epochs=1",
    "stages[2].prune.num_samples=64",
    "latency.repeats=2",
    "latency.warmup=0",
    "dataset.max_train_samples=200",
    "dataset.max_eval_samples=100",
]
