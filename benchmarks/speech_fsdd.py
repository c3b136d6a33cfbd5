"""Speech benchmark on FSDD spoken digits (../shared/data/fsdd): what each hf_slim technique buys, in one process.

    python benchmarks/speech_fsdd.py [--output-dir outputs/bench-fsdd] [--threads 2] [--repeats 30]

No pretrained speech model is reachable here, so the teacher is a small Wav2Vec2ForSequenceClassification trained
from scratch on the 8 kHz waveforms (conv feature encoder with a 40 ms hop, 6 pre-LN transformer layers of width 256).
Rows:

- `teacher`: that model, trained on labels with speed/noise augmentation (no dropout, no SpecAugment: at this
  budget the model underfits, and both cost 1-2 points on validation).
- `teacher-int8`: its ONNX export, dynamic int8 (MatMul only, see `hf_slim.architectures`).
- `student-no-kd`: `init_student_from_teacher(teacher, num_layers=--student-layers)` trained on labels only.
- `student-kd`: the same student init, distilled from the teacher (run online on the same augmented batches), with
  the same optimizer steps and hyper-parameters as `student-no-kd` apart from the loss.
- `student-kd-pruned`: `PruningTrainer` from `student-kd`: half the heads and FFN neurons removed gradually while
  distilling from the teacher.
- `student-kd-pruned-int8`: its ONNX int8.
- `student-pruned-no-kd`: the same pruning of `student-no-kd` on the labels only, without a teacher.
- `teacher-prune-to-target`: `prune_to_target` on the teacher (50% of the encoder FLOPs), no retraining.

Also measured: training step time of plain fine-tuning vs distillation with cached teacher logits vs distillation
with the teacher run online (same student, same batches), and a per-component latency breakdown at batch 1 (conv
feature encoder vs transformer layers vs the rest), which explains the speed-ups: hf_slim prunes and int8-quantizes
the transformer, not the convolutional feature encoder.

Audio: mono 8 kHz, each clip normalised to zero mean / unit variance by the saved `Wav2Vec2FeatureExtractor` and
truncated to 1 s (longer than 99% of the clips); batches are zero-padded to their longest clip (no attention mask,
like wav2vec2-base) and the test split is sorted by length so evaluation batches need little padding. Latency is
measured on a 1 s clip. Results: `OUTPUT_DIR/report.md` (and `report.json`, `tradeoff.png`,
`latency_breakdown.md`). Rows are cached in the output dir by their settings, so a re-run only redoes what changed.

Model selection used `--holdout`: it trains on recordings 10-49 of every speaker and digit and reports on recordings
5-9 (held out of train) instead of the test split (recordings 0-4); without it every row trains on the whole train
split (2700 clips) and is scored on the test split (300 clips).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import tempfile
import time

import numpy as np
import torch
from common import SHARED_DATA, Benchmark, StepTimer
from datasets import Audio, load_dataset
from torch.utils.data import DataLoader
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

import hf_slim

DATA = os.path.join(SHARED_DATA, "fsdd")
SAMPLING_RATE = 8000
MAX_SECONDS = 1.0
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

# A small wav2vec2 for 8 kHz audio. Conv feature encoder: 4 layers, strides 5*4*4*4 = 320 samples (40 ms frames,
# 25 per second) and narrow early channels so that it stays a small share of the latency (hf_slim prunes and
# quantizes the transformer, not the convolutions). Pre-LN transformer (do_stable_layer_norm) trains from scratch more
# reliably and keeps a sensible residual stream when a student takes every other layer.
TEACHER_CONFIG = dict(
    hidden_size=256,
    num_hidden_layers=6,
    num_attention_heads=4,
    intermediate_size=512,
    conv_dim=(32, 64, 128, 128),
    conv_kernel=(10, 8, 4, 4),
    conv_stride=(5, 4, 4, 4),
    conv_bias=False,
    feat_extract_norm="group",
    do_stable_layer_norm=True,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=16,
    # No dropout and no SpecAugment: at this training budget the model underfits, and on the validation split the
    # regularised teacher was 1-2 points worse (90.7% after 24 epochs vs 92.3% after 12 without).
    hidden_dropout=0.0,
    attention_dropout=0.0,
    activation_dropout=0.0,
    feat_proj_dropout=0.0,
    final_dropout=0.0,
    layerdrop=0.0,
    mask_time_prob=0.0,
    mask_feature_prob=0.0,
    classifier_proj_size=256,
    use_weighted_layer_sum=False,
)


# -- data ------------------------------------------------------------------------------------------------------------
def recording_index(path: str) -> int:
    """FSDD file names are `{digit}_{speaker}_{index}.wav`."""
    match = re.match(r"^\d+_[^_]+_(\d+)\.wav$", os.path.basename(path))
    if not match:
        raise ValueError(f"Unexpected FSDD file name {path!r}")
    return int(match.group(1))


def load_fsdd(data_dir: str, extractor, holdout: bool, max_train: int | None, max_test: int | None):
    """Train and evaluation splits as normalised float arrays (`input_values`), `labels` and `length`."""
    raw = load_dataset("audiofolder", data_dir=data_dir)
    max_samples = int(MAX_SECONDS * SAMPLING_RATE)

    def encode(batch):
        arrays = [np.asarray(audio["array"], dtype=np.float32)[:max_samples] for audio in batch["audio"]]
        values = extractor(arrays, sampling_rate=SAMPLING_RATE)["input_values"]
        return {
            "input_values": [np.asarray(v, dtype=np.float32) for v in values],
            "labels": batch["label"],
            "length": [len(v) for v in values],
        }

    splits = {}
    for split in ("train", "test"):
        ds = raw[split].cast_column("audio", Audio(sampling_rate=SAMPLING_RATE, num_channels=1))
        paths = [a["path"] for a in raw[split].cast_column("audio", Audio(decode=False))["audio"]]
        ds = ds.add_column("recording", [recording_index(p) for p in paths])
        splits[split] = ds
    if holdout:
        # Validation = recordings 5-9 of every speaker and digit, a copy of how the test split (0-4) is made.
        train = splits["train"]
        splits["test"] = train.filter(lambda r: r < 10, input_columns="recording")
        splits["train"] = train.filter(lambda r: r >= 10, input_columns="recording")
    if max_train:
        splits["train"] = splits["train"].shuffle(seed=42).select(range(min(max_train, len(splits["train"]))))
    if max_test:
        splits["test"] = splits["test"].shuffle(seed=0).select(range(min(max_test, len(splits["test"]))))
    out = {}
    for split, ds in splits.items():
        ds = ds.map(encode, batched=True, batch_size=64, remove_columns=ds.column_names, desc=f"Encoding {split}")
        out[split] = ds
    # Sorted by length, evaluation batches of 32 need little zero padding (the model has no attention mask).
    out["test"] = out["test"].sort("length")
    return out["train"], out["test"]


class AudioCollator:
    """Batches of normalised waveforms, zero-padded to the longest; with `augment`, every clip is first speed-
    perturbed (resampled by a random factor, which also shifts the pitch) and mixed with white noise at a random
    SNR, then normalised again by the feature extractor. Rows may lack `labels` (e.g. when caching logits)."""

    def __init__(self, extractor, augment: bool = False, seed: int = 0, speed=(0.9, 1.1), snr_db=(10.0, 40.0)):
        self.extractor = extractor
        self.augment = augment
        self.rng = np.random.default_rng(seed)
        self.speed = speed
        self.snr_db = snr_db
        self.max_samples = int(MAX_SECONDS * SAMPLING_RATE)

    def describe(self) -> dict:
        return {"augment": self.augment, "speed": self.speed, "snr_db": self.snr_db} if self.augment else {}

    def _augment(self, x: np.ndarray) -> np.ndarray:
        factor = self.rng.uniform(*self.speed)
        n = max(2, int(round(len(x) / factor)))
        x = np.interp(np.linspace(0, len(x) - 1, n), np.arange(len(x)), x).astype(np.float32)
        snr = self.rng.uniform(*self.snr_db)
        rms = float(np.sqrt(np.mean(x**2))) + 1e-8
        x = x + self.rng.standard_normal(len(x)).astype(np.float32) * rms * 10 ** (-snr / 20)
        return x[: self.max_samples]

    def __call__(self, rows):
        arrays = [np.asarray(row["input_values"], dtype=np.float32) for row in rows]
        if self.augment:
            arrays = [self._augment(x) for x in arrays]
            arrays = self.extractor(arrays, sampling_rate=SAMPLING_RATE)["input_values"]
        longest = max(len(x) for x in arrays)
        values = torch.zeros(len(arrays), longest)
        for i, x in enumerate(arrays):
            values[i, : len(x)] = torch.as_tensor(np.asarray(x, dtype=np.float32))
        batch = {"input_values": values}
        if "labels" in rows[0]:
            batch["labels"] = torch.tensor([int(row["labels"]) for row in rows], dtype=torch.long)
        return batch


def build_teacher(seed: int = 0) -> Wav2Vec2ForSequenceClassification:
    torch.manual_seed(seed)
    config = Wav2Vec2Config(
        **TEACHER_CONFIG,
        num_labels=len(DIGITS),
        id2label=dict(enumerate(DIGITS)),
        label2id={d: i for i, d in enumerate(DIGITS)},
    )
    return Wav2Vec2ForSequenceClassification(config)


# -- teacher training ------------------------------------------------------------------------------------------------
TEACHER_LR = 5e-4
# Everything outside the transformer layers (conv feature encoder, feature projection, weight-normed positional conv,
# head) learns at LR_MULTIPLIER x the layers' rate. From scratch, the layers diverge above ~1e-3 while the rest learns
# far too slowly at 5e-4; on the validation split this took 2-epoch accuracy from 38% to 56%.
LR_MULTIPLIER = 4.0


class TeacherTrainer(hf_slim.DistillationTrainer):
    """`DistillationTrainer` (labels only) with a higher learning rate outside the transformer layers."""

    def create_optimizer(self):
        if self.optimizer is None:
            decay = set(self.get_decay_parameter_names(self.model))
            groups: dict[tuple[bool, bool], list] = {}
            for name, param in self.model.named_parameters():
                if param.requires_grad:
                    in_layers = name.startswith("wav2vec2.encoder.layers.")
                    groups.setdefault((in_layers, name in decay), []).append(param)
            optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
            kwargs.pop("lr", None)
            self.optimizer = optimizer_cls(
                [
                    {
                        "params": params,
                        "lr": self.args.learning_rate * (1.0 if in_layers else LR_MULTIPLIER),
                        "weight_decay": self.args.weight_decay if decayed else 0.0,
                    }
                    for (in_layers, decayed), params in groups.items()
                ],
                lr=self.args.learning_rate,
                **kwargs,
            )
        return self.optimizer


def train_teacher(bench: Benchmark, args: dict, train_dataset, collator, describe: dict) -> str:
    """The `teacher` row: what `Benchmark.train` does, with [`TeacherTrainer`]'s optimizer."""

    def build(tmp):
        timer = StepTimer()
        trainer = TeacherTrainer(
            model=build_teacher(),
            args=hf_slim.DistillationConfig(
                output_dir=os.path.join(bench.output_dir, ".work", "teacher"), save_strategy="no", eval_strategy="no",
                report_to=[], logging_steps=50, disable_tqdm=True, **args,
            ),
            train_dataset=train_dataset, data_collator=collator, callbacks=[timer],
        )  # fmt: skip
        output = trainer.train()
        trainer.save_model(tmp)
        extractor = bench.processor
        if extractor is not None:
            extractor.save_pretrained(tmp)
        return {"steps": output.global_step, "step_ms": timer.median_ms(), "train_rows": len(train_dataset)}

    return bench.stage("teacher", "pytorch", {"args": args, **describe}, build)


