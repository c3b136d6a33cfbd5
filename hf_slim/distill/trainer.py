"""[`DistillationTrainer`]: a `transformers.Trainer` that distils a teacher into the model it trains."""

from __future__ import annotations

import inspect
import os
from collections import defaultdict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..architectures import get_adapter
from ..errors import HfSlimError, IncompatibleModelsError, InvalidLayerMapError
from ..modeling import load_model_like
from .config import DistillationConfig, uniform_layer_map
from .losses import attention_loss, hidden_state_loss, kd_loss
from .teacher import prepare_teacher

PROJECTIONS_NAME = "hf_slim_projections.safetensors"


class TeacherLogitsCollator:
    """Wraps a data collator so a cached teacher-logits column survives any collator (padding, image stacking...)."""

    def __init__(self, collator, column: str):
        self.collator = collator
        self.column = column

    def __call__(self, features):
        if features and isinstance(features[0], dict) and self.column in features[0]:
            logits = [torch.as_tensor(feature[self.column], dtype=torch.float32) for feature in features]
            features = [{k: v for k, v in feature.items() if k != self.column} for feature in features]
            batch = self.collator(features)
            batch[self.column] = torch.stack(logits)
            return batch
        return self.collator(features)


class _ProjectionGradients(TrainerCallback):
    """Trainer clips and zeroes only the model's gradients; the projections live outside the model."""

    def __init__(self, projections: nn.Module):
        self.projections = projections

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        # Trainer clips only the model's gradients; clip the projections' with the same bound.
        parameters = list(self.projections.parameters())
        # Equal widths need no projections: clipping nothing would only warn ("empty generator").
        if parameters and args.max_grad_norm is not None and args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(parameters, args.max_grad_norm)

    def on_step_end(self, args, state, control, **kwargs):
        self.projections.zero_grad(set_to_none=True)


def _label_names(config) -> dict[int, str]:
    return {int(k): v for k, v in (getattr(config, "id2label", None) or {}).items()}


