from .config import PruningConfig
from .importance import ffn_importance, gate_scores, head_importance, layer_importance, magnitude_importance
from .masks import MaskHooks, full_masks
from .post_training import prune_to_target
from .structured import apply_structure, drop_layers, prune_ffn, prune_heads, pruning_record
from .trainer import PruningTrainer
from .unstructured import prune_unstructured
from .vocabulary import prune_vocabulary

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
    "prune_to_target",
    "prune_unstructured",
    "prune_vocabulary",
    "pruning_record",
]
