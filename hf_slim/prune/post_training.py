"""Post-training structured pruning without retraining (Kwon et al. 2022, "A Fast Post-Training Pruning Framework
for Transformers").

1. Fisher information of head and FFN-neuron gates on a few hundred to a few thousand labelled samples (squared
   gradients of the loss w.r.t. gates inserted with hooks, accumulated per batch: small batches approximate the
   per-sample Fisher better).
2. Mask search under a FLOPs budget: keep the `k` most important heads and the `n` most important neurons
   (globally), choosing the `(k, n)` that fits the budget with the largest total Fisher importance.
3. Optional mask tuning: per layer, a ridge least-squares rescale of the kept heads' and neurons' contributions so
   the pruned sublayer reproduces the unpruned sublayer's output on the calibration data (the scales are folded
   into the output projections).
4. Physical removal with [`prune_heads`] and [`prune_ffn`].
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import torch
from torch import nn

from ..architectures import get_adapter
from ..errors import HfSlimError
from .importance import _batches, gate_scores
from .structured import head_size, layer_ffn_size, layer_num_heads, prune_ffn, prune_heads, pruning_record


def unit_flops(hidden_size: int, head_dim: int, seq_len: int) -> tuple[int, int]:
    """FLOPs per token (2 per multiply-accumulate) of one attention head and one FFN neuron.

    A head: q/k/v/o projections `4 * hidden * head_dim` MACs, scores and weighted sum `2 * seq_len * head_dim`.
    A neuron: up and down projections `2 * hidden` MACs.
    """
    return 2 * (4 * hidden_size * head_dim + 2 * seq_len * head_dim), 2 * (2 * hidden_size)


def _sequence_length(model: nn.Module, dataloader: Iterable, max_batches: int | None) -> int:
    adapter = get_adapter(model)
    first = adapter.get_layers(model)[0]
    lengths = []

    def hook(module, args, kwargs, output):
        hidden = args[0] if args else kwargs["hidden_states"]
        lengths.append(hidden.shape[1])

    handle = first.register_forward_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            for batch in _batches(dataloader, model, 1 if max_batches is None else min(1, max_batches), "Measuring"):
                model(**{k: v for k, v in batch.items() if k != "labels"})
    finally:
        handle.remove()
    if not lengths:
        raise HfSlimError("prune_to_target got no batches: the dataloader is empty.")
    return lengths[0]


def search_masks(
    head_scores: list[torch.Tensor],
    ffn_scores: list[torch.Tensor],
    head_cost: float,
    neuron_cost: float,
    budget: float,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Kwon et al.'s search: keep the top-`k` heads and top-`n` neurons (by score, globally) that fit `budget`,
    choosing `k` (and the largest `n` it allows) to maximise the kept score. Returns boolean keep-masks per layer."""
    heads = torch.cat([s.flatten() for s in head_scores]) if head_scores else torch.zeros(0)
    neurons = torch.cat([s.flatten() for s in ffn_scores]) if ffn_scores else torch.zeros(0)
    head_order = torch.argsort(heads, descending=True)
    neuron_order = torch.argsort(neurons, descending=True)
    head_cum = torch.cat([heads.new_zeros(1), heads[head_order].double().cumsum(0)])
    neuron_cum = torch.cat([neurons.new_zeros(1), neurons[neuron_order].double().cumsum(0)])
    best = None
    for k in range(len(heads) + 1):
        remaining = budget - k * head_cost
        if remaining < 0:
            break
        n = min(len(neurons), int(remaining // neuron_cost))
        score = head_cum[k].item() + neuron_cum[n].item()
        if best is None or score > best[0]:
            best = (score, k, n)
    if best is None:
        raise HfSlimError("The FLOPs budget is too small to keep anything; raise flops_ratio.")
    _, k, n = best
    head_keep = torch.zeros(len(heads), dtype=torch.bool)
    head_keep[head_order[:k]] = True
    neuron_keep = torch.zeros(len(neurons), dtype=torch.bool)
    neuron_keep[neuron_order[:n]] = True
    return list(head_keep.split([s.numel() for s in head_scores])), list(
        neuron_keep.split([s.numel() for s in ffn_scores])
    )


def _solve_scales(gram: torch.Tensor, keep: torch.Tensor, ridge: float) -> torch.Tensor:
    kept = keep.nonzero().flatten()
    a = gram[kept][:, kept]
    b = gram[kept].sum(1)
    a = a + ridge * a.diagonal().mean().clamp_min(1e-12) * torch.eye(len(kept), dtype=a.dtype)
    scales = torch.linalg.solve(a, b)
    return scales.clamp(-10, 10)


def prune_to_target(
    model: nn.Module,
    dataloader: Iterable,
    flops_ratio: float = 0.5,
    max_batches: int | None = None,
    mask_tuning: bool = True,
    ridge: float = 1e-4,
) -> nn.Module:
    """Prune heads and FFN neurons after training so the encoder needs `flops_ratio` of its FLOPs, without retraining.

    Args:
        model (`PreTrainedModel`): A trained classification model of a supported architecture.
        dataloader (iterable of dicts): Labelled calibration batches (a few hundred to a few thousand samples;
            batch size 1-8 gives a better Fisher estimate).
        flops_ratio (`float`, defaults to 0.5): Share of the encoder layers' FLOPs (attention heads + FFN, at the
            calibration sequence length) to keep, in (0, 1].
        max_batches (`int`, *optional*): Use at most this many batches.
        mask_tuning (`bool`, defaults to `True`): Rescale the kept heads/neurons of each layer by ridge least squares
            so the layer reproduces its unpruned output on the calibration data.
        ridge (`float`, defaults to 1e-4): Relative ridge regulariser of the least-squares rescale.

    Returns:
        The same model, physically pruned; `model.config.hf_slim["history"][-1]` reports the FLOPs kept, the units
        removed and the time taken.
    """
    if isinstance(flops_ratio, bool) or not isinstance(flops_ratio, (int, float)) or not 0 < flops_ratio <= 1:
        raise HfSlimError(f"flops_ratio must be in (0, 1], got {flops_ratio!r}; e.g. 0.5 keeps half of the FLOPs.")
    start = time.perf_counter()
    adapter = get_adapter(model)
    layers = adapter.get_layers(model)
    hidden = adapter.hidden_size(model.config)
    size = head_size(adapter, model)
    seq_len = _sequence_length(model, dataloader, max_batches)
    head_cost, neuron_cost = unit_flops(hidden, size, seq_len)
    heads_now = [layer_num_heads(adapter, layer) for layer in layers]
    neurons_now = [layer_ffn_size(adapter, layer) for layer in layers]
    total = sum(heads_now) * head_cost + sum(neurons_now) * neuron_cost
    head_fisher, ffn_fisher, _ = gate_scores(model, dataloader, max_batches=max_batches, square=True)
    head_fisher = [s.cpu() for s in head_fisher]
    ffn_fisher = [s.cpu() for s in ffn_fisher]
    head_keep, neuron_keep = search_masks(head_fisher, ffn_fisher, head_cost, neuron_cost, flops_ratio * total)

    if mask_tuning:
        was_training = model.training
        model.eval()
        try:
            # Gram matrices of every unit's contribution on the unmasked model: the least-squares target is the
            # full sublayer output, reproduced from the kept units only.
            grams = _collect_grams(model, dataloader, head_keep, neuron_keep, max_batches)
            with torch.no_grad():
                for (kind, index), gram in grams.items():
                    keep = head_keep[index] if kind == "heads" else neuron_keep[index]
                    scales = _solve_scales(gram, keep, ridge)
                    layer = layers[index]
                    if kind == "heads":
                        output = adapter.layer_module(layer, "attention_output")
                        weight = output.weight.view(output.out_features, heads_now[index], size)
                        factors = torch.zeros(heads_now[index], dtype=torch.float64)
                        factors[keep.nonzero().flatten()] = scales
                        weight.mul_(factors.to(weight)[None, :, None])
                    else:
                        output = adapter.layer_module(layer, "ffn_out")
                        factors = torch.zeros(neurons_now[index], dtype=torch.float64)
                        factors[keep.nonzero().flatten()] = scales
                        output.weight.mul_(factors.to(output.weight)[None, :])
        finally:
            model.train(was_training)

    prune_heads(model, {i: (~k).nonzero().flatten().tolist() for i, k in enumerate(head_keep) if (~k).any()})
    prune_ffn(model, {i: (~k).nonzero().flatten().tolist() for i, k in enumerate(neuron_keep) if (~k).any()})
    kept = sum(int(k.sum()) for k in head_keep) * head_cost + sum(int(k.sum()) for k in neuron_keep) * neuron_cost
    record = pruning_record(model)
    record["history"].append(
        {
            "op": "prune_to_target",
            "flops_ratio_target": flops_ratio,
            "flops_ratio_achieved": round(kept / total, 6) if total else 1.0,
            "sequence_length": seq_len,
            "heads_kept": [int(k.sum()) for k in head_keep],
            "neurons_kept": [int(k.sum()) for k in neuron_keep],
            "mask_tuning": mask_tuning,
            "seconds": round(time.perf_counter() - start, 3),
        }
    )
    model.config.hf_slim = record
    return model


def _collect_grams(model, dataloader, head_keep, neuron_keep, max_batches):
    """Gram matrices of each unit's contribution to its sublayer output, on the unmasked model."""
    adapter = get_adapter(model)
    layers = adapter.get_layers(model)
    size = head_size(adapter, model)
    grams: dict[tuple[str, int], torch.Tensor] = {}
    handles = []

    def head_hook(index, output):
        def hook(module, args):
            ctx = args[0].detach().float()
            heads = ctx.shape[-1] // size
            ctx = ctx.reshape(-1, heads, size)
            weight = output.weight.detach().float().view(output.out_features, heads, size)
            contrib = torch.einsum("thd,ohd->tho", ctx, weight)  # each head's share of the sublayer output
            key = ("heads", index)
            grams[key] = grams.get(key, 0) + torch.einsum("tho,tgo->hg", contrib, contrib).double().cpu()

        return hook

    def neuron_hook(index, output):
        def hook(module, args):
            # <contrib_i, contrib_j> = act_i act_j <w_i, w_j>: accumulate the activations' Gram matrix here and
            # multiply by the (constant) weight Gram matrix once at the end.
            act = args[0].detach().reshape(-1, args[0].shape[-1]).float()
            key = ("ffn", index)
            grams[key] = grams.get(key, 0) + (act.T @ act).double().cpu()

        return hook

    for index, layer in enumerate(layers):
        if layer_num_heads(adapter, layer) and head_keep[index].any() and not head_keep[index].all():
            output = adapter.layer_module(layer, "attention_output")
            handles.append(output.register_forward_pre_hook(head_hook(index, output)))
        if layer_ffn_size(adapter, layer) and neuron_keep[index].any() and not neuron_keep[index].all():
            output = adapter.layer_module(layer, "ffn_out")
            handles.append(output.register_forward_pre_hook(neuron_hook(index, output)))
    try:
        with torch.no_grad():
            for batch in _batches(dataloader, model, max_batches, "Mask tuning"):
                model(**{k: v for k, v in batch.items() if k != "labels"})
    finally:
        for handle in handles:
            handle.remove()
    for (kind, index), gram in grams.items():
        if kind == "ffn":
            weight = adapter.layer_module(layers[index], "ffn_out").weight.detach().double().cpu()
            grams[(kind, index)] = gram * (weight.T @ weight)
    return grams
