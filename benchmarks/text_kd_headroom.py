"""Does distillation help more when the student is further below the teacher? SST-2 students of a few sizes.

    python benchmarks/text_kd_headroom.py --teacher outputs/bench-sst2-seed1/teacher --layers 1 --seeds 1 2

For each student size (`--layers`: teacher layers kept by `init_student_from_teacher`) and training seed, trains the
no-KD twin and the distilled student with exactly the recipe of `text_sst2.py` (same steps, lr 1e-4, batch 32; the
distilled one on the train split plus 2 perturbed copies per sentence with cached teacher logits, T=2, alpha 0.5),
then prints their validation and test accuracy. The teacher is a fine-tuned checkpoint, e.g. the `teacher` row of a
`text_sst2.py` run (it is not retrained here). Rows are cached in `--output-dir` like the other benchmarks.
About 7 minutes per 1-layer pair on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import functools
import math
import os

from common import SHARED_DATA, Benchmark
from datasets import concatenate_datasets
from text_sst2 import BATCH_SIZE, STUDENT_LR, load_sst2, perturbed_rows
from transformers import AutoTokenizer, DataCollatorWithPadding

import hf_slim
from hf_slim.io import write_json_atomic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True, help="Fine-tuned SST-2 teacher (the `teacher` row of text_sst2).")
    parser.add_argument("--data", default=os.path.join(SHARED_DATA, "sst2"))
    parser.add_argument("--output-dir", default="outputs/bench-sst2-headroom")
    parser.add_argument("--layers", type=int, nargs="+", default=[1])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=64)
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.teacher, "config.json")):
        raise SystemExit(f"--teacher {args.teacher!r} is not a model folder; run benchmarks/text_sst2.py first.")

    tokenizer = AutoTokenizer.from_pretrained(args.teacher)
    raw, encode, data = load_sst2(args.data, tokenizer, args.max_length)
    collator = DataCollatorWithPadding(tokenizer)
    teacher = hf_slim.from_pretrained(args.teacher)
    kd_rows = concatenate_datasets([data["train"], perturbed_rows(raw["train"]["sentence"], 2, encode)])
    steps = math.ceil(math.ceil(len(kd_rows) / BATCH_SIZE) * 2)
    bench = Benchmark(args.output_dir, processor=tokenizer, threads=args.threads)
    describe = {"teacher": os.path.abspath(args.teacher), "max_length": args.max_length}

    @functools.cache
    def kd_data():
        return hf_slim.cache_teacher_logits(teacher, kd_rows, data_collator=collator)

    results = {}
    for layers in args.layers:
        for seed in args.seeds:
            base = dict(
                per_device_train_batch_size=BATCH_SIZE, warmup_ratio=0.1, weight_decay=0.01, seed=seed,
                max_steps=steps, learning_rate=STUDENT_LR,
            )  # fmt: skip

            def student(n=layers):
                return hf_slim.init_student_from_teacher(teacher, num_layers=n)

            for kind, row_args, dataset in (
                ("no-kd", {**base, "alpha_kd": 0.0}, data["train"]),
                ("kd", {**base, "alpha_kd": 0.5, "temperature": 2.0}, kd_data),
            ):
                name = f"layers{layers}-seed{seed}-{kind}"
                bench.train(
                    name, student, row_args, dataset, collator, teacher=teacher if kind == "kd" else None,
                    describe={**describe, "layers": layers},
                )  # fmt: skip
                results[name] = {
                    split: hf_slim.evaluate(bench.path(name), data[split], data_collator=collator)["accuracy"]
                    for split in ("validation", "test")
                }
    for split in ("validation", "test"):
        results[f"teacher-{split}"] = hf_slim.evaluate(args.teacher, data[split], data_collator=collator)["accuracy"]
    write_json_atomic(os.path.join(args.output_dir, "headroom.json"), results)

    print(f"\nteacher: validation {results['teacher-validation']:.2%}, test {results['teacher-test']:.2%}\n")
    print("| layers | seed | no-KD validation | KD validation | no-KD test | KD test | KD - no-KD (test) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for layers in args.layers:
        for seed in args.seeds:
            no, kd = results[f"layers{layers}-seed{seed}-no-kd"], results[f"layers{layers}-seed{seed}-kd"]
            print(
                f"| {layers} | {seed} | {no['validation']:.2%} | {kd['validation']:.2%} | {no['test']:.2%} | "
                f"{kd['test']:.2%} | {100 * (kd['test'] - no['test']):+.2f} |"
            )


if __name__ == "__main__":
    main()
