"""What every modality benchmark shares: cached, resumable stages, stage timing, and the final measurement.

A benchmark script (`text_sst2.py`, `image_mnist.py`, `speech_fsdd.py`) prepares its data and teacher, then calls
[`Benchmark`] for each row. Every stage is written atomically to `OUTPUT_DIR/<row>` and recorded in
`OUTPUT_DIR/results.json` with the settings it was built with; a re-run skips rows whose settings (and those of the
rows they were built from) did not change, so later stages are cheap to redo. [`Benchmark.finish`] then measures all
rows in one process: test metric, parameters, size on disk, and latency at batch 1 and 32 (median after warm-up,
same threads for every model), and writes `report.json`, `report.md` and `tradeoff.png`.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from transformers import TrainerCallback, set_seed

import hf_slim
from hf_slim.io import atomic_directory, write_json_atomic
from hf_slim.recipes.report import StageRow, build_report, format_markdown_table, write_report
from hf_slim.stats import size_on_disk

SHARED_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")


class StepTimer(TrainerCallback):
    """Wall-clock time of every optimizer step (forward, backward, optimizer; data loading excluded)."""

    def __init__(self):
        self.times: list[float] = []
        self._start = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._start is not None:
            self.times.append(time.perf_counter() - self._start)

    def median_ms(self, skip: int = 5) -> float | None:
        times = self.times[skip:] if len(self.times) > skip else self.times
        return 1000 * statistics.median(times) if times else None


def fingerprint(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Benchmark:
    """Rows of one benchmark, cached in `output_dir/results.json` by the settings that built them."""

    def __init__(self, output_dir: str, processor=None, threads: int = 2):
        torch.set_num_threads(threads)
        self.threads = threads
        self.output_dir = output_dir
        self.processor = processor
        os.makedirs(output_dir, exist_ok=True)
        # Stages killed mid-build (SIGKILL/SIGTERM skip the cleanup of atomic_directory) leave their temp folders.
        for stale in glob.glob(os.path.join(output_dir, ".*.tmp-*")) + glob.glob(os.path.join(output_dir, ".*.old-*")):
            shutil.rmtree(stale, ignore_errors=True)
        self.results_path = os.path.join(output_dir, "results.json")
        self.results: dict[str, dict] = {}
        if os.path.isfile(self.results_path):
            with open(self.results_path) as f:
                self.results = json.load(f)
        self.order: list[str] = []

    def path(self, name: str) -> str:
        return os.path.join(self.output_dir, name)

    def key(self, name: str) -> str:
        return self.results[name]["fingerprint"]

    def stage(self, name: str, kind: str, config: dict, build: Callable[[str], dict | None], after=()) -> str:
        """Build row `name` into its folder with `build(tmp_dir)` unless it is cached with the same settings.

        `after` names the rows this one is built from: a change in them rebuilds this row too.
        """
        key = fingerprint({"config": config, "after": [self.key(a) for a in after]})
        path = self.path(name)
        self.order.append(name)
        cached = self.results.get(name)
        if cached and cached.get("fingerprint") == key and os.path.isdir(path):
            print(f"[{name}] cached ({cached['seconds']:.1f} s when built)")
            return path
        print(f"[{name}] building")
        start = time.perf_counter()
        with atomic_directory(path) as tmp:
            extra = build(tmp) or {}
        seconds = time.perf_counter() - start
        self.results[name] = {"kind": kind, "seconds": seconds, "fingerprint": key, "config": config, **extra}
        write_json_atomic(self.results_path, self.results)
        print(f"[{name}] done in {seconds:.1f} s")
        return path

    # -- the stages every modality runs ------------------------------------------------------------------------
    def train(
        self,
        name: str,
        model_fn: Callable[[], torch.nn.Module],
        args: dict,
        train_dataset,
        data_collator=None,
        teacher=None,
        pruning: bool = False,
        after=(),
        describe: dict | None = None,
    ) -> str:
        """Train `model_fn()` with `DistillationTrainer` (or `PruningTrainer`) on `train_dataset` and save it.

        `train_dataset` may be a function returning the dataset, so expensive data (cached teacher logits) is only
        built when the row is.
        """
        config_cls = hf_slim.PruningConfig if pruning else hf_slim.DistillationConfig
        trainer_cls = hf_slim.PruningTrainer if pruning else hf_slim.DistillationTrainer

        def build(tmp):
            dataset = train_dataset() if callable(train_dataset) else train_dataset
            timer = StepTimer()
            set_seed(args.get("seed", 42))  # new heads (classifier, projections) init from the seed
            trainer = trainer_cls(
                model=model_fn(),
                args=config_cls(
                    output_dir=os.path.join(self.output_dir, ".work", name), save_strategy="no", eval_strategy="no",
                    report_to=[], logging_steps=50, disable_tqdm=True, **args,
                ),
                teacher_model=teacher, train_dataset=dataset, data_collator=data_collator, callbacks=[timer],
            )  # fmt: skip
            output = trainer.train()
            trainer.save_model(tmp)
            if self.processor is not None:
                self.processor.save_pretrained(tmp)
            return {"steps": output.global_step, "step_ms": timer.median_ms(), "train_rows": len(dataset)}

        return self.stage(name, "pytorch", {"args": args, **(describe or {})}, build, after)

    def int8(self, name: str, source: str, describe: dict | None = None, **quantize_kwargs) -> str:
        """ONNX export of row `source` and ONNX Runtime int8 quantization (dynamic unless told otherwise)."""

        def build(tmp):
            onnx_dir = os.path.join(self.output_dir, ".work", name, "onnx")
            hf_slim.export_onnx(self.path(source), onnx_dir)
            hf_slim.quantize(onnx_dir, tmp, **quantize_kwargs)

        config = {k: repr(v) for k, v in quantize_kwargs.items()} | (describe or {})
        return self.stage(name, "onnx-int8", config, build, after=[source])

    def prune_to_target(self, name: str, source: str, dataloader, flops_ratio: float = 0.5, describe=None) -> str:
        """`hf_slim.prune_to_target` on row `source`, without retraining."""

        def build(tmp):
            model = hf_slim.from_pretrained(self.path(source))
            hf_slim.prune_to_target(model, dataloader, flops_ratio=flops_ratio)
            model.save_pretrained(tmp)
            if self.processor is not None:
                self.processor.save_pretrained(tmp)
            return {"history": model.config.hf_slim["history"][-1]}

        return self.stage(name, "pytorch", {"flops_ratio": flops_ratio, **(describe or {})}, build, after=[source])

    def step_times(self, model_fn, args: dict, plain_dataset, cached_dataset, data_collator, teacher, steps=40):
        """Median optimizer-step time of the same student on the same batches: plain fine-tuning (labels only),
        distillation from cached teacher logits, and distillation running the teacher online."""
        runs = {
            "plain": ({**args, "alpha_kd": 0.0}, plain_dataset, None),
            "kd_cached_logits": (args, cached_dataset, None),
            "kd_online_teacher": (args, plain_dataset, teacher),
        }
        out = {}
        for label, (run_args, dataset, run_teacher) in runs.items():
            timer = StepTimer()
            torch.manual_seed(0)
            trainer = hf_slim.DistillationTrainer(
                model=model_fn(),
                args=hf_slim.DistillationConfig(
                    output_dir=os.path.join(self.output_dir, ".work", "step-times"), save_strategy="no",
                    report_to=[], disable_tqdm=True, logging_steps=1000, **{**run_args, "max_steps": steps},
                ),
                teacher_model=run_teacher, train_dataset=dataset, data_collator=data_collator, callbacks=[timer],
            )  # fmt: skip
            trainer.train()
            out[f"{label}_ms"] = timer.median_ms()
        out["kd_cached_logits_ratio"] = out["kd_cached_logits_ms"] / out["plain_ms"]
        out["kd_online_teacher_ratio"] = out["kd_online_teacher_ms"] / out["plain_ms"]
        out["steps"] = steps
        print("Step time (median ms): " + ", ".join(f"{k}={v:.3f}" for k, v in out.items()))
        self.step_time_results = out
        return out

    # -- measurement -----------------------------------------------------------------------------------------
    def finish(
        self,
        inputs_spec: dict,
        test_dataset,
        data_collator=None,
        title: str = "",
        metric_name: str = "accuracy",
        repeats: int = 30,
        warmup: int = 10,
        meta: dict | None = None,
        validation_dataset=None,
    ) -> dict:
        """Measure every row of this run in one process and write the report; returns it.

        `test_dataset` (and `validation_dataset`, used for model selection and reported in the notes of PyTorch
        rows) may be a function of the row name, for rows that need their own preprocessing (a trimmed vocabulary
        needs its own tokenizer).
        """
        names = list(dict.fromkeys(self.order))
        models = {
            n: hf_slim.from_pretrained(self.path(n)) if self.results[n]["kind"] == "pytorch" else self.path(n)
            for n in names
        }
        print(f"Measuring latency of {len(names)} models ({warmup} warm-up + {repeats} timed runs each)")
        latency = hf_slim.benchmark_latency(
            models, inputs_spec, batch_sizes=(1, 32), warmup=warmup, repeats=repeats, num_threads=self.threads,
            verbose=False,
        )  # fmt: skip
        rows = []
        for name in names:
            result = self.results[name]
            dataset = test_dataset(name) if callable(test_dataset) else test_dataset
            metric = hf_slim.evaluate(self.path(name), dataset, data_collator=data_collator)[metric_name]
            files = [
                os.path.join(self.path(name), f)
                for f in os.listdir(self.path(name))
                if f.endswith((".safetensors", ".onnx"))
            ]
            notes = []
            if validation_dataset is not None and result["kind"] == "pytorch":
                data = validation_dataset(name) if callable(validation_dataset) else validation_dataset
                value = hf_slim.evaluate(self.path(name), data, data_collator=data_collator)[metric_name]
                result["validation_" + metric_name] = value
                notes.append(f"validation {metric_name} {value:.4f}")
            if result.get("steps"):
                notes.append(f"{result['steps']} steps, median step {result['step_ms']:.0f} ms")
            pytorch = result["kind"] == "pytorch"
            rows.append(
                StageRow(
                    stage=name,
                    kind=result["kind"],
                    path=name,
                    parameters=sum(p.numel() for p in models[name].parameters()) if pytorch else None,
                    size_bytes=sum(size_on_disk(f) for f in files),
                    latency_ms={str(x["batch_size"]): x["median_ms"] for x in latency if x["name"] == name},
                    metric_name=metric_name,
                    metric=metric,
                    seconds=result["seconds"],
                    notes="; ".join(notes),
                )  # fmt: skip
            )
        report = build_report(rows, reference="teacher", title=title, meta={"threads": self.threads, **(meta or {})})
        report["stages"] = {n: self.results[n] for n in names}
        if getattr(self, "step_time_results", None):
            report["step_times"] = self.step_time_results
        write_report(report, self.output_dir)
        print(format_markdown_table(report))
        return report
