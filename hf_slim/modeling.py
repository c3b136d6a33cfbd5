"""Loading models safely, with the right Auto class for the task."""

from __future__ import annotations

import torch
from transformers import (
    AutoModelForAudioClassification,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    PreTrainedModel,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES,
    MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
)

from .errors import HfSlimError

TASK_AUTO_CLASSES = {
    "text-classification": (AutoModelForSequenceClassification, MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES),
    "image-classification": (AutoModelForImageClassification, MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES),
    "audio-classification": (AutoModelForAudioClassification, MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES),
}


def task_of(model: PreTrainedModel) -> str:
    """The pipeline task of a classification model, from its class (e.g. `"text-classification"`)."""
    name = type(model).__name__
    for task, (_, names) in TASK_AUTO_CLASSES.items():
        for value in names.values():
            if name in ((value,) if isinstance(value, str) else tuple(value)):
                return task
    raise HfSlimError(
        f"{name} is not a sequence, image or audio classification model; hf_slim distils "
        "AutoModelForSequenceClassification, AutoModelForImageClassification and AutoModelForAudioClassification "
        "models."
    )


def load_model_like(model: PreTrainedModel, name_or_path: str, **kwargs) -> PreTrainedModel:
    """Load `name_or_path` with the Auto class of `model`'s task: safetensors only, remote code off by default."""
    auto_class = TASK_AUTO_CLASSES[task_of(model)][0]
    kwargs.setdefault("use_safetensors", True)
    kwargs.setdefault("trust_remote_code", False)
    return auto_class.from_pretrained(name_or_path, **kwargs)


_LOADER_KWARGS = ("torch_dtype", "dtype", "attn_implementation", "revision", "token", "cache_dir", "local_files_only")


def _resolve_checkpoint(name_or_path: str, revision=None, token=None, cache_dir=None, local_files_only=False) -> str:
    import os

    if os.path.isdir(name_or_path):
        return name_or_path
    from huggingface_hub import snapshot_download

    return snapshot_download(
        name_or_path,
        revision=revision,
        token=token,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"],
    )


def _safetensors_files(path: str) -> list[str]:
    import json
    import os

    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    elif os.path.isfile(os.path.join(path, "model.safetensors")):
        files = ["model.safetensors"]
    else:
        raise HfSlimError(
            f"{path} has no model.safetensors (or sharded index). hf_slim loads safetensors only; re-save the model "
            "with save_pretrained(..., safe_serialization=True)."
        )
    return files


def _load_safetensors_state(path: str) -> dict:
    import os

    from safetensors.torch import load_file

    files = _safetensors_files(path)
    state = {}
    for name in files:
        state.update(load_file(os.path.join(path, name)))
    return state


def from_pretrained(name_or_path: str, model_class=None, **kwargs) -> PreTrainedModel:
    """Load a model saved by hf_slim, pruned or not, strictly: no missing, unexpected or mismatched weights.

    Pruned checkpoints record their structure (heads per layer, FFN widths, dropped layers) in `config.hf_slim`;
    this loader rebuilds that structure without `prune_heads`/`config.pruned_heads` (so it works on transformers 5
    too), then loads the safetensors weights strictly. Models without the record load with the stock loader.

    Args:
        name_or_path (`str`): Local folder or Hub id.
        model_class (`type`, *optional*): The transformers class to build; defaults to `config.architectures[0]`
            (a transformers class: remote code is never run).
        kwargs: `torch_dtype`/`dtype`, `attn_implementation`, `revision`, `token`, `cache_dir`, `local_files_only`.
    """
    import copy

    import transformers
    from transformers import AutoConfig

    from .prune.structured import CONFIG_KEY, apply_structure

    unknown = sorted(set(kwargs) - set(_LOADER_KWARGS))
    if unknown:
        raise HfSlimError(
            f"hf_slim.from_pretrained got unsupported arguments {unknown}; supported: {', '.join(_LOADER_KWARGS)}."
        )
    hub = {k: kwargs.get(k) for k in ("revision", "token", "cache_dir")}
    path = _resolve_checkpoint(name_or_path, local_files_only=bool(kwargs.get("local_files_only")), **hub)
    config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    if model_class is None:
        names = getattr(config, "architectures", None) or []
        model_class = getattr(transformers, names[0], None) if names else None
        if model_class is None:
            raise HfSlimError(
                f"{name_or_path}: config.architectures={names!r} names no transformers class; pass model_class= "
                "(e.g. transformers.BertForSequenceClassification)."
            )
    dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
    record = getattr(config, CONFIG_KEY, None)
    _safetensors_files(path)  # safetensors only, checked before any loading
    if not record:
        extra = {k: v for k, v in kwargs.items() if k in ("attn_implementation",) and v is not None}
        if dtype is not None:
            extra["torch_dtype"] = dtype
        return model_class.from_pretrained(path, use_safetensors=True, trust_remote_code=False, **extra)

    build_config = copy.deepcopy(config)
    if hasattr(build_config, "pruned_heads"):
        build_config.pruned_heads = {}  # hf_slim rebuilds heads itself (transformers 5 has no pruned_heads)
    if kwargs.get("attn_implementation"):
        build_config._attn_implementation = kwargs["attn_implementation"]
    model = model_class(build_config)
    apply_structure(model, record)
    model.config.pruned_heads = getattr(config, "pruned_heads", {})
    state = _load_safetensors_state(path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or mismatched:
        # Tied weights are saved once; anything else missing is an error.
        tied = list(getattr(model, "_tied_weights_keys", None) or [])
        missing = [k for k in missing if not any(k == t or k.endswith("." + t) for t in tied)]
        if missing or unexpected or mismatched:
            raise HfSlimError(
                f"{name_or_path} does not match the structure in its config.{CONFIG_KEY}: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}, mismatched shapes {mismatched[:5]}. The weights and config.json come "
                "from different models."
            )
    model.load_state_dict(state, strict=False)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    if dtype is not None:
        model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    model.eval()
    return model
