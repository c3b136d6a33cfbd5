"""hf_slim: make Hugging Face transformer models smaller and faster while keeping their accuracy."""

__version__ = "0.1.0.dev0"

from .architectures import ArchitectureAdapter, get_adapter, register_adapter, supported_model_types
from .distill import (
    DistillationConfig,
    DistillationTrainer,
    attention_loss,
    cache_teacher_logits,
    hidden_state_loss,
    init_student_from_teacher,
    kd_loss,
)
from .errors import (
    HfSlimError,
    IncompatibleModelsError,
    InvalidLayerMapError,
    MissingDependencyError,
    UnsupportedArchitectureError,
)
from .metrics import build_compute_metrics, classification_metrics

__all__ = [
    "ArchitectureAdapter",
    "DistillationConfig",
    "DistillationTrainer",
    "HfSlimError",
    "IncompatibleModelsError",
    "InvalidLayerMapError",
    "MissingDependencyError",
    "UnsupportedArchitectureError",
    "__version__",
    "attention_loss",
    "build_compute_metrics",
    "cache_teacher_logits",
    "classification_metrics",
    "get_adapter",
    "hidden_state_loss",
    "init_student_from_teacher",
    "kd_loss",
    "register_adapter",
    "supported_model_types",
]
