"""Soft pruning: multiply heads, FFN neurons and layers by masks through forward hooks.

Masks are plain tensors (optionally requiring grad, which makes them the "gates" of Michel et al. 2019), applied
without `head_mask` and without touching the weights, so optimizer state and DDP stay valid while a
[`PruningTrainer`] prunes gradually. A physically pruned model equals the original run with the same masks at 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..architectures import get_adapter
from .structured import head_size, layer_ffn_size, layer_num_heads


class MaskHooks:
    """Forward hooks applying head, neuron and layer masks to a model; remove with `.remove()` or a `with` block.

    Args:
        model (`nn.Module`): A model of a supported architecture.
        head_masks (`Sequence[torch.Tensor]`, *optional*): One tensor per layer of shape `(num_heads,)`; a head's
            context is multiplied by its mask value before the attention output projection.
        ffn_masks (`Sequence[torch.Tensor]`, *optional*): One tensor per layer of shape `(intermediate_size,)`,
            multiplied into the FFN activations before the down-projection.
        layer_mask (`torch.Tensor`, *optional*): Shape `(num_layers,)`; a layer computes `x + m * (layer(x) - x)`,
            so `m = 0` skips it.
    """

    def __init__(
        self,
        model: nn.Module,
        head_masks: Sequence[torch.Tensor] | None = None,
        ffn_masks: Sequence[torch.Tensor] | None = None,
        layer_mask: torch.Tensor | None = None,
    ):
        adapter = get_adapter(model)
        layers = adapter.get_layers(model)
        self.handles = []
        size = head_size(adapter, model)
        for index, layer in enumerate(layers):
            if head_masks is not None and head_masks[index] is not None and layer_num_heads(adapter, layer) > 0:
                mask = head_masks[index]
                if mask.shape != (layer_num_heads(adapter, layer),):
                    raise ValueError(
                        f"head mask for layer {index} has shape {tuple(mask.shape)}; the layer has "
                        f"{layer_num_heads(adapter, layer)} heads."
                    )
                output = adapter.layer_module(layer, "attention_output")
                self.handles.append(output.register_forward_pre_hook(_head_hook(mask, size)))
            if ffn_masks is not None and ffn_masks[index] is not None and layer_ffn_size(adapter, layer) > 0:
                mask = ffn_masks[index]
                if mask.shape != (layer_ffn_size(adapter, layer),):
                    raise ValueError(
                        f"FFN mask for layer {index} has shape {tuple(mask.shape)}; the layer has "
                        f"{layer_ffn_size(adapter, layer)} neurons."
                    )
                output = adapter.layer_module(layer, "ffn_out")
                self.handles.append(output.register_forward_pre_hook(_neuron_hook(mask)))
            if layer_mask is not None:
                self.handles.append(layer.register_forward_hook(_layer_hook(layer_mask, index), with_kwargs=True))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def __enter__(self) -> MaskHooks:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _head_hook(mask: torch.Tensor, size: int):
    def hook(module, args):
        x = args[0]
        shaped = x.view(*x.shape[:-1], -1, size) * mask.to(x.dtype)[:, None]
        return (shaped.view(x.shape),) + tuple(args[1:])

    return hook


def _neuron_hook(mask: torch.Tensor):
    def hook(module, args):
        return (args[0] * mask.to(args[0].dtype),) + tuple(args[1:])

    return hook


def _layer_hook(mask: torch.Tensor, index: int):
    def hook(module, args, kwargs, output):
        hidden_in = args[0] if args else kwargs["hidden_states"]
        hidden_out = output[0] if isinstance(output, tuple) else output
        value = mask[index].to(hidden_out.dtype)
        mixed = hidden_in + value * (hidden_out - hidden_in)
        return (mixed,) + tuple(output[1:]) if isinstance(output, tuple) else mixed

    return hook


def full_masks(model: nn.Module, requires_grad: bool = False, device=None):
    """All-ones head masks, FFN masks and layer mask matching the model's current structure."""
    adapter = get_adapter(model)
    layers = adapter.get_layers(model)
    device = device or next(model.parameters()).device
    heads = [
        torch.ones(layer_num_heads(adapter, layer), device=device, requires_grad=requires_grad) for layer in layers
    ]
    ffn = [torch.ones(layer_ffn_size(adapter, layer), device=device, requires_grad=requires_grad) for layer in layers]
    layer_mask = torch.ones(len(layers), device=device, requires_grad=requires_grad)
    return heads, ffn, layer_mask
