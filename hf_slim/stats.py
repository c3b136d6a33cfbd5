"""How big and how costly a model is: parameters, size on disk, structure and analytic FLOPs.

[`model_stats`] describes a model (pruned or not) in one JSON-serialisable dict, so that a compression run can report
"before" and "after" side by side. Structure comes from the architecture adapter, so pruned models with different
head counts or FFN widths per layer, 0-head layers and dropped layers are all described correctly.
"""

from __future__ import annotations

import numbers
import os
import tempfile
from typing import Any

import torch
from torch import nn

from .architectures import get_adapter
from .errors import HfSlimError

PARTS = ("embeddings", "layers", "head", "other")


def parameter_part(model: nn.Module, name: str) -> str:
    """Which part of `model` the parameter or module called `name` (as in `named_parameters`) belongs to.

    Returns one of:

    - `"layers"`: inside the transformer layers (the adapter's layer list).
    - `"head"`: the task head, i.e. everything outside the base model (`classifier`, DistilBERT's `pre_classifier`,
      Wav2Vec2's `projector` and `layer_weights`), plus the base model's pooler (BERT's `pooler`).
    - `"embeddings"`: the input side of the base model: modules whose name contains `embed` (token, position and
      patch embeddings, Wav2Vec2's positional convolution) and audio front ends (`feature_extractor`,
      `feature_projection`).
    - `"other"`: whatever remains in the base model (final layer norms, for instance).

    The embedding and pooler rules follow transformers' naming conventions rather than per-architecture tables.
    """
    adapter = get_adapter(model)
    layers_prefix = adapter.layers_prefix(model)
    base = adapter.base_model(model)
    base_prefix = getattr(model, "base_model_prefix", "") if base is not model else ""
    if name == layers_prefix or name.startswith(layers_prefix + "."):
        return "layers"
    if base_prefix:
        if name != base_prefix and not name.startswith(base_prefix + "."):
            return "head"
        name = name[len(base_prefix) + 1 :]
    first = name.split(".")[0]
    if "pooler" in first:
        return "head"
    if "embed" in name or first.startswith("feature_"):
        return "embeddings"
    return "other"