# -- latency breakdown -----------------------------------------------------------------------------------------------
COMPONENTS = ("conv feature encoder", "feature projection", "positional conv", "transformer layers", "other")


def _component(name: str) -> str:
    if "feature_extractor" in name:
        return "conv feature encoder"
    if "feature_projection" in name:
        return "feature projection"
    if "pos_conv_embed" in name:
        return "positional conv"
    if "encoder/layers." in name or "encoder.layers." in name:
        return "transformer layers"
    return "other"


def pytorch_breakdown(model, inputs, runs: int, warmup: int) -> dict:
    """Median ms per forward pass spent in each component, timed with forward hooks."""
    model.eval()
    base = model.wav2vec2
    modules = {
        "conv feature encoder": [base.feature_extractor],
        "feature projection": [base.feature_projection],
        "positional conv": [base.encoder.pos_conv_embed],
        "transformer layers": list(base.encoder.layers),
    }
    spent = dict.fromkeys(modules, 0.0)
    handles = []
    for component, mods in modules.items():
        for module in mods:
            starts = []
            handles.append(module.register_forward_pre_hook(lambda m, a, s=starts: s.append(time.perf_counter())))
            handles.append(
                module.register_forward_hook(
                    lambda m, a, o, s=starts, c=component: spent.__setitem__(
                        c, spent[c] + time.perf_counter() - s.pop()
                    )
                )
            )
    per_run = []
    try:
        with torch.inference_mode():
            for i in range(warmup + runs):
                for c in spent:
                    spent[c] = 0.0
                start = time.perf_counter()
                model(**inputs)
                total = time.perf_counter() - start
                if i >= warmup:
                    per_run.append({**spent, "other": total - sum(spent.values()), "total": total})
    finally:
        for handle in handles:
            handle.remove()
    return {k: 1000 * statistics.median(r[k] for r in per_run) for k in (*COMPONENTS, "total")}


