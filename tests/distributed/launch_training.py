"""Training script for tests/distributed/test_two_processes.py, run either as `python launch_training.py` (one
process) or under `accelerate launch --multi_gpu --num_processes 2` (two CPU processes, DDP over gloo).

It trains a tiny BERT with DistillationTrainer (narrower student: learned projections, hidden + attention losses)
and/or PruningTrainer (gradual first-order pruning of heads, FFN neurons and a layer, distilling from the dense
model), then every process writes a report into --report (never into --out):

- `{mode}_rank{r}.json`: logged losses, the rows of every micro-batch, teacher checks taken during training,
  pruning events, the final pruned structure, the files this process wrote under --out;
- `{mode}_rank{r}.pt`: final student weights, projections, the importance scores ranked at each pruning event.

Not collected by pytest (the name does not start with `test_`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
from torch.nn.parallel import DistributedDataParallel
from transformers import BertConfig, BertForSequenceClassification

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tiny_models import LABELS, NUM_LABELS, VOCAB_SIZE, make_dataset  # noqa: E402

import hf_slim  # noqa: E402
from hf_slim.distill import DistillationConfig, DistillationTrainer  # noqa: E402
from hf_slim.prune import PruningConfig, PruningTrainer  # noqa: E402

# -- record every write under --out, with the process that made it ----------------------------------------------------
_OUT: list[str] = []  # the watched folder, set in main()
WRITES: list[str] = []


def _watched(path) -> str | None:
    if not _OUT or not isinstance(path, (str, os.PathLike)):
        return None
    path = os.path.abspath(os.fspath(path))
    return os.path.relpath(path, _OUT[0]) if path.startswith(_OUT[0] + os.sep) else None


def _audit(event: str, args) -> None:
    """Python-level writes: open() for writing, mkdir, rename/replace, remove, rmtree."""
    if event == "open":
        path, mode, flags = args
        writing = mode is not None and any(c in str(mode) for c in "wax+")
        writing = writing or (mode is None and bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)))
        if writing and (rel := _watched(path)):
            WRITES.append(f"open:{rel}")
    elif event in ("os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree") and (rel := _watched(args[0])):
        WRITES.append(f"{event}:{rel}")
    elif event in ("os.rename", "os.replace") and (rel := _watched(args[1])):
        WRITES.append(f"{event}:{rel}")


def _recording(function, name):
    """Writers implemented in C++/Rust (torch.save, safetensors) raise no audit event: wrap them."""

    def wrapper(obj, path, *args, **kwargs):
        if rel := _watched(path):
            WRITES.append(f"{name}:{rel}")
        return function(obj, path, *args, **kwargs)

    return wrapper


def _install_write_recorder(out: str) -> None:
    import safetensors.torch
    import transformers.modeling_utils

    _OUT.append(os.path.abspath(out))
    sys.addaudithook(_audit)
    torch.save = _recording(torch.save, "torch.save")
    safetensors.torch.save_file = _recording(safetensors.torch.save_file, "save_file")
    transformers.modeling_utils.safe_save_file = _recording(transformers.modeling_utils.safe_save_file, "save_file")


# -- models and data --------------------------------------------------------------------------------------------------
def tiny_bert(num_layers: int, hidden: int, heads: int, intermediate: int, seed: int) -> BertForSequenceClassification:
    """Dropout 0, so one and two processes compute the same function."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB_SIZE,
        max_position_embeddings=64,
        hidden_size=hidden,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=NUM_LABELS,
        id2label=LABELS,
        attn_implementation="eager",
    )
    return BertForSequenceClassification(config)


# -- trainers that record what happens inside them --------------------------------------------------------------------
def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index or 0) == (b.index or 0)  # "cpu" and "cpu:0" are the same device


def _teacher_state(teacher, args_device) -> dict:
    return {
        "type": type(teacher).__name__,
        "is_ddp": isinstance(teacher, DistributedDataParallel),
        "training": any(m.training for m in teacher.modules()),
        "requires_grad": any(p.requires_grad for p in teacher.parameters()),
        "has_grad": any(p.grad is not None for p in teacher.parameters()),
        "devices": sorted({str(p.device) for p in teacher.parameters()}),
        "args_device": str(args_device),
        "on_args_device": all(_same_device(p.device, args_device) for p in teacher.parameters()),
    }


