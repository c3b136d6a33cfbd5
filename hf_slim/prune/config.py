"""Configuration of [`PruningTrainer`]."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..distill.config import DistillationConfig
from ..errors import HfSlimError

SCHEDULES = ("cubic", "linear")
IMPORTANCE = ("first_order", "magnitude")


def resolve_target(value: float | None, total: int, what: str, leave_one: bool = False) -> int:
    """Turn a target given as a fraction (< 1) or a count (>= 1) into a count of units to remove out of `total`."""
    if value is None or value == 0:
        return 0
    count = round(value * total) if value < 1 else int(value)
    limit = total - 1 if leave_one else total
    if count > limit:
        raise HfSlimError(
            f"{what}={value} asks to remove {count} of the model's {total} {what.split('_')[1]}; at most {limit} can "
            "be removed. Lower the target."
        )
    return count


def scheduled_fraction(step: int, start: int, end: int, schedule: str = "cubic") -> float:
    """Fraction of the final target pruned at `step`: 0 before `start`, 1 from `end`, cubic (Zhu & Gupta 2017) or
    linear in between."""
    if step < start:
        return 0.0
    if step >= end:
        return 1.0
    progress = (step - start) / (end - start)
    return 1.0 - (1.0 - progress) ** 3 if schedule == "cubic" else progress


@dataclass
class PruningConfig(DistillationConfig):
    r"""
    Configuration for [`PruningTrainer`]: every [`DistillationConfig`] / `TrainingArguments` field, plus the pruning
    targets and schedule below. Targets are a fraction of the model's units when < 1, a count when >= 1.

    Args:
        target_heads (`float`, *optional*):
            Attention heads to remove over all layers, e.g. `0.5` (half) or `24`.
        target_ffn (`float`, *optional*):
            FFN (intermediate) neurons to remove over all layers.
        target_layers (`float`, *optional*):
            Whole layers to remove (at least one layer always remains).
        pruning_start_step (`int`, *optional*, defaults to `0`):
            Optimizer step at which pruning starts.
        pruning_end_step (`int`, *optional*):
            Step at which the targets are reached; defaults to 70% of the training steps, leaving the rest to
            recover accuracy with the final structure.
        pruning_frequency (`int`, *optional*, defaults to `10`):
            Steps between two pruning events.
        pruning_schedule (`str`, *optional*, defaults to `"cubic"`):
            `"cubic"` (Zhu & Gupta 2017: prune fast early, slowly at the end) or `"linear"`.
        importance (`str`, *optional*, defaults to `"first_order"`):
            `"first_order"`: accumulated |gradient| of the training loss w.r.t. head/neuron/layer gates (Michel et
            al. 2019); `"magnitude"`: weight norms.

    Distillation from the dense model is on by default: with `alpha_kd > 0` (the default 0.5) and no `teacher_model`,
    [`PruningTrainer`] uses a frozen copy of the unpruned model as the teacher. Set `alpha_kd=0` to prune without
    distillation.
    """

    target_heads: float | None = field(
        default=None, metadata={"help": "Attention heads to remove: a fraction (< 1) or a count (>= 1)."}
    )
    target_ffn: float | None = field(
        default=None, metadata={"help": "FFN neurons to remove: a fraction (< 1) or a count (>= 1)."}
    )
    target_layers: float | None = field(
        default=None, metadata={"help": "Layers to remove: a fraction (< 1) or a count (>= 1)."}
    )
    pruning_start_step: int = field(default=0, metadata={"help": "Optimizer step at which pruning starts."})
    pruning_end_step: int | None = field(
        default=None, metadata={"help": "Step at which the targets are reached (default: 70% of training)."}
    )
    pruning_frequency: int = field(default=10, metadata={"help": "Steps between pruning events."})
    pruning_schedule: str = field(
        default="cubic", metadata={"help": "How the pruned amount grows.", "choices": list(SCHEDULES)}
    )
    importance: str = field(
        default="first_order", metadata={"help": "How units are scored.", "choices": list(IMPORTANCE)}
    )

    def __post_init__(self):
        super().__post_init__()
        targets = {
            "target_heads": self.target_heads,
            "target_ffn": self.target_ffn,
            "target_layers": self.target_layers,
        }
        for name, value in targets.items():
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or math.isnan(value):
                raise HfSlimError(f"{name}={value!r} must be a fraction in [0, 1) or a whole count >= 1.")
            if value >= 1 and value != int(value):
                raise HfSlimError(
                    f"{name}={value!r}: values >= 1 are counts and must be whole numbers; use a fraction < 1 for a "
                    "share of the model."
                )
        if not any(targets.values()):
            raise HfSlimError(
                "PruningConfig needs a target: set target_heads, target_ffn and/or target_layers (a fraction < 1 or "
                "a count >= 1)."
            )
        if not isinstance(self.pruning_start_step, int) or self.pruning_start_step < 0:
            raise HfSlimError(f"pruning_start_step must be an integer >= 0, got {self.pruning_start_step!r}.")
        if self.pruning_end_step is not None and (
            not isinstance(self.pruning_end_step, int) or self.pruning_end_step <= self.pruning_start_step
        ):
            raise HfSlimError(
                f"pruning_end_step={self.pruning_end_step!r} must be an integer > pruning_start_step="
                f"{self.pruning_start_step}."
            )
        if not isinstance(self.pruning_frequency, int) or self.pruning_frequency < 1:
            raise HfSlimError(f"pruning_frequency must be an integer >= 1, got {self.pruning_frequency!r}.")
        if self.pruning_schedule not in SCHEDULES:
            raise HfSlimError(f"pruning_schedule={self.pruning_schedule!r} is not one of {', '.join(SCHEDULES)}.")
        if self.importance not in IMPORTANCE:
            raise HfSlimError(f"importance={self.importance!r} is not one of {', '.join(IMPORTANCE)}.")
