"""Unstructured pruning: zero the smallest-magnitude weights of the model's linear layers, globally.

This is for sparsity studies and for runtimes that exploit sparse weights. Dense runtimes (PyTorch, ONNX Runtime)
multiply zeros like any other value, so an unstructured-pruned model is exactly as fast and, saved as dense
safetensors, exactly as large as the original; it only shrinks once compressed (e.g. zipped) or stored in a sparse
format. To make a model smaller and faster on dense runtimes, remove heads, neurons or layers with
[`prune_heads`], [`prune_ffn`] and [`drop_layers`].
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from ..architectures import get_adapter
from ..errors import HfSlimError
from ..stats import parameter_part
from .structured import _sync_config, pruning_record


def prune_unstructured(model: nn.Module, sparsity: float, include_classifier: bool = False) -> dict:
    """Global magnitude pruning: set the `sparsity` fraction of smallest-magnitude linear weights to exactly 0.

    The weights of every `nn.Linear` inside the transformer layers (attention projections, feed-forward layers) are
    ranked together by absolute value, and the smallest `round(sparsity * total)` are set to 0, so layers that matter
    less lose more. Ties at the threshold are broken in module order, so the achieved sparsity is the requested one
    to within one weight (higher only if more weights were already 0). Biases, layer norms and embeddings are never
    touched; the task head (classifier, pooler, projector) only with `include_classifier=True`.

    The zeros are written into the existing parameters: no `torch.nn.utils.prune` reparametrisation (`weight_orig`,
    `weight_mask`, hooks) is left behind, so `save_pretrained`/`from_pretrained` work unchanged and the zeros survive
    the round trip. Further training will make them non-zero again unless they are masked.

    <Tip warning={true}>

    Zeros give no speedup on dense runtimes (PyTorch, ONNX Runtime) and no size reduction unless the checkpoint is
    compressed or stored in a sparse format. Use this for sparsity studies or sparse runtimes; use structured pruning
    to make a model smaller and faster.

    </Tip>

    Finding the global threshold needs one float32 copy of the selected weights' absolute values (plus
    `torch.kthvalue`'s working copy): about 8 bytes per selected weight, freed before the weights are modified.

    Args:
        model (`nn.Module`):
            A model of a supported architecture; modified in place.
        sparsity (`float`):
            Fraction of the selected weights to set to 0, in `[0, 1)`. `0` leaves the model unchanged.
        include_classifier (`bool`, *optional*, defaults to `False`):
            Also prune the linear layers of the task head (see [`hf_slim.stats.parameter_part`]).

    Returns:
        `dict`: The sparsity report, also appended (with `"op": "prune_unstructured"`) to the `history` of the
        model's `config.hf_slim` record: `target` (the requested sparsity), `achieved` (fraction of the selected
        weights that are 0), `zeros` and `total` (counts), `include_classifier`, and `per_layer`, the fraction of zeros
        of each pruned module by name.
    """
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real) or not 0 <= sparsity < 1:
        raise HfSlimError(
            f"prune_unstructured: sparsity must be a number in [0, 1) (the fraction of weights set to 0), got "
            f"{sparsity!r}."
        )
    sparsity = float(sparsity)
    adapter = get_adapter(model)
    parts = ("layers", "head") if include_classifier else ("layers",)
    modules = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and parameter_part(model, name) in parts
    }
    for name, module in modules.items():
        if not isinstance(module.weight, nn.Parameter):
            raise HfSlimError(
                f"prune_unstructured: {name}.weight is not a parameter (a torch.nn.utils.prune reparametrisation?); "
                "call torch.nn.utils.prune.remove on it first."
            )
    weights = {name: module.weight for name, module in modules.items() if module.weight.numel() > 0}
    total = sum(w.numel() for w in weights.values())
    if total == 0:
        raise HfSlimError(f"prune_unstructured: {type(model).__name__} has no linear weights to prune.")

    count = math.floor(sparsity * total + 0.5)
    if count > 0:
        with torch.no_grad():
            _zero_smallest(list(weights.values()), count)

    zeros_per_layer = {name: int((w == 0).sum()) for name, w in weights.items()}
    zeros = sum(zeros_per_layer.values())
    per_layer = {name: zeros_per_layer[name] / weights[name].numel() for name in weights}
    report = {
        "target": sparsity,
        "achieved": zeros / total,
        "zeros": zeros,
        "total": total,
        "include_classifier": bool(include_classifier),
        "per_layer": per_layer,
    }
    record = pruning_record(model)
    record["history"].append({"op": "prune_unstructured", **report})
    # A new record must also describe the structure, or hf_slim.from_pretrained cannot rebuild the model.
    _sync_config(model, adapter, record)
    return report


def _zero_smallest(weights: list[torch.Tensor], count: int) -> None:
    """Set exactly the `count` smallest-magnitude entries of `weights` (taken together) to 0."""
    dtype = torch.promote_types(weights[0].dtype, torch.float32)
    magnitudes = torch.empty(sum(w.numel() for w in weights), dtype=dtype, device=weights[0].device)
    start = 0
    for w in weights:
        magnitudes[start : start + w.numel()].copy_(w.detach().reshape(-1).abs())
        start += w.numel()
    threshold = magnitudes.kthvalue(count).values.item()
    del magnitudes

    # Everything strictly below the threshold goes; ties at the threshold go in module order until `count` is reached.
    ties_needed = count - sum(int((w.detach().abs().to(dtype) < threshold).sum()) for w in weights)
    for w in weights:
        magnitude = w.detach().abs().to(dtype)
        mask = magnitude < threshold
        if ties_needed > 0:
            ties = (magnitude == threshold).reshape(-1).nonzero().squeeze(1)[:ties_needed]
            mask.view(-1)[ties] = True
            ties_needed -= len(ties)
        w.masked_fill_(mask, 0)