def onnx_breakdown(folder: str, inputs, threads: int, runs: int, warmup: int) -> dict:
    """Mean ms per run spent in each component's ONNX nodes, from ONNX Runtime's profiler."""
    import onnxruntime

    from hf_slim.export.onnx import pick_onnx_file

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "profile")
        session = onnxruntime.InferenceSession(
            os.path.join(folder, pick_onnx_file(folder)), options, providers=["CPUExecutionProvider"]
        )
        feed = {k: v.numpy() for k, v in inputs.items() if k in {i.name for i in session.get_inputs()}}
        for _ in range(warmup + runs):
            session.run(None, feed)
        with open(session.end_profiling()) as f:
            events = json.load(f)
    model_runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])[warmup:]
    windows = [(e["ts"], e["ts"] + e["dur"]) for e in model_runs]
    spent = dict.fromkeys(COMPONENTS, 0.0)
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        if any(lo <= event["ts"] <= hi for lo, hi in windows):
            spent[_component(event["name"])] += event["dur"]
    out = {k: v / 1000 / len(windows) for k, v in spent.items()}
    # Time outside the nodes (session overhead, memory) counts as "other".
    out["total"] = statistics.mean(hi - lo for lo, hi in windows) / 1000
    out["other"] += max(0.0, out["total"] - sum(out[k] for k in COMPONENTS))
    return out


