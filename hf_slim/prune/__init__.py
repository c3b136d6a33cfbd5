from .structured import apply_structure, drop_layers, prune_ffn, prune_heads, pruning_record

__all__ = ["apply_structure", "drop_layers", "prune_ffn", "prune_heads", "pruning_record"]