def size_on_disk(path: str | os.PathLike) -> int:
    """Size in bytes of a file, or the total size of all files under a folder (recursively).

    Args:
        path (`str` or `os.PathLike`): A file or a folder, e.g. the output of `save_pretrained`.

    Returns:
        `int`: The number of bytes.
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        return os.path.getsize(path)
    if not os.path.isdir(path):
        raise HfSlimError(f"size_on_disk: {path!r} is neither a file nor a folder; pass an existing path.")
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            file = os.path.join(root, name)
            if not os.path.islink(file):
                total += os.path.getsize(file)
    return total


def model_stats(
    model: nn.Module, example_inputs: dict[str, torch.Tensor] | None = None, seq_len: int | None = None
) -> dict[str, Any]:
    """Parameters, size on disk, structure and analytic FLOPs of a model, as a JSON-serialisable dict.

    FLOPs are counted analytically for one example (one sequence) and one forward pass, with a multiply-accumulate
    counted as 2 FLOPs. Per transformer layer and per token of the encoder's sequence (`H` the hidden size, `n` the
    layer's remaining heads, `d` the head size, `f` the layer's FFN width, `s` the sequence length):

    - query, key, value and output projections: `2 * 4 * H * n * d`;
    - attention scores and the weighted sum of values: `2 * 2 * s * n * d`;
    - feed-forward up and down projections: `2 * 2 * H * f`.

    A layer's FLOPs are this times `s`. The head adds `2 * in * out` for each of its `nn.Linear` layers, counted once
    per example, as if applied to the pooled representation (Wav2Vec2/HuBERT's `projector` actually runs on every
    frame before pooling, so it is under-counted there; it is tiny next to the layers). Not counted: embeddings and
    input front ends (convolutional feature extractors, patch embeddings, feature projections, positional
    convolutions), biases, layer norms, softmax and activations.

    Args:
        model (`nn.Module`):
            A model of a supported architecture, pruned or not.
        example_inputs (`dict[str, torch.Tensor]`, *optional*):
            A batch the model accepts (e.g. `{"input_ids": ..., "attention_mask": ...}` or `{"pixel_values": ...}`).
            The model is run on it once, with `output_hidden_states=True`, to read the encoder's sequence length
            (tokens, patches plus special tokens, or audio frames) from the last hidden state. The batch size does
            not matter: FLOPs are per example.
        seq_len (`int`, *optional*):
            The encoder's sequence length, instead of `example_inputs`. With neither, `flops` is `None`.

    Returns:
        `dict`: with keys

        - `num_parameters` (`int`): unique parameters (`sum(p.numel() for p in model.parameters())`);
        - `parameters` (`dict`): that total split into `embeddings`, `layers`, `head` and `other` (see
          [`parameter_part`]);
        - `layer_parameters` (`list[int]`): parameters of each transformer layer;
        - `size_on_disk` (`int`): bytes of the `*.safetensors` files written by `save_pretrained` (measured in a
          temporary folder); `size_on_disk_method` says `"safetensors"`, or `"state_dict"` when the model cannot be
          saved that way and the size is the sum of its state-dict tensors' bytes (without the small file header);
        - `num_layers`, `hidden_size`, `head_size` (`int`), `num_heads` and `intermediate_sizes` (`list[int]`, per
          layer; 0 for a layer whose heads or neurons were all removed);
        - `seq_len` (`int` or `None`);
        - `flops` (`dict` or `None`): `per_layer` (`list[int]`), `layers`, `head` and `total` (`int`).
    """
    # Imported here: hf_slim.prune imports this module (for `parameter_part`), so a top-level import would be circular.
    from .prune.structured import head_size, layer_ffn_size, layer_num_heads

    adapter = get_adapter(model)
    if seq_len is not None and example_inputs is not None:
        raise HfSlimError("model_stats: pass either seq_len or example_inputs, not both.")
    if seq_len is not None:
        if isinstance(seq_len, bool) or not isinstance(seq_len, numbers.Integral) or seq_len < 1:
            raise HfSlimError(f"model_stats: seq_len must be a positive integer, got {seq_len!r}.")
        seq_len = int(seq_len)
    elif example_inputs is not None:
        seq_len = _sequence_length(model, example_inputs)

    layers = adapter.get_layers(model)
    hidden = adapter.hidden_size(model.config)
    size = head_size(adapter, model)
    heads = [layer_num_heads(adapter, layer) for layer in layers]
    widths = [layer_ffn_size(adapter, layer) for layer in layers]

    parts = dict.fromkeys(PARTS, 0)
    for name, param in model.named_parameters():
        parts[parameter_part(model, name)] += param.numel()
    disk, method = _measure_size(model)

    flops = None
    if seq_len is not None:
        per_layer = [
            seq_len * (2 * 4 * hidden * n * size + 2 * 2 * seq_len * n * size + 2 * 2 * hidden * f)
            for n, f in zip(heads, widths, strict=True)
        ]
        head = sum(
            2 * module.in_features * module.out_features
            for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and parameter_part(model, name) == "head"
        )
        flops = {"per_layer": per_layer, "layers": sum(per_layer), "head": head, "total": sum(per_layer) + head}

    return {
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "parameters": parts,
        "layer_parameters": [sum(p.numel() for p in layer.parameters()) for layer in layers],
        "size_on_disk": disk,
        "size_on_disk_method": method,
        "num_layers": len(layers),
        "hidden_size": hidden,
        "head_size": size,
        "num_heads": heads,
        "intermediate_sizes": widths,
        "seq_len": seq_len,
        "flops": flops,
    }


def _sequence_length(model: nn.Module, inputs: dict[str, torch.Tensor]) -> int:
    if not isinstance(inputs, dict) or not inputs:
        raise HfSlimError(
            f"model_stats: example_inputs must be a non-empty dict of tensors such as {{'input_ids': ...}}, got "
            f"{type(inputs).__name__}."
        )
    device = next(model.parameters()).device
    inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            outputs = model(**inputs, output_hidden_states=True)
    finally:
        model.train(was_training)
    hidden_states = getattr(outputs, "hidden_states", None)
    if not hidden_states:
        raise HfSlimError(
            f"model_stats: {type(model).__name__} returned no hidden_states with output_hidden_states=True; pass "
            "seq_len= instead of example_inputs."
        )
    return int(hidden_states[-1].shape[1])


def _measure_size(model: nn.Module) -> tuple[int, str]:
    if hasattr(model, "save_pretrained"):
        with tempfile.TemporaryDirectory(prefix="hf_slim_size-") as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            files = [os.path.join(tmp, f) for f in os.listdir(tmp) if f.endswith(".safetensors")]
            if files:
                return sum(os.path.getsize(f) for f in files), "safetensors"
    # Shared tensors (tied weights) are stored once; count each storage once.
    seen, total = set(), 0
    for tensor in model.state_dict().values():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tensor.numel())
        if key not in seen:
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return total, "state_dict"
