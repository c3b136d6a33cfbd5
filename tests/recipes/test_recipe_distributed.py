"""`hf-slim run` under `accelerate launch` with two processes (CPU, gloo): every process trains, the main process
writes, and the run completes with the same stages and a loadable result."""

import json
import os
import socket
import subprocess
import sys

import torch

import hf_slim

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
REDUCED = [
    "--set",
    "stages[0].finetune.num_train_epochs=1",
    "--set",
    "stages[1].distill.num_train_epochs=1",
    "--set",
    "stages[2].prune.num_samples=64",
    "--set",
    "dataset.max_train_samples=256",
    "--set",
    "dataset.max_eval_samples=64",
    "--set",
    "latency.repeats=2",
    "--set",
    "latency.warmup=0",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch(size: int) -> list[str]:
    return [
        "--set",
        f"stages[0].finetune.per_device_train_batch_size={size}",
        "--set",
        f"stages[1].distill.per_device_train_batch_size={size}",
    ]


def test_quickstart_runs_under_accelerate_launch_with_two_processes(tmp_path):
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        "-m", "hf_slim.cli", "run", os.path.join(ROOT, "recipes", "quickstart.yaml"), "--output-dir", str(out),
        *REDUCED, *_batch(16),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]

    state = json.loads((out / "state.json").read_text())
    assert list(state["stages"]) == [
        "stage-0-base",
        "stage-1-finetune",
        "stage-2-distill",
        "stage-3-prune",
        "stage-4-quantize",
        "stage-5-evaluate",
    ]
    report = json.loads((out / "report.json").read_text())
    assert len(report["rows"]) == 6
    # The report table is printed once (by the main process only).
    assert result.stdout.count("| stage-3-prune |") == 1
    pruned = hf_slim.from_pretrained(str(out / "stage-3-prune"))
    assert sum(p.numel() for p in pruned.parameters()) < 69_194  # the distilled student's size
    assert torch.isfinite(pruned(pixel_values=torch.zeros(1, 1, 8, 8)).logits).all()
    assert not [p for p in os.listdir(out) if p.startswith(".") and p != ".work"]

    # The same recipe in one process with the same global batch (32 = 2 x 16): Accelerate shards each global batch
    # across the processes, so training sees the same data; results agree up to float reduction order.
    single = tmp_path / "single"
    command = [
        sys.executable, "-m", "hf_slim.cli", "run", os.path.join(ROOT, "recipes", "quickstart.yaml"),
        "--output-dir", str(single), *REDUCED, *_batch(32),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    reference = json.loads((single / "state.json").read_text())
    for name, record in reference["stages"].items():
        # Stated tolerance: 1 eval image in 64 (the metric is an argmax; tiny float differences can flip a tie).
        assert abs(state["stages"][name]["metric"] - record["metric"]) <= 1 / 64 + 1e-9, name
        assert state["stages"][name].get("parameters") == record.get("parameters"), name
    single_pruned = hf_slim.from_pretrained(str(single / "stage-3-prune"))
    assert pruned.config.hf_slim["num_heads"] == single_pruned.config.hf_slim["num_heads"]
    assert pruned.config.hf_slim["intermediate_sizes"] == single_pruned.config.hf_slim["intermediate_sizes"]
