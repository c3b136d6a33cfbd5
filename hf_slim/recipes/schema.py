"""Recipe files: YAML that names a model, a task, a dataset and an ordered list of stages.

Validation happens before any work: unknown keys, wrong types, impossible stage orders and bad values are reported
with their YAML path (`stages[2].prune.target_heads`), the bad value and what is allowed. Stage options map onto
the config dataclasses (`TrainingArguments`, [`DistillationConfig`], [`PruningConfig`]), so every field those
accept can be set, with the same names.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import re
import types
import typing
from typing import Any

import yaml

from ..distill.config import DistillationConfig
from ..errors import HfSlimError
from ..modeling import TASK_AUTO_CLASSES
from ..prune.config import PruningConfig

TASKS = tuple(TASK_AUTO_CLASSES)
STAGES = ("finetune", "distill", "prune", "quantize", "evaluate", "push")
TASK_MODALITY = {"text-classification": "text", "image-classification": "image", "audio-classification": "audio"}


class RecipeError(HfSlimError):
    """A recipe is invalid; the message names the YAML path, the bad value and what is allowed."""


def _err(path: str, message: str) -> RecipeError:
    return RecipeError(f"{path}: {message}")


# -- option tables ---------------------------------------------------------------------------------------------------
def _fields(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


_RESERVED = {"output_dir"}  # set by the runner
TRAINING_OPTIONS = {k: v for k, v in _fields(DistillationConfig).items() if k not in _RESERVED}
PRUNING_OPTIONS = {k: v for k, v in _fields(PruningConfig).items() if k not in _RESERVED}
STUDENT_OPTIONS = {"num_layers": int, "layers": list[int], "model": str}
DISTILL_EXTRA = {"student": dict, "cache_teacher_logits": bool, "augment_text": int}
POST_TRAINING_OPTIONS = {
    "method": str,
    "flops_ratio": float,
    "num_samples": int,
    "batch_size": int,
    "mask_tuning": bool,
}
QUANTIZE_OPTIONS = {
    "mode": str,
    "per_channel": bool,
    "operators": list[str],
    "exclude_nodes": list[str],
    "max_accuracy_drop": float,
    "calibration_method": str,
    "calibration_samples": int,
    "strict": bool,
}
EVALUATE_OPTIONS = {"split": str, "batch_size": int}
PUSH_OPTIONS = {"repo_id": str, "private": bool, "dry_run": bool}
LATENCY_OPTIONS = {"batch_sizes": list[int], "warmup": int, "repeats": int, "num_threads": int}
CHOICES = {
    ("prune", "method"): ("gradual", "post_training"),
    ("quantize", "mode"): ("dynamic", "static"),
    ("quantize", "calibration_method"): ("minmax", "percentile", "entropy"),
    ("evaluate", "split"): ("eval", "test"),
}


def _type_name(annotation) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _check_type(value, annotation) -> bool:
    """Whether a YAML value fits a dataclass annotation (bool is not a number; an int is a valid float)."""
    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_check_type(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin in (list, tuple):
        args = typing.get_args(annotation)
        return isinstance(value, list) and (not args or all(_check_type(v, args[0]) for v in value))
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if isinstance(annotation, type):
        if issubclass(annotation, str):  # ExplicitEnum fields such as eval_strategy take their string values
            return isinstance(value, str)
        return isinstance(value, annotation)
    return True


def _check_options(options: Any, table: dict[str, Any], path: str) -> dict:
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise _err(path, f"expected a mapping of options, got {options!r}.")
    for key, value in options.items():
        if key not in table:
            close = [k for k in table if k.startswith(str(key)[:4])][:8]
            hint = f" Did you mean one of {close}?" if close else ""
            raise _err(
                f"{path}.{key}", f"unknown option.{hint} See the {path.split('.')[-1]} stage's options in README."
            )
        if not _check_type(value, table[key]):
            raise _err(f"{path}.{key}", f"{value!r} is not a valid {_type_name(table[key])}.")
    return dict(options)


# -- the recipe ------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Stage:
    index: int
    kind: str
    options: dict

    @property
    def name(self) -> str:
        return f"stage-{self.index}-{self.kind}"

    @property
    def path(self) -> str:
        return f"stages[{self.index - 1}].{self.kind}"


@dataclasses.dataclass
class Recipe:
    model: str | dict
    task: str
    dataset: Any  # recipes.data.DatasetSpec
    stages: list[Stage]
    teacher: str | None = None
    processor: str | None = None
    name: str | None = None
    seed: int = 42
    metric: str = "accuracy"
    latency: dict = dataclasses.field(default_factory=dict)
    source: str | None = None
    raw: dict = dataclasses.field(default_factory=dict)

    def fingerprint(self) -> str:
        """Identity of a run: the resolved recipe (the output dir belongs to one recipe)."""
        return hashlib.sha256(json.dumps(self.raw, sort_keys=True, default=str).encode()).hexdigest()[:16]


TOP_LEVEL = {
    "model": (str, dict),
    "task": str,
    "dataset": dict,
    "stages": list,
    "teacher": str,
    "processor": str,
    "name": str,
    "seed": int,
    "metric": str,
    "latency": dict,
}
REQUIRED = ("model", "task", "dataset", "stages")


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply command-line `key.path=value` overrides (values parsed as YAML; `stages[1]` or `stages.1` index)."""
    raw = copy.deepcopy(raw)
    for item in overrides or []:
        if "=" not in item:
            raise RecipeError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. --set stages[1].distill.temperature=4")
        key, text = item.split("=", 1)
        parts = [p for p in re.split(r"\.|\[(\d+)\]", key) if p]
        if not parts:
            raise RecipeError(f"--set {item!r}: empty key.")
        value = yaml.safe_load(text) if text.strip() else ""
        node = raw
        for depth, part in enumerate(parts[:-1]):
            where = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise RecipeError(f"--set {item!r}: {where} is not an index of a list of {len(node)}.")
                node = node[int(part)]
            elif isinstance(node, dict):
                node = node.setdefault(part, {})
            else:
                raise RecipeError(f"--set {item!r}: {where} is not a mapping or a list.")
        last = parts[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise RecipeError(f"--set {item!r}: {last} is not an index of a list of {len(node)}.")
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise RecipeError(f"--set {item!r}: cannot set a key inside {node!r}.")
    return raw


def read_recipe_file(path: str) -> dict:
    """The YAML mapping of a recipe file, or a [`RecipeError`] saying why it cannot be read."""
    if not os.path.isfile(path):
        raise RecipeError(f"{path}: no such recipe file. Shipped recipes are in recipes/.")
    with open(path) as f:
        try:
            raw = yaml.safe_load(f)
        except yaml.YAMLError as err:
            raise RecipeError(f"{path}: not valid YAML ({err}).") from err
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}.")
    return raw


