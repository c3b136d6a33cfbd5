from .config import PruningConfig
from .importance import ffn_importance, gate_scores, head_importance, layer_importance, magnitude_importance
from .masks import MaskHooks, full_masks
from .structured import apply_structure, drop_layers, prune_ffn, prune_heads, pruning_record
from .trainer import PruningTrainer

__all__ = [
    "MaskHooks",
    "PruningConfig",
    "PruningTrainer",
    "apply_structure",
    "drop_layers",
    "ffn_importance",
    "full_masks",
    "gate_scores",
    "head_importance",
    "layer_importance",
    "magnitude_importance",
    "prune_ffn",
    "prune_heads",
    "pruning_record",
]