def check_compatible(student: nn.Module, teacher: nn.Module | None, args: DistillationConfig) -> dict[int, int]:
    """Check that `teacher` can be distilled into `student` with `args`; return the layer map in use.

    Raises [`IncompatibleModelsError`] or [`InvalidLayerMapError`] naming the mismatch and the fix.
    """
    s_config = student.config
    problem_type = getattr(s_config, "problem_type", None)
    if problem_type in ("regression", "multi_label_classification") or s_config.num_labels < 2:
        raise HfSlimError(
            f"DistillationTrainer supports single-label classification; the student has problem_type="
            f"{problem_type!r} and num_labels={s_config.num_labels}. Use num_labels >= 2 and integer class labels."
        )
    if teacher is None:
        if args.uses_teacher_internals:
            raise HfSlimError(
                "hidden_weight/attention_weight > 0 need the teacher's hidden states: pass teacher_model= "
                "(cached teacher logits are only enough for logit distillation)."
            )
        return {}
    t_config = teacher.config
    if t_config.num_labels != s_config.num_labels:
        raise IncompatibleModelsError(
            f"Teacher has {t_config.num_labels} labels but the student has {s_config.num_labels}. Build the student "
            "with the teacher's num_labels/id2label (e.g. hf_slim.init_student_from_teacher)."
        )
    t_labels, s_labels = _label_names(t_config), _label_names(s_config)
    if t_labels and s_labels and t_labels != s_labels:
        raise IncompatibleModelsError(
            f"Teacher and student disagree on label names: teacher id2label={t_labels}, student id2label={s_labels}. "
            "Give the student the teacher's id2label/label2id so that logit i means the same class in both."
        )
    s_adapter, t_adapter = get_adapter(student), get_adapter(teacher)
    if s_adapter.modality != t_adapter.modality:
        raise IncompatibleModelsError(
            f"Teacher is a {t_adapter.modality} model ({t_config.model_type}) and the student a {s_adapter.modality} "
            f"model ({s_config.model_type}); both must read the same inputs."
        )
    if s_adapter.modality == "text":
        t_vocab, s_vocab = getattr(t_config, "vocab_size", None), getattr(s_config, "vocab_size", None)
        if t_vocab != s_vocab:
            raise IncompatibleModelsError(
                f"Teacher vocabulary has {t_vocab} tokens but the student's has {s_vocab}: both must use the same "
                "tokenizer, since they are fed the same input_ids. Use a student built on the teacher's tokenizer."
            )

    if not args.uses_teacher_internals:
        return {}
    n_s, n_t = s_adapter.num_layers(s_config), t_adapter.num_layers(t_config)
    layer_map = args.layer_map if args.layer_map is not None else uniform_layer_map(n_s, n_t)
    bad_student = sorted(s for s in layer_map if s >= n_s)
    bad_teacher = sorted(t for t in layer_map.values() if t >= n_t)
    if bad_student or bad_teacher:
        raise InvalidLayerMapError(
            f"layer_map={layer_map} names layers that do not exist: student layers {bad_student} (the student has "
            f"{n_s} layers, 0 to {n_s - 1}), teacher layers {bad_teacher} (the teacher has {n_t} layers, 0 to "
            f"{n_t - 1})."
        )
    if args.attention_weight > 0:
        s_heads, t_heads = s_adapter.num_heads(s_config), t_adapter.num_heads(t_config)
        if s_heads != t_heads:
            raise IncompatibleModelsError(
                f"Attention distillation needs equal head counts: the student has {s_heads} heads per layer and "
                f"the teacher has {t_heads}. Set attention_weight=0 or use a student with {t_heads} heads."
            )
    if s_adapter.modality == "image":
        for attr in ("image_size", "patch_size"):
            if getattr(s_config, attr, None) != getattr(t_config, attr, None):
                raise IncompatibleModelsError(
                    f"Hidden-state/attention distillation needs the same token grid: student {attr}="
                    f"{getattr(s_config, attr, None)} but teacher {attr}={getattr(t_config, attr, None)}."
                )
    if s_adapter.modality == "audio":
        for attr in ("conv_kernel", "conv_stride"):
            if tuple(getattr(s_config, attr, ())) != tuple(getattr(t_config, attr, ())):
                raise IncompatibleModelsError(
                    f"Hidden-state/attention distillation needs the same frame rate: student {attr}="
                    f"{getattr(s_config, attr, None)} but teacher {attr}={getattr(t_config, attr, None)}."
                )
    return layer_map


def _use_eager_attention(model: PreTrainedModel) -> None:
    """Attention probabilities are only returned by the eager implementation (SDPA/flash return none)."""
    if getattr(model.config, "_attn_implementation", "eager") == "eager":
        return
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")


