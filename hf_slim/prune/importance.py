"""Importance scores for heads, FFN neurons and layers.

First-order scores (Michel et al. 2019, "Are Sixteen Heads Really Better than One?"): a gate of value 1 multiplies
each head's context / each neuron's activation (inserted with forward hooks, no `head_mask`), and the importance of
a gate is the accumulated absolute gradient of the loss with respect to it. Squared gradients give the diagonal
Fisher information used by Kwon et al. 2022. Layer importance is either block influence (Men et al. 2024,
ShortGPT: `1 - cos(input, output)` of the layer) or the loss increase when the layer is skipped. Magnitude scores
are the weight-norm baseline.

Under `torch.distributed` (e.g. `accelerate launch`), each process scores its own batches and the sums are
all-reduced, so every process gets identical scores.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from ..architectures import get_adapter
from ..errors import HfSlimError
from .masks import MaskHooks, full_masks
from .structured import head_size, layer_ffn_size, layer_num_heads


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _to_device(batch, device):
    if not isinstance(batch, Mapping):  # dict, BatchEncoding, ...
        raise HfSlimError(
            f"Importance scoring expects batches as dicts of tensors (model inputs and 'labels'), got "
            f"{type(batch).__name__}. Use a DataLoader with a data collator, e.g. DataCollatorWithPadding."
        )
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def _batches(dataloader: Iterable, model: nn.Module, max_batches: int | None, desc: str):
    device = _device(model)
    total = None
    if hasattr(dataloader, "__len__"):
        total = len(dataloader) if max_batches is None else min(len(dataloader), max_batches)
    for index, batch in enumerate(tqdm(dataloader, total=total, desc=desc, leave=False)):
        if max_batches is not None and index >= max_batches:
            break
        yield _to_device(batch, device)


def _loss(model: nn.Module, batch: dict) -> torch.Tensor:
    outputs = model(**batch)
    loss = getattr(outputs, "loss", None)
    if loss is None:
        raise HfSlimError(
            f"Importance scoring needs a loss: the batches must carry 'labels' (got keys {sorted(batch)})."
        )
    return loss


def _all_reduce(tensors: list[torch.Tensor]) -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        for tensor in tensors:
            if tensor.numel():
                torch.distributed.all_reduce(tensor)


def _normalise_per_layer(scores: list[torch.Tensor]) -> list[torch.Tensor]:
    # Michel et al.: divide each layer's scores by their L2 norm so layers compare on one scale.
    return [s / s.norm().clamp_min(1e-20) if s.numel() else s for s in scores]


def gate_scores(
    model: nn.Module,
    dataloader: Iterable,
    max_batches: int | None = None,
    square: bool = False,
    layers: bool = False,
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor | None]:
    """Accumulate `|dL/dgate|` (or `(dL/dgate)²` with `square=True`) for every head, FFN neuron (and layer).

    The model runs in eval mode (no dropout) and its own parameters get no gradients; it is restored to its mode.

    Returns:
        `(head_scores, ffn_scores, layer_scores)`: per-layer tensors of shape `(num_heads,)` and
        `(intermediate_size,)`, and a `(num_layers,)` tensor (or `None` unless `layers=True`).
    """
    heads, ffn, layer_gate = full_masks(model, requires_grad=True)
    head_acc = [torch.zeros_like(g, requires_grad=False) for g in heads]
    ffn_acc = [torch.zeros_like(g, requires_grad=False) for g in ffn]
    layer_acc = torch.zeros_like(layer_gate, requires_grad=False)
    gates = [g for g in heads + ffn if g.numel()] + ([layer_gate] if layers else [])
    was_training = model.training
    model.eval()
    seen = 0
    try:
        with MaskHooks(model, heads, ffn, layer_gate if layers else None):
            for batch in _batches(dataloader, model, max_batches, "Scoring importance"):
                loss = _loss(model, batch)
                grads = torch.autograd.grad(loss, gates, allow_unused=True)
                grad_of = {id(g): grad for g, grad in zip(gates, grads, strict=True)}
                for gate, acc in (
                    list(zip(heads, head_acc, strict=True))
                    + list(zip(ffn, ffn_acc, strict=True))
                    + ([(layer_gate, layer_acc)] if layers else [])
                ):
                    grad = grad_of.get(id(gate))
                    if grad is not None:
                        acc += grad.detach().pow(2) if square else grad.detach().abs()
                seen += 1
    finally:
        model.train(was_training)
    if seen == 0:
        raise HfSlimError("Importance scoring got no batches: the dataloader is empty (or max_batches=0).")
    _all_reduce(head_acc + ffn_acc + [layer_acc])
    return head_acc, ffn_acc, layer_acc if layers else None


def head_importance(
    model: nn.Module, dataloader: Iterable, normalize: bool = True, max_batches: int | None = None
) -> list[torch.Tensor]:
    """First-order head importance (Michel et al. 2019): one `(num_heads,)` tensor per layer, higher = keep.

    Args:
        model (`PreTrainedModel`): A supported model; batches must include `labels`.
        dataloader (iterable of dicts): Batches of model inputs and labels.
        normalize (`bool`, defaults to `True`): Divide each layer's scores by their L2 norm.
        max_batches (`int`, *optional*): Stop after this many batches.
    """
    scores = gate_scores(model, dataloader, max_batches=max_batches)[0]
    return _normalise_per_layer(scores) if normalize else scores


def ffn_importance(
    model: nn.Module, dataloader: Iterable, normalize: bool = True, max_batches: int | None = None
) -> list[torch.Tensor]:
    """First-order FFN-neuron importance: one `(intermediate_size,)` tensor per layer, higher = keep."""
    scores = gate_scores(model, dataloader, max_batches=max_batches)[1]
    return _normalise_per_layer(scores) if normalize else scores


LAYER_METHODS = ("block_influence", "loss")


def layer_importance(
    model: nn.Module, dataloader: Iterable, method: str = "block_influence", max_batches: int | None = None
) -> torch.Tensor:
    """Importance of each layer, shape `(num_layers,)`, higher = keep.

    Args:
        method (`str`, defaults to `"block_influence"`): `"block_influence"`: mean `1 - cos(input, output)` of the
            layer over (non-padding) positions, no labels needed; `"loss"`: increase of the loss when the layer is
            skipped (one pass over the data per layer).
    """
    if method not in LAYER_METHODS:
        raise HfSlimError(f"layer_importance method={method!r} is not one of {', '.join(LAYER_METHODS)}.")
    adapter = get_adapter(model)
    layers = adapter.get_layers(model)
    was_training = model.training
    model.eval()
    try:
        if method == "loss":
            return _skip_loss(model, dataloader, len(layers), max_batches)
        sums = torch.zeros(len(layers), device=_device(model), dtype=torch.float64)
        count = torch.zeros((), device=_device(model), dtype=torch.float64)
        captured: dict[int, torch.Tensor] = {}

        def capture(index):
            def hook(module, args, kwargs, output):
                hidden_in = args[0] if args else kwargs["hidden_states"]
                hidden_out = output[0] if isinstance(output, tuple) else output
                captured[index] = 1 - nn.functional.cosine_similarity(hidden_in, hidden_out, dim=-1, eps=1e-8)

            return hook

        handles = [layer.register_forward_hook(capture(i), with_kwargs=True) for i, layer in enumerate(layers)]
        try:
            with torch.no_grad():
                for batch in _batches(dataloader, model, max_batches, "Scoring layers"):
                    inputs = {k: v for k, v in batch.items() if k != "labels"}
                    model(**inputs)
                    seq_len = captured[0].shape[-1]
                    mask = adapter.position_mask(model, inputs, seq_len)
                    mask = torch.ones_like(captured[0]) if mask is None else mask.to(captured[0].dtype)
                    for i in range(len(layers)):
                        sums[i] += (captured[i] * mask).sum().double()
                    count += mask.sum().double()
        finally:
            for handle in handles:
                handle.remove()
        _all_reduce([sums, count])
        if count.item() == 0:
            raise HfSlimError("Importance scoring got no batches: the dataloader is empty (or max_batches=0).")
        return (sums / count).float()
    finally:
        model.train(was_training)


def _skip_loss(model, dataloader, num_layers, max_batches) -> torch.Tensor:
    device = _device(model)
    totals = torch.zeros(num_layers + 1, device=device, dtype=torch.float64)
    batches = 0
    with torch.no_grad():
        for batch in _batches(dataloader, model, max_batches, "Scoring layers"):
            totals[num_layers] += _loss(model, batch).double()
            for i in range(num_layers):
                mask = torch.ones(num_layers, device=device)
                mask[i] = 0
                with MaskHooks(model, layer_mask=mask):
                    totals[i] += _loss(model, batch).double()
            batches += 1
    if batches == 0:
        raise HfSlimError("Importance scoring got no batches: the dataloader is empty (or max_batches=0).")
    _all_reduce([totals])
    return (totals[:num_layers] - totals[num_layers]).float() / batches


def magnitude_importance(model: nn.Module) -> dict[str, list[torch.Tensor] | torch.Tensor]:
    """Weight-magnitude baseline: L2 norm of each head's q/k/v rows and output columns, of each neuron's FFN row and
    column, and of each layer's weights. Returns `{"heads": [...], "ffn": [...], "layers": tensor}`."""
    adapter = get_adapter(model)
    size = head_size(adapter, model)
    heads, ffn, layer_scores = [], [], []
    with torch.no_grad():
        for layer in adapter.get_layers(model):
            n_heads = layer_num_heads(adapter, layer)
            if n_heads:
                total = sum(
                    adapter.layer_module(layer, w).weight.pow(2).view(n_heads, size, -1).sum((1, 2))
                    for w in ("query", "key", "value")
                )
                out = adapter.layer_module(layer, "attention_output").weight
                total = total + out.pow(2).view(out.shape[0], n_heads, size).sum((0, 2))
                heads.append(total.sqrt())
            else:
                heads.append(torch.zeros(0, device=_device(model)))
            if layer_ffn_size(adapter, layer):
                up = adapter.layer_module(layer, "ffn_in").weight.pow(2).sum(1)
                down = adapter.layer_module(layer, "ffn_out").weight.pow(2).sum(0)
                ffn.append((up + down).sqrt())
            else:
                ffn.append(torch.zeros(0, device=_device(model)))
            layer_scores.append(torch.sqrt(sum(p.pow(2).sum() for p in layer.parameters())))
    return {"heads": heads, "ffn": ffn, "layers": torch.stack(layer_scores)}
