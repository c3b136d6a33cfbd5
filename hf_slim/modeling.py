"""Loading models safely, with the right Auto class for the task."""

from __future__ import annotations

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