class DistillationTrainer(Trainer):
    r"""
    `transformers.Trainer` that trains `model` (the student) to match `teacher_model`.

    Same signature as `Trainer`, plus:

    Args:
        teacher_model (`PreTrainedModel` or `str`, *optional*):
            The teacher, or a local path / Hub id loaded with the student's Auto class (safetensors only, no remote
            code). May be omitted when every training batch carries cached teacher logits (see
            [`cache_teacher_logits`]) and only logit distillation is used, or when `alpha_kd=0` and no hidden-state
            or attention loss is used (plain fine-tuning, the no-distillation baseline).
        teacher_model_init_kwargs (`dict`, *optional*):
            Extra keyword arguments for `from_pretrained` when `teacher_model` is a string.

    The teacher is prepared with `accelerator.prepare_model(..., evaluation_mode=True)` (never wrapped for DDP),
    placed on the student's device, kept in eval mode and run under `torch.no_grad()`. When the student is narrower
    than the teacher, one learned linear projection per mapped layer is trained with the student (it is in the
    optimizer and in checkpoints) but is not part of the saved model.

    During evaluation the loss is the student's own cross-entropy on the labels and metrics come from the student's
    predictions, so numbers are comparable with a model trained without distillation.
    """

    def __init__(
        self,
        model: PreTrainedModel | None = None,
        args: DistillationConfig | None = None,
        *trainer_args,
        teacher_model: PreTrainedModel | str | None = None,
        teacher_model_init_kwargs: dict[str, Any] | None = None,
        **trainer_kwargs,
    ):
        if args is None:
            args = DistillationConfig(output_dir="tmp_trainer")
        if not isinstance(args, DistillationConfig):
            raise HfSlimError(
                f"args must be a DistillationConfig, got {type(args).__name__}. Build one with "
                "DistillationConfig(output_dir=..., temperature=..., ...); it accepts every TrainingArguments field."
            )
        if model is None or isinstance(model, str):
            raise HfSlimError(
                "DistillationTrainer needs the student model instance as model= (model_init is not supported). "
                "Load it first, e.g. with AutoModelForSequenceClassification.from_pretrained or "
                "hf_slim.init_student_from_teacher."
            )
        get_adapter(model)
        if isinstance(teacher_model, (str, os.PathLike)):
            teacher_model = load_model_like(model, str(teacher_model), **(teacher_model_init_kwargs or {}))
        self.layer_map = check_compatible(model, teacher_model, args)
        train_dataset = trainer_kwargs.get("train_dataset", trainer_args[1] if len(trainer_args) > 1 else None)
        columns = getattr(train_dataset, "column_names", None)
        if teacher_model is None and args.alpha_kd > 0 and columns is not None:
            if args.teacher_logits_column not in columns:
                raise HfSlimError(
                    f"alpha_kd={args.alpha_kd} needs teacher logits, but no teacher_model was given and the train "
                    f"dataset has no {args.teacher_logits_column!r} column (columns: {columns}). Pass teacher_model= "
                    "or add cached logits with hf_slim.cache_teacher_logits(teacher, dataset)."
                )

        if args.attention_weight > 0:
            _use_eager_attention(model)
            _use_eager_attention(teacher_model)

        super().__init__(model, args, *trainer_args, **trainer_kwargs)

        # Our compute_loss normalises by the number of samples in the whole accumulated batch (see
        # _get_num_items_in_batch), so the Trainer must not divide by the accumulation steps again.
        self.model_accepts_loss_kwargs = True
        self.data_collator = TeacherLogitsCollator(self.data_collator, args.teacher_logits_column)

        self.teacher_model = None
        self._teacher_inputs: set[str] | None = None
        if teacher_model is not None:
            self.teacher_model = teacher_model = prepare_teacher(teacher_model, self.accelerator)
            forward = inspect.signature(self.accelerator.unwrap_model(teacher_model).forward).parameters
            if not any(p.kind == inspect.Parameter.VAR_KEYWORD for p in forward.values()):
                self._teacher_inputs = set(forward)

        self.projections = nn.ModuleDict()
        if args.hidden_weight > 0:
            s_width = get_adapter(model).hidden_size(model.config)
            t_width = get_adapter(teacher_model).hidden_size(teacher_model.config)
            if s_width != t_width:
                for student_layer in self.layer_map:
                    self.projections[str(student_layer)] = nn.Linear(s_width, t_width)
            self.projections.to(self.args.device)
            self.add_callback(_ProjectionGradients(self.projections))

        self._distill_metrics: dict[str, list[float]] = defaultdict(list)
        # Tags for the model card written by Trainer.push_to_hub / create_model_card.
        tags = ["hf-slim"] + (["distillation"] if args.alpha_kd > 0 or args.uses_teacher_internals else [])
        if hasattr(self.model, "add_model_tags"):
            self.model.add_model_tags(tags)

    # -- data ---------------------------------------------------------------------------------------------------
    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if self.args.teacher_logits_column not in self._signature_columns:
            self._signature_columns.append(self.args.teacher_logits_column)

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> torch.Tensor | None:
        """Number of samples in the accumulated batch (all processes), the denominator of the per-sample loss."""
        count = 0
        for batch in batch_samples:
            tensors = [v for v in batch.values() if torch.is_tensor(v) and v.dim() > 0]
            if not tensors:
                return None
            count += tensors[0].shape[0]
        num_items = torch.tensor(count, device=device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            num_items = self.accelerator.gather(num_items).sum()
        return num_items

    # -- optimisation -------------------------------------------------------------------------------------------
    def create_optimizer(self):
        optimizer = super().create_optimizer()
        params = [p for p in self.projections.parameters() if p.requires_grad]
        if params and not any(p is params[0] for group in optimizer.param_groups for p in group["params"]):
            optimizer.add_param_group({"params": params, "weight_decay": 0.0})
        return optimizer

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        # Projections live outside the DDP-wrapped student, so average their gradients by hand.
        if len(self.projections) and self.accelerator.num_processes > 1 and torch.distributed.is_initialized():
            for param in self.projections.parameters():
                if param.grad is not None:
                    torch.distributed.all_reduce(param.grad)
                    param.grad /= self.accelerator.num_processes
        return loss

    # -- loss ---------------------------------------------------------------------------------------------------
    def _teacher_forward(self, inputs: dict[str, Any], hidden: bool, attentions: bool):
        if self.teacher_model is None:
            raise HfSlimError(
                f"This batch has no {self.args.teacher_logits_column!r} column and no teacher_model was given. Pass "
                "teacher_model= or add cached logits with hf_slim.cache_teacher_logits(teacher, dataset)."
            )
        self.teacher_model.eval()  # `.train()` on a parent module would otherwise re-enable dropout.
        teacher_inputs = inputs
        if self._teacher_inputs is not None:
            teacher_inputs = {k: v for k, v in inputs.items() if k in self._teacher_inputs}
        with torch.no_grad():
            return self.teacher_model(
                **teacher_inputs, output_hidden_states=hidden or None, output_attentions=attentions or None
            )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        args = self.args
        inputs = dict(inputs)
        cached_logits = inputs.pop(args.teacher_logits_column, None)
        labels = inputs.pop("labels", None)

        if not model.training:
            # Evaluation: the student's own loss and predictions.
            outputs = model(**inputs)
            loss = None
            if labels is not None:
                loss = F.cross_entropy(outputs.logits.float(), labels, ignore_index=-100)
                outputs["loss"] = loss
            return (loss, outputs) if return_outputs else loss

        use_hidden, use_attention = args.hidden_weight > 0, args.attention_weight > 0
        outputs = model(**inputs, output_hidden_states=use_hidden or None, output_attentions=use_attention or None)
        logits = outputs.logits
        per_sample = logits.new_zeros(logits.shape[0], dtype=torch.float32)
        parts: dict[str, torch.Tensor] = {}

        teacher_outputs = None
        needs_teacher_logits = args.alpha_kd > 0 and cached_logits is None
        if needs_teacher_logits or use_hidden or use_attention:
            teacher_outputs = self._teacher_forward(inputs, use_hidden, use_attention)
        teacher_logits = cached_logits if cached_logits is not None else getattr(teacher_outputs, "logits", None)

        if labels is not None and args.alpha_kd < 1:
            parts["loss_ce"] = F.cross_entropy(
                logits.float(),
                labels,
                reduction="none",
                ignore_index=-100,
                label_smoothing=args.label_smoothing_factor,
            )
            per_sample = per_sample + (1 - args.alpha_kd) * parts["loss_ce"]
        if args.alpha_kd > 0:
            teacher_logits = teacher_logits.to(logits.device)
            parts["loss_kd"] = kd_loss(logits, teacher_logits, args.temperature, reduction="none")
            per_sample = per_sample + args.alpha_kd * parts["loss_kd"]
        if use_hidden or use_attention:
            unwrapped = self.accelerator.unwrap_model(model)
            adapter = get_adapter(unwrapped)
        if use_hidden:
            mask = adapter.position_mask(unwrapped, inputs, outputs.hidden_states[-1].shape[1])
            hidden = [
                hidden_state_loss(
                    outputs.hidden_states[s + 1],
                    teacher_outputs.hidden_states[t + 1],
                    projection=self.projections[str(s)] if str(s) in self.projections else None,
                    loss=args.hidden_loss,
                    attention_mask=mask,
                    reduction="none",
                )
                for s, t in self.layer_map.items()
            ]
            parts["loss_hidden"] = torch.stack(hidden).mean(0)
            per_sample = per_sample + args.hidden_weight * parts["loss_hidden"]
        if use_attention:
            if outputs.attentions is None or teacher_outputs.attentions is None or outputs.attentions[0] is None:
                raise HfSlimError(
                    "The models returned no attention probabilities; load them with attn_implementation='eager' "
                    "to use attention_weight > 0."
                )
            mask = adapter.position_mask(unwrapped, inputs, outputs.attentions[0].shape[-1])
            attn = [
                attention_loss(
                    outputs.attentions[s], teacher_outputs.attentions[t], args.attention_loss, mask, reduction="none"
                )
                for s, t in self.layer_map.items()
            ]
            parts["loss_attention"] = torch.stack(attn).mean(0)
            per_sample = per_sample + args.attention_weight * parts["loss_attention"]

        if num_items_in_batch is not None:
            loss = per_sample.sum() / num_items_in_batch
            if args.average_tokens_across_devices and self.accelerator.num_processes > 1:
                loss = loss * self.accelerator.num_processes
        else:
            loss = per_sample.mean()

        for name, value in parts.items():
            self._distill_metrics[name].append(value.detach().mean().item())
        outputs["loss"] = loss
        return (loss, outputs) if return_outputs else loss

    # -- model card ---------------------------------------------------------------------------------------------
    def create_model_card(self, *args, **kwargs):
        """Trainer's model card, plus how to load the model when its structure needs hf_slim (pruned per layer)."""
        super().create_model_card(*args, **kwargs)
        record = getattr(self.accelerator.unwrap_model(self.model).config, "hf_slim", None) or {}
        path = os.path.join(self.args.output_dir, "README.md")
        if not self.is_world_process_zero() or not record or not os.path.isfile(path):
            return
        if record.get("stock_loadable", True):
            note = (
                "Compressed with hf_slim; it loads with the usual `AutoModelFor*.from_pretrained` or "
                "`hf_slim.from_pretrained`."
            )
        else:
            note = (
                "This model was pruned by hf_slim with a per-layer structure (heads / FFN widths) that stock "
                "transformers cannot rebuild; load it with:\n\n```python\nimport hf_slim\n\n"
                "model = hf_slim.from_pretrained(REPO_OR_PATH)\n```"
            )
        with open(path, "a") as f:
            f.write(f"\n## Loading\n\n{note}\n")

    # -- logging and checkpoints --------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._distill_metrics:
            for name, values in self._distill_metrics.items():
                value = torch.tensor(sum(values) / len(values), device=self.args.device)
                if self.accelerator.num_processes > 1:
                    value = self.accelerator.reduce(value, reduction="mean")
                logs[name] = round(value.item(), 6)
            self._distill_metrics.clear()
        super().log(logs, start_time)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if len(self.projections) and self.args.should_save:
            from safetensors.torch import save_file

            checkpoint = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            state = {k: v.detach().cpu().contiguous() for k, v in self.projections.state_dict().items()}
            save_file(state, os.path.join(checkpoint, PROJECTIONS_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, PROJECTIONS_NAME)
        if len(self.projections) and os.path.isfile(path):
            from safetensors.torch import load_file

            self.projections.load_state_dict(load_file(path, device=str(self.args.device)))
