"""Run a recipe: stage after stage, each output written atomically, resumable, with a compression report."""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass

import torch

from ..io import atomic_directory, write_json_atomic
from .schema import Recipe, RecipeError, Stage, load_recipe

logger = logging.getLogger(__name__)

STATE_NAME = "state.json"
RECIPE_NAME = "recipe.json"
WORK_DIR = ".work"


@dataclass
class Artifact:
    """The model a stage hands to the next: a PyTorch checkpoint folder or a quantized ONNX folder."""

    path: str
    kind: str  # "pytorch" | "onnx-int8"


def _is_main_process() -> bool:
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or (
        torch.distributed.get_rank() == 0
    )


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


class RecipeRunner:
    """Runs the stages of a [`Recipe`] into `output_dir`.

    Layout: `recipe.json` (the resolved recipe), `state.json` (finished stages), `stage-0-base/`, `stage-N-name/`
    per stage, `.work/` (Trainer checkpoints, so an interrupted stage resumes from its last checkpoint), and the
    report files. Re-running the same recipe into the same folder skips finished stages.
    """

    def __init__(self, recipe: Recipe, output_dir: str, overwrite: bool = False):
        self.recipe = recipe
        self.output_dir = os.path.abspath(output_dir)
        self.overwrite = overwrite
        self.state: dict = {}
        self.data = None

    # -- setup -----------------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Everything that can fail before work: the output dir, the data and its columns, the model's task."""
        from .data import check_columns, label_names, load_raw

        for stage in self.recipe.stages:
            if stage.kind == "push" and not stage.options.get("dry_run"):
                from ..hub import resolve_token

                if not resolve_token():
                    raise RecipeError(
                        f"{stage.path}: no Hugging Face token; set HF_TOKEN or run `huggingface-cli login` (or set "
                        f"{stage.path}.dry_run: true)."
                    )
        self._check_output_dir()
        raw = load_raw(self.recipe.dataset, seed=self.recipe.seed)
        for stage in self.recipe.stages:
            split = stage.options.get("split", "eval") if stage.kind == "evaluate" else None
            if split and split not in raw:
                raise RecipeError(
                    f"{stage.path}.split: the dataset has no {split} split; set dataset.test_split to evaluate on "
                    "a test split."
                )
        check_columns(raw, self.recipe.dataset, self.recipe.task)
        self.raw_data = raw
        self.labels = label_names(raw, self.recipe.dataset)
        self._check_model_task()

    def _check_output_dir(self) -> None:
        state_path = os.path.join(self.output_dir, STATE_NAME)
        if os.path.exists(self.output_dir) and not os.path.isdir(self.output_dir):
            raise RecipeError(f"{self.output_dir} is a file; choose another --output-dir.")
        if not os.path.isdir(self.output_dir) or not os.listdir(self.output_dir):
            return
        if self.overwrite:
            return
        if not os.path.isfile(state_path):
            raise RecipeError(
                f"{self.output_dir} is not empty and holds no hf_slim run; choose another --output-dir or pass "
                "--overwrite to replace its contents."
            )
        with open(state_path) as f:
            state = json.load(f)
        if state.get("fingerprint") != self.recipe.fingerprint():
            raise RecipeError(
                f"{self.output_dir} belongs to a different recipe ({state.get('recipe_name')!r}, fingerprint "
                f"{state.get('fingerprint')}); choose another --output-dir or pass --overwrite."
            )

    def _check_model_task(self) -> None:
        from transformers import AutoConfig

        from .schema import _check_modality

        for key in ("model", "teacher"):
            name = getattr(self.recipe, key)
            if not isinstance(name, str):
                continue
            try:
                config = AutoConfig.from_pretrained(name, trust_remote_code=False)
            except (OSError, ValueError) as err:
                raise RecipeError(f"{key}: cannot load {name!r} ({err}).") from None
            _check_modality(config.model_type, self.recipe.task, key)

    # -- state -----------------------------------------------------------------------------------------------------
    def _load_state(self) -> None:
        path = os.path.join(self.output_dir, STATE_NAME)
        if self.overwrite and os.path.isdir(self.output_dir):
            for name in os.listdir(self.output_dir):
                target = os.path.join(self.output_dir, name)
                shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)
        if os.path.isfile(path):
            with open(path) as f:
                self.state = json.load(f)
        else:
            self.state = {
                "fingerprint": self.recipe.fingerprint(),
                "recipe_name": self.recipe.name,
                "stages": {},
            }
        os.makedirs(self.output_dir, exist_ok=True)
        write_json_atomic(os.path.join(self.output_dir, RECIPE_NAME), self.recipe.raw)
        self._save_state()

    def _save_state(self) -> None:
        if _is_main_process():
            write_json_atomic(os.path.join(self.output_dir, STATE_NAME), self.state)

    # -- data ------------------------------------------------------------------------------------------------------
    def _prepare_data(self, model_config) -> None:
        from .data import build_processor, data_collator_for, preprocess

        source = self.recipe.processor or (self.recipe.model if isinstance(self.recipe.model, str) else None)
        self.processor = build_processor(self.recipe.task, source, config=model_config)
        self.data = preprocess(
            self.raw_data,
            self.recipe.dataset,
            self.recipe.task,
            self.processor,
            num_channels=getattr(model_config, "num_channels", None),
        )
        self.collator = data_collator_for(self.recipe.task, self.processor)

    # -- models ----------------------------------------------------------------------------------------------------
    def _build_base(self, out: str) -> None:
        from transformers import AutoConfig

        from ..modeling import TASK_AUTO_CLASSES

        auto = TASK_AUTO_CLASSES[self.recipe.task][0]
        id2label = dict(enumerate(self.labels))
        label_kwargs = {
            "num_labels": len(self.labels),
            "id2label": id2label,
            "label2id": {v: k for k, v in id2label.items()},
        }
        torch.manual_seed(self.recipe.seed)
        if isinstance(self.recipe.model, dict):
            config_kwargs = dict(self.recipe.model["config"])
            model_type = config_kwargs.pop("model_type")
            config = AutoConfig.for_model(model_type, **config_kwargs, **label_kwargs)
            model = auto.from_config(config)
        elif getattr(AutoConfig.from_pretrained(self.recipe.model), "hf_slim", None):
            # A model hf_slim already compressed: rebuild its structure (stock loaders cannot).
            from ..modeling import from_pretrained

            model = from_pretrained(self.recipe.model)
            if model.config.num_labels != len(self.labels):
                raise RecipeError(
                    f"model: {self.recipe.model} has {model.config.num_labels} labels but the dataset has "
                    f"{len(self.labels)} ({self.labels})."
                )
        else:
            model = auto.from_pretrained(
                self.recipe.model,
                use_safetensors=True,
                trust_remote_code=False,
                ignore_mismatched_sizes=True,
                **label_kwargs,
            )
        self._prepare_data(model.config)
        model.save_pretrained(out)
        self.processor.save_pretrained(out)

    def _load_model(self, path: str):
        from ..modeling import from_pretrained

        return from_pretrained(path)

    # -- stages ----------------------------------------------------------------------------------------------------
    def _training_args(self, cls, stage: Stage, options: dict):
        work = os.path.join(self.output_dir, WORK_DIR, stage.name)
        defaults = dict(
            output_dir=work,
            report_to=[],
            save_strategy="epoch",
            save_total_limit=1,
            eval_strategy="no",
            logging_steps=10,
            seed=self.recipe.seed,
            use_cpu=not torch.cuda.is_available(),
            dataloader_num_workers=0,
        )
        return cls(**{**defaults, **options})

    def _resume_checkpoint(self, args) -> str | None:
        checkpoints = sorted(
            glob.glob(os.path.join(args.output_dir, "checkpoint-*")), key=lambda p: int(p.rsplit("-", 1)[-1])
        )
        return checkpoints[-1] if checkpoints else None

    def _train(self, trainer, args) -> None:
        trainer.train(resume_from_checkpoint=self._resume_checkpoint(args))

    def _finetune(self, stage: Stage, model, out: str) -> Artifact:
        from ..distill import DistillationConfig, DistillationTrainer

        args = self._training_args(DistillationConfig, stage, {**stage.options, "alpha_kd": 0.0})
        trainer = DistillationTrainer(
            model=model, args=args, train_dataset=self.data["train"], data_collator=self.collator
        )
        self._train(trainer, args)
        trainer.save_model(out)
        return Artifact(out, "pytorch")

    def _distill(self, stage: Stage, model, out: str) -> Artifact:
        from ..distill import DistillationConfig, DistillationTrainer, cache_teacher_logits, init_student_from_teacher
        from ..modeling import from_pretrained

        options = dict(stage.options)
        student_spec = options.pop("student")
        cache = options.pop("cache_teacher_logits", False)
        augment = options.pop("augment_text", 0)
        teacher = from_pretrained(self.recipe.teacher) if self.recipe.teacher else model
        if "model" in student_spec:
            student = from_pretrained(student_spec["model"])
        else:
            student = init_student_from_teacher(teacher, **student_spec)
        args = self._training_args(DistillationConfig, stage, options)
        train = self.data["train"]
        if augment:
            train = self._with_augmented_text(train, augment)
        if cache and not args.uses_teacher_internals:
            train = cache_teacher_logits(
                teacher, train, data_collator=self.collator, column=args.teacher_logits_column
            )
            teacher = None
        trainer = DistillationTrainer(
            model=student, args=args, teacher_model=teacher, train_dataset=train, data_collator=self.collator
        )
        self._train(trainer, args)
        trainer.save_model(out)
        return Artifact(out, "pytorch")

    def _with_augmented_text(self, train, num_per_text: int):
        """The train split plus `num_per_text` perturbed copies of each train text, labelled -100 (soft targets)."""
        from datasets import Dataset, DatasetDict, Value, concatenate_datasets

        from ..distill import augment_texts
        from .data import preprocess

        spec = self.recipe.dataset
        texts = augment_texts(self.raw_data["train"][spec.text_column], num_per_text, seed=self.recipe.seed)
        extra = Dataset.from_dict({spec.text_column: texts, spec.label_column: [-100] * len(texts)})
        extra = preprocess(DatasetDict({"train": extra}), spec, self.recipe.task, self.processor)["train"]
        labels = Value("int64")
        train = train.cast_column("labels", labels)
        extra = extra.cast_column("labels", labels).cast(train.features)
        logger.info("Distilling on %d train rows + %d perturbed copies (augment_text=%d)", len(train), len(extra),
                    num_per_text)  # fmt: skip
        return concatenate_datasets([train, extra])

    def _prune(self, stage: Stage, model, out: str) -> Artifact:
        options = dict(stage.options)
        method = options.pop("method", "gradual")
        if method == "post_training":
            from torch.utils.data import DataLoader

            from ..prune import prune_to_target

            train = self.data["train"]
            count = min(options.get("num_samples", 512), len(train))
            loader = DataLoader(
                train.select(range(count)), batch_size=options.get("batch_size", 8), collate_fn=self.collator
            )
            # Runs on every process with the same data, so every process takes the same decisions (the scores are
            # all-reduced under torch.distributed); the main process writes.
            prune_to_target(
                model,
                loader,
                flops_ratio=options.get("flops_ratio", 0.5),
                mask_tuning=options.get("mask_tuning", True),
            )
            if _is_main_process():
                model.save_pretrained(out)
        else:
            from ..prune import PruningConfig, PruningTrainer

            args = self._training_args(PruningConfig, stage, options)
            trainer = PruningTrainer(
                model=model, args=args, train_dataset=self.data["train"], data_collator=self.collator
            )
            self._train(trainer, args)
            trainer.save_model(out)
        return Artifact(out, "pytorch")

    def _quantize(self, stage: Stage, model_path: str, out: str) -> Artifact:
        from ..export import export_onnx, quantize

        options = dict(stage.options)
        onnx_dir = os.path.join(self.output_dir, WORK_DIR, stage.name, "onnx")
        export_onnx(model_path, onnx_dir)
        calibration = None
        if options.get("mode", "dynamic") == "static":
            count = min(options.pop("calibration_samples", 128), len(self.data["train"]))
            calibration = self.data["train"].select(range(count))
        else:
            options.pop("calibration_samples", None)
        report = quantize(
            onnx_dir,
            out,
            calibration_dataset=calibration,
            eval_dataset=self.data["eval"] if options.get("max_accuracy_drop") is not None else None,
            metric=self.recipe.metric,
            **options,
        )
        logger.info(report.message)
        return Artifact(out, "onnx-int8")

    # -- measuring -------------------------------------------------------------------------------------------------
    def _measure(self, artifact: Artifact, split: str = "eval") -> dict:
        from ..evaluation import evaluate
        from ..stats import size_on_disk

        metrics = evaluate(artifact.path, self.data[split], metric=self.recipe.metric, data_collator=self.collator)
        if artifact.kind == "pytorch":
            model = self._load_model(artifact.path)
            parameters = sum(p.numel() for p in model.parameters())
            size = sum(size_on_disk(f) for f in glob.glob(os.path.join(artifact.path, "*.safetensors")))
        else:
            parameters = None
            size = sum(size_on_disk(f) for f in glob.glob(os.path.join(artifact.path, "*.onnx")))
        return {
            "metric": metrics[self.recipe.metric],
            "parameters": parameters,
            "size_bytes": size,
        }

    # -- the run ---------------------------------------------------------------------------------------------------
    def run(self) -> dict:
        """Run every unfinished stage. Under `torch.distributed` (e.g. `accelerate launch`), every process trains;
        only the main process writes outputs, measures and reports, and the others wait for it."""
        self.prepare()
        main = _is_main_process()
        if main:
            self._load_state()
        _barrier()
        if not main:
            with open(os.path.join(self.output_dir, STATE_NAME)) as f:
                self.state = json.load(f)
        stages = self.state["stages"]
        base_dir = os.path.join(self.output_dir, "stage-0-base")
        if "stage-0-base" not in stages:
            start = time.perf_counter()
            if main:
                with atomic_directory(base_dir) as tmp:
                    self._build_base(tmp)
                measured = self._measure(Artifact(base_dir, "pytorch"))
                stages["stage-0-base"] = {
                    "kind": "pytorch",
                    "path": "stage-0-base",
                    "seconds": time.perf_counter() - start,
                    **measured,
                }
                self._save_state()
            _barrier()
        if self.data is None:
            from transformers import AutoConfig

            self._prepare_data(AutoConfig.from_pretrained(base_dir))
        current = Artifact(base_dir, "pytorch")

        for stage in self.recipe.stages:
            if stage.name in stages:
                record = stages[stage.name]
                if record.get("path"):
                    current = Artifact(os.path.join(self.output_dir, record["path"]), record["kind"])
                continue
            start = time.perf_counter()
            out = os.path.join(self.output_dir, stage.name)
            if stage.kind == "evaluate":
                if main:
                    split = stage.options.get("split", "eval")
                    measured = self._measure(current, split)
                    stages[stage.name] = {
                        "kind": current.kind,
                        "path": None,
                        "evaluated": os.path.relpath(current.path, self.output_dir),
                        "split": split,
                        "seconds": time.perf_counter() - start,
                        **measured,
                    }
            elif stage.kind == "push":
                if main:
                    from ..hub import push_to_hub

                    self._report()  # the model card is built from the report of the stages so far
                    with atomic_directory(out) as tmp:
                        manifest = push_to_hub(
                            self.output_dir,
                            stage.options["repo_id"],
                            private=stage.options.get("private", False),
                            dry_run=stage.options.get("dry_run", False),
                            folder=tmp,
                        )
                    stages[stage.name] = {
                        "kind": "push",
                        "path": None,
                        "repo_id": stage.options["repo_id"],
                        "files": manifest["files"],
                        "url": manifest.get("url"),
                        "dry_run": stage.options.get("dry_run", False),
                        "seconds": time.perf_counter() - start,
                    }
            elif stage.kind in ("finetune", "distill", "prune"):
                # Training and pruning run on every process (DDP; identical pruning decisions); the main process
                # writes the result.
                model = self._load_model(current.path)
                work_out = os.path.join(self.output_dir, WORK_DIR, stage.name, "final")
                artifact = getattr(self, f"_{stage.kind}")(stage, model, work_out)
                if main:
                    with atomic_directory(out) as tmp:
                        for name in os.listdir(work_out):
                            shutil.move(os.path.join(work_out, name), os.path.join(tmp, name))
                        self.processor.save_pretrained(tmp)
                current = Artifact(out, artifact.kind)
            elif main:
                with atomic_directory(out) as tmp:
                    artifact = self._quantize(stage, current.path, tmp)
                current = Artifact(out, artifact.kind)
            else:
                current = Artifact(out, "onnx-int8" if stage.kind == "quantize" else "pytorch")
            if main:
                if stage.kind not in ("evaluate", "push"):
                    measured = self._measure(current)
                    stages[stage.name] = {
                        "kind": current.kind,
                        "path": stage.name,
                        "seconds": time.perf_counter() - start,
                        **measured,
                    }
                self._save_state()
                shutil.rmtree(os.path.join(self.output_dir, WORK_DIR, stage.name), ignore_errors=True)
                print(self._summary_line(stage.name, stages[stage.name]))
            _barrier()
        report = self._report() if main else {}
        _barrier()
        return report

    def _model_records(self):
        return [(name, record) for name, record in self.state["stages"].items() if record["kind"] != "push"]

    def _summary_line(self, name: str, record: dict) -> str:
        if record["kind"] == "push":
            verb = "would commit" if record.get("dry_run") else "committed"
            return f"[hf-slim] {name}: {verb} {len(record['files'])} files to {record['repo_id']}"
        size = record.get("size_bytes")
        return (
            f"[hf-slim] {name}: {self.recipe.metric} {record['metric']:.4f}"
            + (f", {size / 1e6:.2f} MB" if size else "")
            + f", {record['seconds']:.1f} s"
        )

    def _latencies(self) -> dict[str, dict[str, float]]:
        """Latency of every stage's model, measured together in one process so the ratios compare like with like.

        Kept in `state.json` and re-measured (all together) only when a stage has none yet, so every report and
        model card of a run shows the same numbers."""
        cached = self.state.get("latency_ms") or {}
        names = [name for name, _ in self._model_records()]
        if names and all(name in cached for name in names):
            return {name: cached[name] for name in names}
        measured = self._measure_latencies()
        self.state["latency_ms"] = measured
        self._save_state()
        return measured

    def _measure_latencies(self) -> dict[str, dict[str, float]]:
        from ..evaluation import benchmark_latency

        targets, owner = {}, {}
        for name, record in self._model_records():
            path = record.get("path") or record.get("evaluated")
            if path in owner:
                continue
            owner[path] = name
            full = os.path.join(self.output_dir, path)
            targets[name] = self._load_model(full) if record["kind"] == "pytorch" else full
        example = self.collator([{k: v for k, v in self.data["eval"][0].items() if k != "labels"}])
        spec = {k: v for k, v in example.items() if k != "labels" and torch.is_tensor(v)}
        latency = self.recipe.latency
        rows = benchmark_latency(
            targets,
            spec,
            batch_sizes=tuple(latency.get("batch_sizes", (1, 32))),
            warmup=latency.get("warmup", 10),
            repeats=latency.get("repeats", 30),
            num_threads=latency.get("num_threads"),
            verbose=False,
        )
        by_name: dict[str, dict[str, float]] = {}
        for row in rows:
            by_name.setdefault(row["name"], {})[str(row["batch_size"])] = row["median_ms"]
        return {
            name: by_name[owner[record.get("path") or record.get("evaluated")]]
            for name, record in self._model_records()
        }

    def _report(self) -> dict:
        from .report import StageRow, build_report, write_report

        latencies = self._latencies()
        rows = []
        for name, record in self._model_records():
            rows.append(
                StageRow(
                    stage=name,
                    kind=record["kind"],
                    path=record.get("path") or record.get("evaluated") or "",
                    parameters=record.get("parameters"),
                    size_bytes=record.get("size_bytes"),
                    latency_ms=latencies.get(name, {}),
                    metric_name=self.recipe.metric,
                    metric=record.get("metric"),
                    seconds=record.get("seconds"),
                    notes=f"{record['split']} split" if record.get("split") else "",
                )
            )
        # Retention is relative to the teacher: the fine-tuned model when the recipe trains one, else the base model.
        reference = next((s.name for s in self.recipe.stages if s.kind == "finetune"), "stage-0-base")
        report = build_report(
            rows, reference=reference, title=self.recipe.name or "hf-slim run", meta={"recipe": self.recipe.raw}
        )
        if _is_main_process():
            write_report(report, self.output_dir)
        return report


def run_recipe(recipe, output_dir: str, overrides: list[str] | None = None, overwrite: bool = False) -> dict:
    """Validate and run a recipe (path or dict) into `output_dir`; returns the report."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    return RecipeRunner(recipe, output_dir, overwrite=overwrite).run()
