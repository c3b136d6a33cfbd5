"""hf_slim: make Hugging Face transformer models smaller and faster while keeping their accuracy."""

__version__ = "0.1.0.dev0"

from .architectures import ArchitectureAdapter, get_adapter, register_adapter, supported_model_types
from .distill import (
    DistillationConfig,
    DistillationTrainer,
    attention_loss,
    augment_texts,
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
from .evaluation import benchmark_latency, evaluate
from .export import QuantizationReport, export_onnx, quantize
from .metrics import build_compute_metrics, classification_metrics
from .modeling import from_pretrained
from .prune import (
    MaskHooks,
    PruningConfig,
    PruningTrainer,
    drop_layers,
    ffn_importance,
    head_importance,
    layer_importance,
    magnitude_importance,
    prune_ffn,
    prune_heads,
    prune_to_target,
    prune_unstructured,
    prune_vocabulary,
)
from .recipes import RecipeError, load_recipe, run_recipe
from .stats import model_stats, size_on_disk

__all__ = [
    "ArchitectureAdapter",
    "QuantizationReport",
    "RecipeError",
    "load_recipe",
    "run_recipe",
    "benchmark_latency",
    "evaluate",
    "export_onnx",
    "quantize",
    "MaskHooks",
    "PruningConfig",
    "PruningTrainer",
    "drop_layers",
    "ffn_importance",
    "from_pretrained",
    "head_importance",
    "layer_importance",
    "magnitude_importance",
    "model_stats",
    "prune_ffn",
    "prune_heads",
    "prune_to_target",
    "prune_unstructured",
    "prune_vocabulary",
    "size_on_disk",
    "DistillationConfig",
    "DistillationTrainer",
    "HfSlimError",
    "IncompatibleModelsError",
    "InvalidLayerMapError",
    "MissingDependencyError",
    "UnsupportedArchitectureError",
    "__version__",
    "attention_loss",
    "augment_texts",
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
