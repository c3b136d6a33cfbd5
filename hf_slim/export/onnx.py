"""Export to ONNX through Optimum's exporter, for any model hf_slim supports, pruned or not."""

from __future__ import annotations

import json
import logging
import os
import shutil

from torch import nn

from ..errors import HfSlimError
from ..io import atomic_directory
from ..modeling import TASK_AUTO_CLASSES, from_pretrained, task_of
from ._deps import require_onnx

logger = logging.getLogger(__name__)

ORT_CLASSES = {
    "text-classification": "ORTModelForSequenceClassification",
    "image-classification": "ORTModelForImageClassification",
    "audio-classification": "ORTModelForAudioClassification",
}
PREPROCESSOR_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "preprocessor_config.json",
    "processor_config.json",
)


def _copy_preprocessors(source: str, destination: str) -> None:
    for name in PREPROCESSOR_FILES:
        path = os.path.join(source, name)
        if os.path.isfile(path) and not os.path.exists(os.path.join(destination, name)):
            shutil.copy2(path, destination)


def export_onnx(
    model_or_path: nn.Module | str,
    output_dir: str | os.PathLike,
    task: str | None = None,
    opset: int | None = None,
    atol: float | None = None,
    validate: bool = True,
    preprocessor=None,
) -> str:
    """Export a classification model to ONNX with Optimum, validated against PyTorch.

    The result loads with `ORTModelFor*.from_pretrained(output_dir)`. Models pruned by hf_slim (non-uniform heads,
    pruned FFN, dropped layers, layers without attention) export like any other; their `config.json` keeps the
    `hf_slim` record. The folder is written atomically: on any error `output_dir` is left as it was.

    Args:
        model_or_path (`PreTrainedModel` or `str`): A model in memory (exported with `onnx_export_from_model`) or a
            local folder / Hub id (loaded with [`hf_slim.from_pretrained`], so pruned checkpoints work too).
        output_dir (`str`): Where to write `model.onnx`, `config.json` and the preprocessor files.
        task (`str`, *optional*): `"text-classification"`, `"image-classification"` or `"audio-classification"`;
            inferred from the model class when not given.
        opset (`int`, *optional*): ONNX opset; Optimum's default for the architecture when not given.
        atol (`float`, *optional*): Tolerance of the output validation (Optimum's default for the architecture).
        validate (`bool`, defaults to `True`): Compare ONNX Runtime outputs with PyTorch after export.
        preprocessor (*optional*): Tokenizer / image processor / feature extractor saved next to the model. For a
            path, the preprocessor files found there are copied.

    Returns:
        `str`: `output_dir`.
    """
    _, exporters, _, _ = require_onnx()
    source = None
    if isinstance(model_or_path, (str, os.PathLike)):
        source = str(model_or_path)
        model = from_pretrained(source)
    elif isinstance(model_or_path, nn.Module):
        model = model_or_path
    else:
        raise HfSlimError(f"export_onnx expects a model or a path, got {type(model_or_path).__name__}.")
    inferred = task_of(model)
    task = task or inferred
    if task not in TASK_AUTO_CLASSES:
        raise HfSlimError(f"task={task!r} is not one of {', '.join(TASK_AUTO_CLASSES)}.")
    if task != inferred:
        raise HfSlimError(f"task={task!r} does not match the model ({type(model).__name__} does {inferred}).")
    was_training = model.training
    model.eval()
    try:
        with atomic_directory(output_dir) as tmp:
            exporters.onnx_export_from_model(
                model,
                tmp,
                task=task,
                opset=opset,
                atol=atol,
                do_validation=validate,
                preprocessors=[preprocessor] if preprocessor is not None else None,
            )
            if preprocessor is not None:
                preprocessor.save_pretrained(tmp)  # Optimum only uses it to build dummy inputs
            if source is not None and os.path.isdir(source):
                _copy_preprocessors(source, tmp)
            # A model built from a config has no `architectures` until save_pretrained; the ONNX folder's config
            # needs it so loaders (hf_slim.evaluate, quantize) know the task.
            config_path = os.path.join(tmp, "config.json")
            with open(config_path) as f:
                config = json.load(f)
            if not config.get("architectures"):
                config["architectures"] = [type(model).__name__]
                with open(config_path, "w") as f:
                    json.dump(config, f, indent=2, sort_keys=True)
    finally:
        model.train(was_training)
    return str(output_dir)


def onnx_files(path: str) -> list[str]:
    return sorted(f for f in os.listdir(path) if f.endswith(".onnx") and not f.startswith("augmented"))


def pick_onnx_file(path: str, file_name: str | None = None) -> str:
    """The ONNX file of a folder: `file_name` if given, else the only `.onnx` file (or `model.onnx`)."""
    files = onnx_files(path)
    if file_name is not None:
        if file_name not in files:
            raise HfSlimError(f"{path} has no {file_name}; ONNX files there: {files}.")
        return file_name
    if len(files) == 1:
        return files[0]
    if "model.onnx" in files:
        return "model.onnx"
    raise HfSlimError(f"{path} holds several ONNX files {files}; pass file_name= to choose one.")


def is_onnx_dir(path) -> bool:
    return isinstance(path, (str, os.PathLike)) and os.path.isdir(path) and bool(onnx_files(str(path)))


def load_ort_model(path: str, file_name: str | None = None, **kwargs):
    """Load an exported folder with the `ORTModelFor*` class of its task."""
    optimum_ort, _, _, _ = require_onnx()
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    names = getattr(config, "architectures", None) or []
    task = None
    for candidate, (_, mapping) in TASK_AUTO_CLASSES.items():
        for value in mapping.values():
            if names and names[0] in ((value,) if isinstance(value, str) else tuple(value)):
                task = candidate
    if task is None:
        raise HfSlimError(f"{path}: config.architectures={names} is not a supported classification model.")
    ort_class = getattr(optimum_ort, ORT_CLASSES[task])
    return ort_class.from_pretrained(path, file_name=pick_onnx_file(path, file_name), **kwargs)
