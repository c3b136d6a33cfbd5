"""Offline quickstart: train a small ViT on scikit-learn's bundled digits, then distil it into a 2-layer student.

Runs on CPU in a few minutes with no downloads:

    python examples/distill_digits.py --output-dir outputs/quickstart

It trains (1) the teacher, (2) a student initialised from teacher layers and trained without the teacher (the
baseline), and (3) the same student distilled from the teacher (logit + hidden-state KD), then prints a table of
parameters and test accuracy and saves the models and `results.json` under the output directory.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from datasets import Dataset
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from transformers import Trainer, TrainingArguments, ViTConfig, ViTForImageClassification, set_seed

from hf_slim import DistillationConfig, DistillationTrainer, build_compute_metrics, init_student_from_teacher
from hf_slim.io import atomic_directory, write_json_atomic


def digits_datasets(seed: int) -> tuple[Dataset, Dataset]:
    digits = load_digits()
    images = (digits.images.astype(np.float32) / 16.0 - 0.5) / 0.5  # 8x8 grey, scaled to [-1, 1]
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=0.2, random_state=seed, stratify=digits.target
    )

    def to_dataset(x, y):
        return Dataset.from_dict({"pixel_values": x[:, None].tolist(), "labels": y.tolist()}).with_format("torch")

    return to_dataset(x_train, y_train), to_dataset(x_test, y_test)


def build_teacher() -> ViTForImageClassification:
    config = ViTConfig(
        image_size=8,
        patch_size=2,
        num_channels=1,
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=10,
        id2label={i: str(i) for i in range(10)},
        label2id={str(i): i for i in range(10)},
    )
    return ViTForImageClassification(config)


def common_args(output_dir: str, epochs: int, learning_rate: float, seed: int) -> dict:
    return dict(
        output_dir=output_dir,
        num_train_epochs=epochs,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=256,
        learning_rate=learning_rate,
        warmup_ratio=0.1,
        weight_decay=0.01,
        eval_strategy="no",
        save_strategy="no",
        logging_steps=20,
        report_to=[],
        use_cpu=True,
        seed=seed,
        dataloader_num_workers=0,
    )


def num_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="outputs/quickstart", help="where models and results.json go")
    parser.add_argument("--teacher-epochs", type=int, default=30)
    parser.add_argument("--student-epochs", type=int, default=30)
    parser.add_argument("--student-layers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    if args.teacher_epochs < 1 or args.student_epochs < 1:
        parser.error("--teacher-epochs and --student-epochs must be >= 1")
    if not 1 <= args.student_layers <= 4:
        parser.error(f"--student-layers must be between 1 and 4 (the teacher has 4 layers), got {args.student_layers}")

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    set_seed(args.seed)
    train, test = digits_datasets(args.seed)
    compute_metrics = build_compute_metrics()
    results = {}
    work = os.path.join(args.output_dir, "runs")

    # 1. Teacher, trained from scratch (no pretrained weights are needed or downloaded).
    start = time.perf_counter()
    teacher = build_teacher()
    trainer = Trainer(
        model=teacher,
        args=TrainingArguments(**common_args(os.path.join(work, "teacher"), args.teacher_epochs, 2e-3, args.seed)),
        train_dataset=train,
        compute_metrics=compute_metrics,
    )
    trainer.train()
    metrics = trainer.evaluate(test)
    results["teacher"] = {
        "parameters": num_parameters(teacher),
        "layers": teacher.config.num_hidden_layers,
        "accuracy": metrics["eval_accuracy"],
        "seconds": time.perf_counter() - start,
    }
    with atomic_directory(os.path.join(args.output_dir, "teacher")) as tmp:
        trainer.save_model(tmp)
    teacher.eval()

    # 2 and 3. The same student (teacher layers, DistilBERT-style), trained without and with the teacher.
    for name, kd in (("student (no KD)", False), ("student (distilled)", True)):
        start = time.perf_counter()
        set_seed(args.seed)
        student = init_student_from_teacher(teacher, num_layers=args.student_layers)
        config = DistillationConfig(
            **common_args(
                os.path.join(work, name.split()[0] + ("-kd" if kd else "-nokd")), args.student_epochs, 1e-3, args.seed
            ),
            alpha_kd=0.9 if kd else 0.0,
            temperature=4.0,
            hidden_weight=1.0 if kd else 0.0,
        )
        trainer = DistillationTrainer(
            model=student,
            args=config,
            teacher_model=teacher if kd else None,
            train_dataset=train,
            compute_metrics=compute_metrics,
        )
        trainer.train()
        metrics = trainer.evaluate(test)
        results[name] = {
            "parameters": num_parameters(student),
            "layers": student.config.num_hidden_layers,
            "accuracy": metrics["eval_accuracy"],
            "seconds": time.perf_counter() - start,
        }
        if kd:
            with atomic_directory(os.path.join(args.output_dir, "student")) as tmp:
                trainer.save_model(tmp)

    teacher_accuracy = results["teacher"]["accuracy"]
    for row in results.values():
        row["retention"] = row["accuracy"] / teacher_accuracy if teacher_accuracy else float("nan")
        row["parameter_ratio"] = results["teacher"]["parameters"] / row["parameters"]
    write_json_atomic(os.path.join(args.output_dir, "results.json"), results)

    print(f"\nDigits (scikit-learn, {len(train)} train / {len(test)} test images, 8x8), CPU")
    print(f"| {'model':<20} | layers | parameters | smaller | test accuracy | retention | time (s) |")
    print(f"|{'-' * 22}|--------|------------|---------|---------------|-----------|----------|")
    for name, row in results.items():
        print(
            f"| {name:<20} | {row['layers']:>6} | {row['parameters']:>10,} | {row['parameter_ratio']:>6.2f}x "
            f"| {row['accuracy']:>13.2%} | {row['retention']:>9.1%} | {row['seconds']:>8.1f} |"
        )
    print(f"\nSaved teacher/, student/ and results.json in {args.output_dir}")
    return results


if __name__ == "__main__":
    main()
