"""Run the teacher once and keep its logits with the data."""

from __future__ import annotations

import inspect

import torch
from transformers import default_data_collator


def cache_teacher_logits(
    teacher,
    dataset,
    batch_size: int = 32,
    data_collator=None,
    column: str = "teacher_logits",
    device: str | torch.device | None = None,
):
    """Return `dataset` with a `column` of the teacher's logits (float32), computed once in eval mode.

    [`DistillationTrainer`] keeps this column (it is not removed by `remove_unused_columns`) and, when only logit
    distillation is used, does not run the teacher at all. The teacher's temperature is applied in the loss, so the
    raw logits are stored.

    Args:
        teacher (`PreTrainedModel`): The teacher model.
        dataset (`datasets.Dataset`): Preprocessed dataset (the model inputs as columns, e.g. `input_ids`,
            `pixel_values` or `input_values`). It is not modified; a new dataset is returned.
        batch_size (`int`, defaults to 32): Rows per teacher forward pass.
        data_collator (`Callable`, *optional*): Turns a list of rows into a batch of tensors; defaults to
            `default_data_collator` (use `DataCollatorWithPadding(tokenizer)` for unpadded text).
        column (`str`, defaults to `"teacher_logits"`): Name of the new column; must match
            `DistillationConfig.teacher_logits_column`.
        device (`str` or `torch.device`, *optional*): Where to run the teacher; defaults to the teacher's device.
    """
    if column in dataset.column_names:
        raise ValueError(
            f"dataset already has a {column!r} column; remove it first (dataset.remove_columns({column!r})) or "
            "choose another column name."
        )
    collator = data_collator or default_data_collator
    device = torch.device(device) if device is not None else next(teacher.parameters()).device
    forward = inspect.signature(teacher.forward).parameters
    accepts_any = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in forward.values())
    input_columns = [c for c in dataset.column_names if (accepts_any or c in forward) and c not in ("labels",)]
    if not input_columns:
        raise ValueError(
            f"None of the dataset columns {dataset.column_names} is an input of {type(teacher).__name__}.forward; "
            "preprocess the dataset first (tokenize / run the image processor or feature extractor)."
        )
    was_training = teacher.training
    teacher.eval()

    def add_logits(batch):
        rows = [{c: batch[c][i] for c in input_columns} for i in range(len(batch[input_columns[0]]))]
        features = collator(rows)
        features = {k: v.to(device) for k, v in features.items() if torch.is_tensor(v) and k in input_columns}
        with torch.no_grad():
            logits = teacher(**features).logits
        return {column: logits.float().cpu().numpy()}

    try:
        result = dataset.map(
            add_logits,
            batched=True,
            batch_size=batch_size,
            desc="Caching teacher logits",
            load_from_cache_file=False,
            new_fingerprint=f"{dataset._fingerprint}-{column}-{id(teacher)}",
        )
    finally:
        teacher.train(was_training)
    return result
