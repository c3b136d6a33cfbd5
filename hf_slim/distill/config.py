"""Configuration of [`DistillationTrainer`]."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments

from ..errors import HfSlimError, InvalidLayerMapError
from .losses import ATTENTION_LOSSES, HIDDEN_LOSSES


def _has_accelerator() -> bool:
    import torch

    if torch.cuda.is_available():
        return True
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return True
    return hasattr(torch, "xpu") and torch.xpu.is_available()


def parse_layer_map(layer_map: Any) -> dict[int, int] | None:
    """Normalise a layer map given as a dict, a list (student layer i -> list[i]) or a JSON string of either."""
    if layer_map is None:
        return None
    if isinstance(layer_map, str):
        try:
            layer_map = json.loads(layer_map)
        except json.JSONDecodeError as err:
            raise InvalidLayerMapError(
                f'layer_map={layer_map!r} is not valid JSON; give a mapping such as \'{{"0": 1, "1": 3}}\' '
                "(student layer -> teacher layer) or a list such as '[1, 3]'."
            ) from err
    if isinstance(layer_map, (list, tuple)):
        layer_map = dict(enumerate(layer_map))
    if not isinstance(layer_map, dict):
        raise InvalidLayerMapError(
            f"layer_map must be a dict (student layer -> teacher layer) or a list, got {type(layer_map).__name__}."
        )
    parsed = {}
    for key, value in layer_map.items():
        try:
            student, teacher = int(key), int(value)
        except (TypeError, ValueError) as err:
            raise InvalidLayerMapError(
                f"layer_map entry {key!r}: {value!r} is not a pair of integer layer indices."
            ) from err
        if student < 0 or teacher < 0:
            raise InvalidLayerMapError(f"layer_map entry {student}: {teacher} has a negative layer index.")
        parsed[student] = teacher
    if not parsed:
        raise InvalidLayerMapError("layer_map is empty; leave it unset for the default uniform mapping.")
    return parsed


def uniform_layer_map(num_student_layers: int, num_teacher_layers: int) -> dict[int, int]:
    """TinyBERT's uniform mapping: student layer `i` learns from teacher layer `(i + 1) * n_t / n_s - 1`.

    With 3 student and 6 teacher layers: `{0: 1, 1: 3, 2: 5}`; the last student layer always maps to the last
    teacher layer.
    """
    return {i: max(0, (i + 1) * num_teacher_layers // num_student_layers - 1) for i in range(num_student_layers)}


@dataclass
class DistillationConfig(TrainingArguments):
    r"""
    Configuration for [`DistillationTrainer`]: everything `TrainingArguments` accepts, plus the distillation
    parameters below.

    The training loss per sample is

        (1 - alpha_kd) * CE(student, label) + alpha_kd * T² * KL(teacher_T || student_T)
        + hidden_weight * hidden-state loss + attention_weight * attention loss

    Args:
        temperature (`float`, *optional*, defaults to `2.0`):
            Softmax temperature `T` of the soft-target loss (Hinton et al. 2015). The KL term is scaled by `T²`.
        alpha_kd (`float`, *optional*, defaults to `0.5`):
            Weight of the soft-target (logit) loss, in `[0, 1]`; the hard-label cross-entropy gets `1 - alpha_kd`.
        hidden_weight (`float`, *optional*, defaults to `0.0`):
            Weight of the hidden-state loss between mapped layers (TinyBERT). `0` turns it off.
        attention_weight (`float`, *optional*, defaults to `0.0`):
            Weight of the attention-probability loss between mapped layers (TinyBERT/MiniLM). `0` turns it off.
            Needs equal head counts in each mapped pair of layers.
        layer_map (`dict[int, int]` or `list[int]` or JSON `str`, *optional*):
            Student layer -> teacher layer (0-based) used by the hidden-state and attention losses. Defaults to
            the uniform TinyBERT mapping (student layer `i` -> teacher layer `(i + 1) * n_t / n_s - 1`).
        hidden_loss (`str`, *optional*, defaults to `"mse"`):
            Hidden-state distance: `"mse"` or `"cosine"`. A learned linear projection is added per mapped layer
            when the student is narrower than the teacher.
        attention_loss (`str`, *optional*, defaults to `"kl"`):
            Attention distance: `"kl"` (MiniLM) or `"mse"` (TinyBERT).
        teacher_logits_column (`str`, *optional*, defaults to `"teacher_logits"`):
            Dataset column holding cached teacher logits (see [`cache_teacher_logits`]). When a batch carries it and
            only logit distillation is used, the teacher is not run.
    """

    temperature: float = field(
        default=2.0, metadata={"help": "Softmax temperature T of the soft-target loss; the KL term is scaled by T²."}
    )
    alpha_kd: float = field(
        default=0.5,
        metadata={"help": "Weight of the soft-target (logit KD) loss in [0, 1]; hard-label CE gets 1 - alpha_kd."},
    )
    hidden_weight: float = field(
        default=0.0, metadata={"help": "Weight of the hidden-state loss between mapped layers; 0 turns it off."}
    )
    attention_weight: float = field(
        default=0.0, metadata={"help": "Weight of the attention-probability loss between mapped layers; 0 = off."}
    )
    layer_map: dict | str | None = field(
        default=None,
        metadata={
            "help": "Student layer -> teacher layer (0-based) for hidden/attention losses, as a dict, a list or a "
            "JSON string. Default: uniform TinyBERT mapping."
        },
    )
    hidden_loss: str = field(
        default="mse", metadata={"help": "Hidden-state distance.", "choices": list(HIDDEN_LOSSES)}
    )
    attention_loss: str = field(
        default="kl", metadata={"help": "Attention-probability distance.", "choices": list(ATTENTION_LOSSES)}
    )
    teacher_logits_column: str = field(
        default="teacher_logits",
        metadata={"help": "Dataset column with cached teacher logits; the teacher is not run when it is present."},
    )

    def __post_init__(self):
        if not self.use_cpu and not _has_accelerator():
            # On a machine without accelerators, `accelerate launch --multi_gpu --num_processes N` still starts N
            # processes; they must run DDP on CPU (gloo), which TrainingArguments only does with use_cpu=True.
            self.use_cpu = True
        super().__post_init__()
        if not isinstance(self.temperature, (int, float)) or not self.temperature > 0:
            raise HfSlimError(f"temperature must be a number > 0, got {self.temperature!r}. Typical values: 1-8.")
        if not isinstance(self.alpha_kd, (int, float)) or not 0.0 <= self.alpha_kd <= 1.0:
            raise HfSlimError(
                f"alpha_kd must be in [0, 1] (weight of the soft loss; CE gets 1 - alpha_kd), got {self.alpha_kd!r}."
            )
        for name in ("hidden_weight", "attention_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise HfSlimError(f"{name} must be a number >= 0 (0 turns the loss off), got {value!r}.")
        if self.hidden_loss not in HIDDEN_LOSSES:
            raise HfSlimError(f"hidden_loss={self.hidden_loss!r} is not one of {', '.join(HIDDEN_LOSSES)}.")
        if self.attention_loss not in ATTENTION_LOSSES:
            raise HfSlimError(f"attention_loss={self.attention_loss!r} is not one of {', '.join(ATTENTION_LOSSES)}.")
        self.layer_map = parse_layer_map(self.layer_map)

    @property
    def uses_teacher_internals(self) -> bool:
        """Whether the loss needs the teacher's hidden states or attentions (so cached logits are not enough)."""
        return self.hidden_weight > 0 or self.attention_weight > 0