def load_recipe(path_or_dict: str | os.PathLike | dict, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe (YAML file or dict), apply `--set` overrides, and validate everything that can be checked
    without loading models or data. Raises [`RecipeError`] naming the YAML path of the first problem."""
    source = None
    if isinstance(path_or_dict, dict):
        raw = path_or_dict
    else:
        source = os.fspath(path_or_dict)
        raw = read_recipe_file(source)
    if not isinstance(raw, dict):
        raise RecipeError(f"{source or 'recipe'}: expected a mapping at the top level, got {type(raw).__name__}.")
    raw = apply_overrides(raw, overrides or [])
    try:
        return _validate(raw, source)
    except RecipeError as err:
        if source:
            raise RecipeError(f"{source}: {err}") from None
        raise


def _validate(raw: dict, source: str | None) -> Recipe:
    from .data import DatasetSpec

    for key in raw:
        if key not in TOP_LEVEL:
            raise _err(str(key), f"unknown key; allowed top-level keys: {', '.join(TOP_LEVEL)}.")
    for key in REQUIRED:
        if key not in raw:
            raise _err(key, "is required.")
    for key, expected in TOP_LEVEL.items():
        if key in raw and raw[key] is not None and not isinstance(raw[key], expected):
            raise _err(key, f"{raw[key]!r} has the wrong type; expected {expected}.")
    task = raw["task"]
    if task not in TASKS:
        raise _err("task", f"{task!r} is not one of {', '.join(TASKS)}.")
    model = raw["model"]
    if isinstance(model, dict):
        if set(model) != {"config"} or not isinstance(model.get("config"), dict):
            raise _err("model", "a model built from a config is written `model: {config: {model_type: vit, ...}}`.")
        if "model_type" not in model["config"]:
            raise _err("model.config.model_type", "is required (e.g. vit, bert, wav2vec2).")
        _check_modality(model["config"]["model_type"], task, "model.config.model_type")

    spec_fields = {f.name: f.type for f in dataclasses.fields(DatasetSpec)}
    dataset = raw["dataset"]
    for key in dataset:
        if key not in spec_fields:
            raise _err(f"dataset.{key}", f"unknown option; allowed: {', '.join(spec_fields)}.")
    hints = typing.get_type_hints(DatasetSpec)
    for key, value in dataset.items():
        if not _check_type(value, hints[key]):
            raise _err(f"dataset.{key}", f"{value!r} is not a valid {_type_name(hints[key])}.")
    if "name" not in dataset:
        raise _err(
            "dataset.name", "is required (csv, json, parquet, imagefolder, audiofolder, a Hub id, or sklearn-digits)."
        )
    spec = DatasetSpec(**dataset)

    latency = _check_options(raw.get("latency"), LATENCY_OPTIONS, "latency")
    stages_raw = raw["stages"]
    if not stages_raw:
        raise _err("stages", "is empty; list at least one stage.")
    stages = []
    for position, entry in enumerate(stages_raw):
        path = f"stages[{position}]"
        if isinstance(entry, str):
            entry = {entry: {}}
        if not isinstance(entry, dict) or len(entry) != 1:
            raise _err(path, f"each stage is a one-key mapping such as `- distill: {{...}}`; got {entry!r}.")
        ((kind, options),) = entry.items()
        if kind not in STAGES:
            raise _err(f"{path}.{kind}", f"unknown stage; allowed: {', '.join(STAGES)}.")
        stage_path = f"{path}.{kind}"
        options = _validate_stage(kind, options, stage_path)
        stages.append(Stage(index=position + 1, kind=kind, options=options))
    for stage in stages:
        if stage.options.get("augment_text"):
            if TASK_MODALITY[task] != "text":
                raise _err(f"{stage.path}.augment_text", f"perturbs text; this recipe's task is {task}.")
            if spec.text_pair_column:
                raise _err(
                    f"{stage.path}.augment_text",
                    "perturbs single texts; this dataset has text pairs (dataset.text_pair_column). Remove it.",
                )
    _check_order(stages, raw)
    return Recipe(
        model=model,
        task=task,
        dataset=spec,
        stages=stages,
        teacher=raw.get("teacher"),
        processor=raw.get("processor"),
        name=raw.get("name") or (os.path.splitext(os.path.basename(source))[0] if source else None),
        seed=raw.get("seed", 42),
        metric=raw.get("metric", "accuracy"),
        latency=latency,
        source=source,
        raw=raw,
    )


def _check_modality(model_type: str, task: str, path: str) -> None:
    from ..architectures import get_adapter

    class _Config:
        pass

    config = _Config()
    config.model_type = model_type
    try:
        modality = get_adapter(config).modality
    except HfSlimError as err:
        raise _err(path, str(err)) from None
    if modality != TASK_MODALITY[task]:
        raise _err(path, f"a {model_type} model is a {modality} model and cannot do {task}.")


def _validate_stage(kind: str, options: Any, path: str) -> dict:
    if kind == "finetune":
        options = _check_options(options, TRAINING_OPTIONS, path)
        distill_only = set(TRAINING_OPTIONS) - set(_fields_of_training_arguments())
        bad = sorted(set(options) & distill_only)
        if bad:
            raise _err(f"{path}.{bad[0]}", "is a distillation option; finetune trains on labels only (use distill).")
        return options
    if kind == "distill":
        options = _check_options(options, {**TRAINING_OPTIONS, **DISTILL_EXTRA}, path)
        student = options.get("student")
        if student is None:
            raise _err(f"{path}.student", "is required: {num_layers: N}, {layers: [...]} or {model: path}.")
        _check_options(student, STUDENT_OPTIONS, f"{path}.student")
        if len(student) != 1:
            raise _err(f"{path}.student", f"give exactly one of num_layers, layers or model; got {sorted(student)}.")
        config = _dry_config(DistillationConfig, {k: v for k, v in options.items() if k not in DISTILL_EXTRA}, path)
        augment = options.get("augment_text", 0)
        if augment < 0:
            raise _err(
                f"{path}.augment_text", f"must be >= 0 (perturbed copies per train text; 0 = off), got {augment}."
            )
        if augment and config is not None and config.alpha_kd == 0 and not config.uses_teacher_internals:
            raise _err(
                f"{path}.augment_text",
                "the perturbed copies have no labels and are learnt from the teacher only, but alpha_kd is 0 and no "
                "hidden/attention loss is on; set alpha_kd > 0 or remove augment_text.",
            )
        return options
    if kind == "prune":
        method = (options or {}).get("method", "gradual")
        if method not in CHOICES[("prune", "method")]:
            raise _err(f"{path}.method", f"{method!r} is not one of {', '.join(CHOICES[('prune', 'method')])}.")
        if method == "post_training":
            options = _check_options(options, POST_TRAINING_OPTIONS, path)
            ratio = options.get("flops_ratio", 0.5)
            if not 0 < ratio <= 1:
                raise _err(f"{path}.flops_ratio", f"{ratio!r} must be in (0, 1].")
            return options
        options = _check_options(options, {**PRUNING_OPTIONS, "method": str}, path)
        _dry_config(PruningConfig, {k: v for k, v in options.items() if k != "method"}, path)
        return options
    if kind == "quantize":
        options = _check_options(options, QUANTIZE_OPTIONS, path)
    elif kind == "evaluate":
        options = _check_options(options, EVALUATE_OPTIONS, path)
    else:
        options = _check_options(options, PUSH_OPTIONS, path)
        if "repo_id" not in options:
            raise _err(f"{path}.repo_id", "is required (e.g. your-name/model-slim).")
    for (stage, key), allowed in CHOICES.items():
        if stage == kind and key in options and options[key] not in allowed:
            raise _err(f"{path}.{key}", f"{options[key]!r} is not one of {', '.join(allowed)}.")
    return options


def _fields_of_training_arguments() -> set[str]:
    from transformers import TrainingArguments

    return {f.name for f in dataclasses.fields(TrainingArguments)}


def _dry_config(cls, options: dict, path: str):
    """Build the config once to run its own validation (values, not just types), mapping errors to the YAML path."""
    import tempfile

    try:
        with tempfile.TemporaryDirectory() as tmp:
            return cls(output_dir=tmp, report_to=[], use_cpu=True, **options)
    except (ValueError, TypeError) as err:
        raise _err(path, str(err)) from None


def _check_order(stages: list[Stage], raw: dict) -> None:
    """Each stage needs an input some earlier stage (or the recipe) provides."""
    artifact = "pytorch"
    trained = isinstance(raw["model"], str) or bool(raw.get("teacher"))
    for stage in stages:
        if stage.kind in ("finetune", "distill", "prune") and artifact != "pytorch":
            raise _err(
                stage.path,
                f"needs a PyTorch model, but the model is already {artifact} (quantized by an earlier stage); "
                "move quantize after it.",
            )
        if stage.kind == "quantize" and artifact != "pytorch":
            raise _err(stage.path, "the model is already quantized by an earlier stage.")
        if stage.kind == "distill" and not trained:
            raise _err(
                stage.path,
                "needs a trained teacher, but the model is built from a config and no earlier stage trains it: add "
                "a finetune stage before it, or set teacher:.",
            )
        if stage.kind == "finetune":
            trained = True
        if stage.kind == "quantize":
            artifact = "onnx-int8"