def latency_breakdown(bench: Benchmark, names, inputs, runs: int = 20, warmup: int = 5) -> dict:
    results = {}
    for name in names:
        path = bench.path(name)
        if bench.results[name]["kind"] == "pytorch":
            torch.set_num_threads(bench.threads)
            results[name] = pytorch_breakdown(hf_slim.from_pretrained(path), inputs, runs, warmup)
        else:
            results[name] = onnx_breakdown(path, inputs, bench.threads, runs, warmup)
    return results


def format_breakdown(breakdown: dict, title: str) -> str:
    lines = [
        f"# {title}",
        "",
        "| model | " + " | ".join(f"{c} ms" for c in COMPONENTS) + " | total ms | conv share | transformer share |",
        "|---|" + "---:|" * (len(COMPONENTS) + 3),
    ]
    for name, row in breakdown.items():
        cells = [f"{row[c]:.2f}" for c in (*COMPONENTS, "total")]
        conv = row["conv feature encoder"] / row["total"]
        layers = row["transformer layers"] / row["total"]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {conv:.0%} | {layers:.0%} |")
    lines += [
        "",
        "PyTorch rows: wall time inside each module (forward hooks), median of the runs; ONNX rows: ONNX Runtime "
        "profiler node time, mean per run. `other` = the rest (classification head, final layer norm, framework "
        "overhead). The conv feature encoder is neither pruned nor int8-quantized by hf_slim, so its time bounds the "
        "speed-up: a model that removes everything else cannot be faster than total / conv.",
    ]
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--output-dir", default="outputs/bench-fsdd")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--teacher-epochs", type=float, default=24)
    parser.add_argument("--student-epochs", type=float, default=8, help="Epochs of student-no-kd and student-kd.")
    parser.add_argument("--prune-epochs", type=float, default=6)
    parser.add_argument("--student-layers", type=int, default=3)
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--max-test-samples", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--step-time-steps", type=int, default=30)
    parser.add_argument(
        "--holdout",
        action="store_true",
        help="Model selection: train on recordings 10-49, report on recordings 5-9 of train, not on the test split.",
    )
    args = parser.parse_args()
    start = time.perf_counter()

    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SAMPLING_RATE, padding_value=0.0, do_normalize=True, return_attention_mask=False
    )
    bench = Benchmark(args.output_dir, processor=extractor, threads=args.threads)
    train, test = load_fsdd(args.data, extractor, args.holdout, args.max_train_samples, args.max_test_samples)
    split = "recordings 5-9 held out of train" if args.holdout else "test split"
    print(f"train {len(train)} clips, {split} {len(test)} clips")
    data = {
        "train_rows": len(train),
        "holdout": args.holdout,
        "max_train_samples": args.max_train_samples,
        "sampling_rate": SAMPLING_RATE,
        "max_seconds": MAX_SECONDS,
    }

    def train_collator():
        # A fresh generator per stage: every row sees the same augmentation stream, whatever ran before it.
        return AudioCollator(extractor, augment=True, seed=0)

    plain_collator = AudioCollator(extractor)
    augmentation = train_collator().describe()

    def hyper(epochs, lr, batch_size, **extra):
        return dict(
            num_train_epochs=epochs, per_device_train_batch_size=batch_size, learning_rate=lr, warmup_ratio=0.1,
            weight_decay=0.01, lr_scheduler_type="linear", seed=42, remove_unused_columns=False,
            group_by_length=True, length_column_name="length", **extra,
        )  # fmt: skip

    # -- teacher, from scratch ---------------------------------------------------------------------------------------
    teacher_args = hyper(args.teacher_epochs, TEACHER_LR, 8, alpha_kd=0.0)
    teacher_path = train_teacher(
        bench, teacher_args, train, train_collator(),
        describe={"model": TEACHER_CONFIG, "data": data, "augmentation": augmentation, "lr_multiplier": LR_MULTIPLIER},
    )  # fmt: skip
    teacher = hf_slim.from_pretrained(teacher_path).eval()
    bench.int8("teacher-int8", "teacher")

    # -- students: same init, same steps and hyper-parameters; only the loss differs ---------------------------------
    def student():
        model = hf_slim.init_student_from_teacher(teacher, num_layers=args.student_layers)
        # The conv feature encoder comes trained from the teacher and is not what hf_slim compresses: freezing it
        # (as wav2vec2 fine-tuning does) saves its backward pass, most of a student's training step.
        model.freeze_feature_encoder()
        return model

    def trained_student(name):
        model = hf_slim.from_pretrained(bench.path(name))
        model.freeze_feature_encoder()
        return model

    # Mostly soft targets; the teacher runs online on the same augmented batch the student sees.
    kd = dict(alpha_kd=0.9, temperature=2.0)
    student_args = hyper(args.student_epochs, 5e-4, 16)
    describe = {"num_layers": args.student_layers, "frozen_feature_encoder": True, "data": data}
    describe["augmentation"] = augmentation
    bench.train(
        "student-no-kd", student, {**student_args, "alpha_kd": 0.0}, train, data_collator=train_collator(),
        after=["teacher"], describe=describe,
    )  # fmt: skip
    bench.train(
        "student-kd", student, {**student_args, **kd}, train, data_collator=train_collator(), teacher=teacher,
        after=["teacher"], describe=describe,
    )  # fmt: skip
    prune_args = hyper(args.prune_epochs, 5e-4, 16, **kd, target_heads=0.5, target_ffn=0.5, pruning_frequency=10)
    bench.train(
        "student-kd-pruned", lambda: trained_student("student-kd"), prune_args, train, data_collator=train_collator(),
        teacher=teacher, pruning=True, after=["student-kd", "teacher"],
        describe={"frozen_feature_encoder": True, **describe},
    )  # fmt: skip
    bench.int8("student-kd-pruned-int8", "student-kd-pruned")
    # The same pruning without a teacher, from the no-KD student: what distillation buys once the model is compressed.
    bench.train(
        "student-pruned-no-kd", lambda: trained_student("student-no-kd"), {**prune_args, "alpha_kd": 0.0}, train,
        data_collator=train_collator(), pruning=True, after=["student-no-kd"],
        describe={"frozen_feature_encoder": True, **describe},
    )  # fmt: skip
    calibration = train.shuffle(seed=1).select(range(min(512, len(train))))
    bench.prune_to_target(
        "teacher-prune-to-target", "teacher", DataLoader(calibration, batch_size=8, collate_fn=plain_collator),
        flops_ratio=0.5, describe={"calibration_rows": len(calibration), "data": data},
    )  # fmt: skip

    # -- step time: same student, same unaugmented batches, logit distillation ---------------------------------------
    cached = hf_slim.cache_teacher_logits(teacher, train, data_collator=plain_collator)
    bench.step_times(
        student, {**student_args, **kd}, train, cached, plain_collator, teacher, steps=args.step_time_steps
    )

    # -- measurement -------------------------------------------------------------------------------------------------
    # Latency input: 1 s of audio (8000 samples): the longest test clip, truncated or zero-padded to 1 s.
    longest = np.asarray(test[len(test) - 1]["input_values"], dtype=np.float32)[: int(MAX_SECONDS * SAMPLING_RATE)]
    one_second = torch.zeros(1, int(MAX_SECONDS * SAMPLING_RATE))
    one_second[0, : len(longest)] = torch.from_numpy(longest)
    names = list(dict.fromkeys(bench.order))
    breakdown = latency_breakdown(bench, names, {"input_values": one_second})
    text = format_breakdown(breakdown, f"Latency per component, batch 1, 1 s clip, {args.threads} threads")
    with open(os.path.join(args.output_dir, "latency_breakdown.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    bench.finish(
        {"input_values": one_second}, test, data_collator=plain_collator, repeats=args.repeats,
        title=f"FSDD spoken digits ({split}, {len(test)} clips)",
        meta={
            "latency input": "1 s of 8 kHz audio (8000 samples), batch 1 and 32",
            "train clips": len(train),
            "teacher config": {k: v for k, v in TEACHER_CONFIG.items() if "dropout" not in k},
            "latency breakdown, batch 1, ms (see latency_breakdown.md)": {
                n: {k: round(v, 2) for k, v in row.items()} for n, row in breakdown.items()
            },
        },
    )  # fmt: skip
    print(f"Total {(time.perf_counter() - start) / 60:.1f} min; report in {args.output_dir}/report.md")


if __name__ == "__main__":
    main()
