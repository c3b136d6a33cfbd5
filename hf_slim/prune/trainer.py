"""[`PruningTrainer`]: fine-tune (and distil) while pruning heads, FFN neurons and layers gradually."""

from __future__ import annotations

import copy
import os

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..architectures import get_adapter
from ..distill.trainer import DistillationTrainer
from ..errors import HfSlimError
from .config import PruningConfig, resolve_target, scheduled_fraction
from .importance import magnitude_importance
from .masks import MaskHooks, full_masks
from .structured import drop_layers, head_size, prune_ffn, prune_heads

STATE_NAME = "hf_slim_pruning_state.safetensors"


class _PruningCallback(TrainerCallback):
    def __init__(self, trainer: PruningTrainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer._resolve_schedule(state.max_steps)

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer._accumulate_scores()
        self.trainer._maybe_prune(state.global_step)


class PruningTrainer(DistillationTrainer):
    r"""
    Fine-tunes while pruning attention heads, FFN neurons and/or whole layers gradually to a target.

    During training, pruning is applied as masks through forward hooks (weights, optimizer state and DDP stay valid);
    at the end of `train()` the model is physically pruned (see [`prune_heads`], [`prune_ffn`], [`drop_layers`]),
    so `save_model()` writes a smaller model that [`hf_slim.from_pretrained`] reloads strictly. Checkpoints store the
    masks and accumulated scores, so `resume_from_checkpoint` continues with the same masks and schedule.

    Same arguments as [`DistillationTrainer`], with `args` a [`PruningConfig`]. When distillation is on
    (`alpha_kd > 0` or hidden/attention weights) and no `teacher_model` is given, the teacher is a frozen copy of the
    dense model as it is before training.
    """

    def __init__(self, model=None, args: PruningConfig | None = None, *trainer_args, teacher_model=None, **kwargs):
        if not isinstance(args, PruningConfig):
            raise HfSlimError(
                f"args must be a PruningConfig, got {type(args).__name__}. Build one with "
                "PruningConfig(output_dir=..., target_heads=..., ...); it accepts every TrainingArguments field."
            )
        if model is None:
            raise HfSlimError("PruningTrainer needs the model to prune as model=.")
        adapter = get_adapter(model)
        train_dataset = kwargs.get("train_dataset", trainer_args[1] if len(trainer_args) > 1 else None)
        has_cached = args.teacher_logits_column in (getattr(train_dataset, "column_names", None) or [])
        needs_teacher = args.uses_teacher_internals or (args.alpha_kd > 0 and not has_cached)
        if teacher_model is None and needs_teacher:
            teacher_model = copy.deepcopy(model)  # the dense model, before any mask is attached

        # Resolve the targets now so an impossible target fails before any work.
        layers = adapter.get_layers(model)
        from .structured import layer_ffn_size, layer_num_heads

        self.total_heads = sum(layer_num_heads(adapter, layer) for layer in layers)
        self.total_neurons = sum(layer_ffn_size(adapter, layer) for layer in layers)
        self.total_layers = len(layers)
        self.target_counts = {
            "heads": resolve_target(args.target_heads, self.total_heads, "target_heads"),
            "ffn": resolve_target(args.target_ffn, self.total_neurons, "target_ffn"),
            "layers": resolve_target(args.target_layers, self.total_layers, "target_layers", leave_one=True),
        }
        super().__init__(model, args, *trainer_args, teacher_model=teacher_model, **kwargs)

        device = self.args.device
        self.head_masks, self.ffn_masks, self.layer_mask = full_masks(self.model, requires_grad=True, device=device)
        self.head_scores = [torch.zeros_like(m, requires_grad=False) for m in self.head_masks]
        self.ffn_scores = [torch.zeros_like(m, requires_grad=False) for m in self.ffn_masks]
        self.layer_scores = torch.zeros_like(self.layer_mask, requires_grad=False)
        self._hooks = MaskHooks(
            self.model,
            self.head_masks if self.target_counts["heads"] else None,
            self.ffn_masks if self.target_counts["ffn"] else None,
            self.layer_mask if self.target_counts["layers"] else None,
        )
        self.pruning_end_step = args.pruning_end_step
        self.finalized = False
        if hasattr(self.model, "add_model_tags"):
            self.model.add_model_tags(["pruned"])
        self.add_callback(_PruningCallback(self))

    # -- schedule -------------------------------------------------------------------------------------------------
    def _resolve_schedule(self, max_steps: int) -> None:
        if self.args.pruning_end_step is None:
            self.pruning_end_step = max(self.args.pruning_start_step + 1, int(0.7 * max_steps))
        if self.pruning_end_step > max_steps:
            raise HfSlimError(
                f"pruning_end_step={self.pruning_end_step} is after the last training step ({max_steps}); the "
                "targets would never be reached. Lower pruning_end_step or train longer."
            )

    def _masks_and_scores(self):
        return {
            "heads": (self.head_masks, self.head_scores),
            "ffn": (self.ffn_masks, self.ffn_scores),
            "layers": ([self.layer_mask], [self.layer_scores]),
        }

    def _accumulate_scores(self) -> None:
        pairs = [
            (mask, score)
            for masks, scores in self._masks_and_scores().values()
            for mask, score in zip(masks, scores, strict=True)
            if mask.numel()
        ]
        grads = [mask.grad.detach() if mask.grad is not None else torch.zeros_like(mask) for mask, _ in pairs]
        if grads and torch.distributed.is_available() and torch.distributed.is_initialized():
            # The gates live outside the DDP-wrapped model: average their gradients like DDP averages the weights',
            # so every process ranks units by the gradient of the global batch (as one process would).
            flat = torch.cat([g.flatten() for g in grads])
            torch.distributed.all_reduce(flat)
            flat /= torch.distributed.get_world_size()
            grads = list(flat.split([g.numel() for g in grads]))
        for (mask, score), grad in zip(pairs, grads, strict=True):
            score += grad.view_as(score).abs()
            mask.grad = None

    def _current_scores(self, kind: str) -> list[torch.Tensor]:
        if self.args.importance == "magnitude":
            magnitude = magnitude_importance(self.model)
            return {"heads": magnitude["heads"], "ffn": magnitude["ffn"], "layers": [magnitude["layers"]]}[kind]
        # Scores are accumulated from process-averaged gradients, so they are identical on every process.
        scores = [s.clone() for s in self._masks_and_scores()[kind][1]]
        if kind != "layers":
            scores = [s / s.norm().clamp_min(1e-20) if s.numel() else s for s in scores]
        return scores

    def _maybe_prune(self, step: int, force: bool = False) -> None:
        start, end = self.args.pruning_start_step, self.pruning_end_step
        if not force and (step < start or ((step - start) % self.args.pruning_frequency and step < end)):
            return
        fraction = 1.0 if force else scheduled_fraction(step, start, end, self.args.pruning_schedule)
        # Layers first: the heads and neurons of a dropped layer count as removed, and only units of kept layers are
        # candidates afterwards.
        for kind in ("layers", "heads", "ffn"):
            masks = self._masks_and_scores()[kind][0]
            wanted = round(fraction * self.target_counts[kind])
            pruned = self._removed(kind)
            if wanted > pruned:
                self._prune_lowest(kind, masks, wanted - pruned)

    def _alive_layers(self) -> list[bool]:
        return [bool(keep) for keep in (self.layer_mask != 0).tolist()]

    def _removed(self, kind: str) -> int:
        if kind == "layers":
            return int((self.layer_mask == 0).sum().item())
        masks = self.head_masks if kind == "heads" else self.ffn_masks
        alive = self._alive_layers()
        return int(sum(((m == 0).sum() if a else m.numel()) for m, a in zip(masks, alive, strict=True)))

    def _prune_lowest(self, kind: str, masks: list[torch.Tensor], count: int) -> None:
        scores = self._current_scores(kind)
        alive = [True] if kind == "layers" else self._alive_layers()
        candidates = [
            (score[i].item(), layer, i)
            for layer, (mask, score) in enumerate(zip(masks, scores, strict=True))
            if alive[layer]
            for i in range(mask.numel())
            if mask[i] != 0
        ]
        candidates.sort()
        with torch.no_grad():
            for _, layer, i in candidates[:count]:
                masks[layer][i] = 0.0

    # -- state --------------------------------------------------------------------------------------------------
    def pruning_state(self) -> dict[str, torch.Tensor]:
        state = {}
        for kind, (masks, scores) in self._masks_and_scores().items():
            for i, (mask, score) in enumerate(zip(masks, scores, strict=True)):
                state[f"{kind}.{i}.mask"] = mask.detach().cpu().contiguous()
                state[f"{kind}.{i}.score"] = score.detach().cpu().contiguous()
        return state

    def load_pruning_state(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for kind, (masks, scores) in self._masks_and_scores().items():
                for i, (mask, score) in enumerate(zip(masks, scores, strict=True)):
                    mask.copy_(state[f"{kind}.{i}.mask"])
                    score.copy_(state[f"{kind}.{i}.score"])

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            from safetensors.torch import save_file

            run_dir = self._get_output_dir(trial=trial)
            checkpoint = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            save_file(self.pruning_state(), os.path.join(checkpoint, STATE_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, STATE_NAME)
        if not os.path.isfile(path):
            raise HfSlimError(
                f"{resume_from_checkpoint} has no {STATE_NAME}: it was not written by a PruningTrainer, so the masks "
                "cannot be restored."
            )
        from safetensors.torch import load_file

        self.load_pruning_state(load_file(path))

    # -- logging ------------------------------------------------------------------------------------------------
    def pruning_summary(self) -> dict[str, float]:
        # Units of a dropped layer are gone with it.
        heads = self.total_heads - self._removed("heads")
        neurons = self.total_neurons - self._removed("ffn")
        layers = self.total_layers - self._removed("layers")
        return {
            "remaining_parameters": self._remaining_parameters(),
            "remaining_heads": heads,
            "remaining_ffn_neurons": neurons,
            "remaining_layers": layers,
            "sparsity_heads": round(1 - heads / max(self.total_heads, 1), 6),
            "sparsity_ffn": round(1 - neurons / max(self.total_neurons, 1), 6),
        }

    def _remaining_parameters(self) -> int:
        """Parameters the model will have once the current masks are applied physically."""
        if self.finalized:
            return sum(p.numel() for p in self.model.parameters())
        adapter = get_adapter(self.model)
        size = head_size(adapter, self.model)
        removed = 0
        for index, layer in enumerate(adapter.get_layers(self.model)):
            if self.layer_mask[index] == 0:
                removed += sum(p.numel() for p in layer.parameters())
                continue
            heads = int((self.head_masks[index] == 0).sum())
            if heads:
                per_head = 0
                for which in ("query", "key", "value"):
                    linear = adapter.layer_module(layer, which)
                    per_head += size * linear.in_features + (size if linear.bias is not None else 0)
                per_head += size * adapter.layer_module(layer, "attention_output").out_features
                removed += heads * per_head
            neurons = int((self.ffn_masks[index] == 0).sum())
            if neurons:
                up, down = adapter.layer_module(layer, "ffn_in"), adapter.layer_module(layer, "ffn_out")
                removed += neurons * (up.in_features + (1 if up.bias is not None else 0) + down.out_features)
        dropped = int((self.layer_mask == 0).sum())
        for name in adapter.per_layer_parameters:  # e.g. Wav2Vec2's layer_weights: one entry per hidden state
            if isinstance(getattr(self.model, name, None), torch.nn.Parameter):
                removed += dropped
        return sum(p.numel() for p in self.model.parameters()) - removed

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and not self.finalized:
            logs.update(self.pruning_summary())
        super().log(logs, start_time)

    # -- the end: physical pruning ------------------------------------------------------------------------------
    def train(self, *args, **kwargs):
        if self.finalized:
            raise HfSlimError(
                "This PruningTrainer's model is already physically pruned; create a new trainer to train it further."
            )
        output = super().train(*args, **kwargs)
        self.finalize_pruning()
        return output

    def finalize_pruning(self) -> None:
        """Reach the targets (if training stopped early), remove the mask hooks and physically prune the model."""
        if self.finalized:
            return
        self._maybe_prune(self.state.global_step, force=True)
        self._hooks.remove()
        model = self.model
        with torch.no_grad():
            heads = {i: (m == 0).nonzero().flatten().tolist() for i, m in enumerate(self.head_masks)}
            neurons = {i: (m == 0).nonzero().flatten().tolist() for i, m in enumerate(self.ffn_masks)}
            dropped = (self.layer_mask == 0).nonzero().flatten().tolist()
        prune_heads(model, {i: h for i, h in heads.items() if h})
        prune_ffn(model, {i: n for i, n in neurons.items() if n})
        drop_layers(model, dropped)
        self.finalized = True
        summary = self.pruning_summary()
        self.log({**summary, "parameters": summary["remaining_parameters"]})
