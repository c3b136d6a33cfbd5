"""Distillation losses as pure functions of tensors.

Each loss takes a `reduction`: `"mean"` (the default; batch mean of the per-sample losses), `"sum"` or `"none"`
(one value per sample, shape `(batch,)`). The trainer uses `"none"` so that it can normalise by the number of
samples in the whole (gradient-accumulated, multi-process) batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import IncompatibleModelsError

REDUCTIONS = ("mean", "sum", "none")
HIDDEN_LOSSES = ("mse", "cosine")
ATTENTION_LOSSES = ("mse", "kl")


def _reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "none":
        return per_sample
    raise ValueError(f"reduction={reduction!r} is not one of {', '.join(REDUCTIONS)}.")


def _check_same_shape(student: torch.Tensor, teacher: torch.Tensor, what: str) -> None:
    if student.shape != teacher.shape:
        raise IncompatibleModelsError(
            f"Cannot distil {what}: student shape {tuple(student.shape)} != teacher shape {tuple(teacher.shape)}. "
            "Teacher and student must see the same inputs (same tokenizer / image size and patch size / feature "
            "extractor) and have the same number of labels."
        )


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 2.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Soft-target loss of Hinton et al. (2015): `T² · KL(softmax(t/T) || softmax(s/T))`.

    The `T²` factor keeps the gradient magnitude of the soft loss independent of the temperature, so `alpha_kd`
    means the same thing at every `T`.

    Args:
        student_logits (`torch.Tensor` of shape `(batch, num_labels)`): Student logits.
        teacher_logits (`torch.Tensor` of shape `(batch, num_labels)`): Teacher logits (no gradient needed).
        temperature (`float`, defaults to 2.0): Softmax temperature `T > 0`.
        reduction (`str`, defaults to `"mean"`): `"mean"` over the batch (KL's `batchmean`), `"sum"` or `"none"`.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    _check_same_shape(student_logits, teacher_logits, "logits")
    student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    kl = F.kl_div(student_log_probs, teacher_log_probs, reduction="none", log_target=True)
    per_sample = kl.flatten(1).sum(-1) * temperature**2
    return _reduce(per_sample, reduction)


def _masked_mean_per_sample(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over every dimension but the first, counting only positions where `mask` (batch, seq) is set.

    `values` has shape `(batch, seq, ...)` or, for attention, `(batch, heads, seq, seq)` with `mask` applied to
    the query axis by the caller.
    """
    if mask is None:
        return values.flatten(1).mean(-1)
    mask = mask.to(values.dtype)
    while mask.dim() < values.dim():
        mask = mask.unsqueeze(-1)
    mask = mask.expand_as(values)
    return (values * mask).flatten(1).sum(-1) / mask.flatten(1).sum(-1).clamp_min(1.0)


def hidden_state_loss(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    projection: nn.Module | None = None,
    loss: str = "mse",
    attention_mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Distance between one student layer's hidden states and one teacher layer's (TinyBERT, Jiao et al. 2020).

    Args:
        student_hidden (`torch.Tensor` of shape `(batch, seq, d_student)`): Student hidden states.
        teacher_hidden (`torch.Tensor` of shape `(batch, seq, d_teacher)`): Teacher hidden states.
        projection (`nn.Module`, *optional*): Learned map from `d_student` to `d_teacher`, required when the widths
            differ (e.g. `nn.Linear(d_student, d_teacher)`); trained together with the student.
        loss (`str`, defaults to `"mse"`): `"mse"` (mean squared error per element) or `"cosine"` (`1 - cos` per
            position).
        attention_mask (`torch.Tensor` of shape `(batch, seq)`, *optional*): 1 for real positions, 0 for padding;
            padded positions are ignored.
        reduction (`str`, defaults to `"mean"`): `"mean"` over the batch, `"sum"` or `"none"`.
    """
    if loss not in HIDDEN_LOSSES:
        raise ValueError(f"hidden_loss={loss!r} is not one of {', '.join(HIDDEN_LOSSES)}.")
    if projection is not None:
        student_hidden = projection(student_hidden)
    elif student_hidden.shape[-1] != teacher_hidden.shape[-1]:
        raise IncompatibleModelsError(
            f"Student hidden size {student_hidden.shape[-1]} != teacher hidden size {teacher_hidden.shape[-1]}: "
            "pass a projection (e.g. nn.Linear(student_size, teacher_size)) to hidden_state_loss."
        )
    _check_same_shape(student_hidden, teacher_hidden, "hidden states")
    student_hidden = student_hidden.float()
    teacher_hidden = teacher_hidden.detach().float()
    if loss == "mse":
        per_position = (student_hidden - teacher_hidden).pow(2)
    else:
        per_position = 1.0 - F.cosine_similarity(student_hidden, teacher_hidden, dim=-1, eps=1e-8)
    return _reduce(_masked_mean_per_sample(per_position, attention_mask), reduction)


def attention_loss(
    student_attentions: torch.Tensor,
    teacher_attentions: torch.Tensor,
    loss: str = "kl",
    attention_mask: torch.Tensor | None = None,
    reduction: str = "mean",
    eps: float = 1e-12,
) -> torch.Tensor:
    """Distance between one student layer's attention probabilities and one teacher layer's.

    `"kl"` is the MiniLM (Wang et al. 2020) form, `KL(teacher || student)` of each query's attention distribution,
    averaged over heads and valid queries; `"mse"` is TinyBERT's element-wise squared error, averaged over heads,
    valid queries and keys.

    Args:
        student_attentions (`torch.Tensor` of shape `(batch, heads, seq, seq)`): Student attention probabilities.
        teacher_attentions (`torch.Tensor` of shape `(batch, heads, seq, seq)`): Teacher attention probabilities.
        loss (`str`, defaults to `"kl"`): `"kl"` or `"mse"`.
        attention_mask (`torch.Tensor` of shape `(batch, seq)`, *optional*): padded queries are ignored (padded keys
            already get zero probability from both models).
        reduction (`str`, defaults to `"mean"`): `"mean"` over the batch, `"sum"` or `"none"`.
    """
    if loss not in ATTENTION_LOSSES:
        raise ValueError(f"attention loss {loss!r} is not one of {', '.join(ATTENTION_LOSSES)}.")
    if student_attentions.dim() != 4 or teacher_attentions.dim() != 4:
        raise ValueError(
            "attention_loss expects attention probabilities of shape (batch, heads, seq, seq); got "
            f"{tuple(student_attentions.shape)} and {tuple(teacher_attentions.shape)}."
        )
    if student_attentions.shape[1] != teacher_attentions.shape[1]:
        raise IncompatibleModelsError(
            f"Attention distillation needs equal head counts: the student layer has {student_attentions.shape[1]} "
            f"heads and the teacher layer has {teacher_attentions.shape[1]}. Map student layers to teacher layers "
            "with the same number of heads, or set attention_weight=0."
        )
    _check_same_shape(student_attentions, teacher_attentions, "attention probabilities")
    student = student_attentions.float()
    teacher = teacher_attentions.detach().float()
    if loss == "mse":
        per_query = (student - teacher).pow(2).mean(-1)  # (batch, heads, seq)
    else:
        per_query = (teacher * (torch.log(teacher + eps) - torch.log(student + eps))).sum(-1)
    query_mask = None if attention_mask is None else attention_mask[:, None, :].expand_as(per_query)
    return _reduce(_masked_mean_per_sample(per_query, query_mask), reduction)