class Recorder:
    """Mixin: the rows of every training micro-batch, the wrapped student's type, the teacher at each forward."""

    def _setup_recording(self, dataset):
        self.row_index = {tuple(row): i for i, row in enumerate(dataset["input_ids"])}
        self.batches: list[list[int]] = []
        self.student_types: set[str] = set()
        self.teacher_calls: list[dict] = []
        self.events: list[dict] = []
        self.event_tensors: list[dict] = []
        self.step_losses: list[float] = []  # this process's loss of every micro-batch, unrounded
        if self.teacher_model is not None:
            self.teacher_model.register_forward_hook(self._on_teacher_forward)

    def _on_teacher_forward(self, module, args, output):
        self.teacher_calls.append(
            {
                "grad_enabled": torch.is_grad_enabled(),
                "output_requires_grad": bool(output.logits.requires_grad),
                **_teacher_state(self.teacher_model, self.args.device),
            }
        )

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.step_losses.append(loss.item())
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            self.batches.append([self.row_index[tuple(r)] for r in inputs["input_ids"].tolist()])
            self.student_types.add(type(model).__name__)
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


class RecordingDistillationTrainer(Recorder, DistillationTrainer):
    pass


class RecordingPruningTrainer(Recorder, PruningTrainer):
    def _current_scores(self, kind):
        scores = super()._current_scores(kind)
        local = [s.clone() for s in self._masks_and_scores()[kind][1]]
        self._pending = (kind, [s.detach().clone() for s in scores], local)
        return scores

    def _prune_lowest(self, kind, masks, count):
        super()._prune_lowest(kind, masks, count)
        _, scores, local = self._pending
        step = self.state.global_step
        self.events.append({"step": step, "kind": kind, "count": count, "masks": [m.tolist() for m in masks]})
        self.event_tensors.append({"step": step, "kind": kind, "scores": scores, "local_scores": local})


# -- runs -------------------------------------------------------------------------------------------------------------
COMMON = dict(
    use_cpu=True,
    report_to=[],
    disable_tqdm=True,
    logging_steps=1,
    optim="sgd",  # no optimizer state beyond the weights: nothing but the gradients can differ
    lr_scheduler_type="constant",
    dataloader_drop_last=True,
    save_strategy="steps",
    save_steps=3,  # checkpoints: written by the main process only
)


def _config(cls, cli, output_dir, **kwargs):
    return cls(
        output_dir=output_dir,
        per_device_train_batch_size=cli.per_device_batch,
        per_device_eval_batch_size=cli.per_device_batch,
        gradient_accumulation_steps=cli.grad_accum,
        seed=cli.seed,
        data_seed=cli.seed,
        **COMMON,
        **kwargs,
    )


def accuracy(prediction):
    logits, labels = prediction
    return {"accuracy": float((logits.argmax(-1) == labels).mean())}


def run_distill(cli, output_dir, dataset, eval_dataset):
    teacher = tiny_bert(num_layers=4, hidden=32, heads=4, intermediate=37, seed=cli.seed + 1)
    student = tiny_bert(num_layers=2, hidden=16, heads=4, intermediate=20, seed=cli.seed)
    args = _config(
        DistillationConfig,
        cli,
        output_dir,
        max_steps=cli.steps,
        learning_rate=0.1,
        alpha_kd=0.5,
        temperature=2.0,
        hidden_weight=1.0,  # the student is narrower: learned projections, all-reduced by hand
        attention_weight=1.0,
    )
    trainer = RecordingDistillationTrainer(
        model=student,
        args=args,
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        compute_metrics=accuracy,
        teacher_model=teacher,
    )
    return teacher, trainer


def run_prune(cli, output_dir, dataset, eval_dataset):
    model = tiny_bert(num_layers=3, hidden=32, heads=4, intermediate=37, seed=cli.seed)
    args = _config(
        PruningConfig,
        cli,
        output_dir,
        max_steps=cli.steps + 2,
        learning_rate=0.05,
        alpha_kd=0.5,  # the teacher is a frozen copy of the dense model
        target_heads=0.5,
        target_ffn=0.5,  # more than the dropped layer holds: neurons of kept layers go too
        target_layers=1,
        pruning_frequency=2,
        pruning_end_step=cli.steps,
        importance="first_order",
    )
    trainer = RecordingPruningTrainer(
        model=model, args=args, train_dataset=dataset, eval_dataset=eval_dataset, compute_metrics=accuracy
    )
    return trainer.teacher_model, trainer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["distill", "prune", "both"], default="both")
    parser.add_argument("--out", required=True, help="training outputs (watched: only rank 0 may write here)")
    parser.add_argument("--report", required=True, help="per-process reports")
    parser.add_argument("--per-device-batch", type=int, default=8)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=int, default=64)
    cli = parser.parse_args()
    torch.set_num_threads(1)
    os.makedirs(cli.report, exist_ok=True)
    _install_write_recorder(cli.out)
    dataset = make_dataset("bert", num_rows=cli.rows, seed=cli.seed)
    eval_dataset = make_dataset("bert", num_rows=32, seed=cli.seed + 100)

    for mode in ("distill", "prune") if cli.mode == "both" else (cli.mode,):
        output_dir = os.path.join(cli.out, mode)
        start = len(WRITES)
        build = run_distill if mode == "distill" else run_prune
        teacher, trainer = build(cli, output_dir, dataset, eval_dataset)
        trainer._setup_recording(dataset)
        teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
        trainer.train()
        metrics = trainer.evaluate()  # the final (for PruningTrainer: physically pruned) student
        final_dir = os.path.join(output_dir, "final")
        trainer.save_model(final_dir)  # writes on the main process only (args.should_save)
        trainer.accelerator.wait_for_everyone()  # the others wait until the model is on disk, then read it
        student = trainer.accelerator.unwrap_model(trainer.model)
        reloaded = hf_slim.from_pretrained(final_dir)
        reloaded_state = reloaded.state_dict()
        student_state = {k: v.detach().cpu().clone() for k, v in student.state_dict().items()}
        rank = trainer.args.process_index
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        report = {
            "rank": rank,
            "world_size": trainer.args.world_size,
            "num_processes": trainer.accelerator.num_processes,
            "distributed_type": str(trainer.accelerator.distributed_type),
            "backend": torch.distributed.get_backend() if distributed else None,
            "should_save": trainer.args.should_save,
            "log_history": trainer.state.log_history,
            "step_losses": trainer.step_losses,
            "eval": metrics,
            "batches": trainer.batches,
            "student_types": sorted(trainer.student_types),
            "teacher_calls": len(trainer.teacher_calls),
            # the distinct teacher states seen at its forward calls
            "teacher_during_training": list(
                {json.dumps(c, sort_keys=True): c for c in trainer.teacher_calls}.values()
            ),
            "teacher_after_training": _teacher_state(trainer.teacher_model, trainer.args.device),
            "teacher_unchanged": all(torch.equal(teacher_before[k], v) for k, v in teacher.state_dict().items()),
            "reload_matches": set(reloaded_state) == set(student_state)
            and all(torch.equal(reloaded_state[k], v) for k, v in student_state.items()),
            "structure": getattr(reloaded.config, "hf_slim", None),
            "num_parameters": sum(p.numel() for p in student.parameters()),
            "pruning_events": trainer.events,
            "writes": WRITES[start:],
        }
        if mode == "prune":
            report["final_masks"] = {
                "heads": [m.tolist() for m in trainer.head_masks],
                "ffn": [m.tolist() for m in trainer.ffn_masks],
                "layers": trainer.layer_mask.tolist(),
            }
        tensors = {
            "student": student_state,
            "projections": {k: v.detach().cpu().clone() for k, v in trainer.projections.state_dict().items()},
            "events": trainer.event_tensors,
        }
        torch.save(tensors, os.path.join(cli.report, f"{mode}_rank{rank}.pt"))
        with open(os.path.join(cli.report, f"{mode}_rank{rank}.json"), "w") as f:
            json.dump(report, f, indent=1)
        trainer.accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()
