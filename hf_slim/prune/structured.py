"""Physical structured pruning: remove attention heads, FFN neurons and whole layers.

Nothing here uses `prune_heads`, `head_mask` or `config.pruned_heads` from transformers (removed in v5): the
projections are sliced by hand through the architecture adapter, and the resulting structure is recorded in
`config.hf_slim` so that [`hf_slim.from_pretrained`] can rebuild it. Where stock transformers 4.x can represent the
result, the config is also written so that plain `AutoModelFor*.from_pretrained` reloads it.

Indices always refer to the model as it is now: head `h` of layer `l` is the `h`-th remaining head of the `l`-th
remaining layer.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from ..architectures import ArchitectureAdapter, get_adapter
from ..errors import HfSlimError

CONFIG_KEY = "hf_slim"
FORMAT_VERSION = 1


# -- stand-ins for fully removed blocks ----------------------------------------------------------------------------
class BiasOnly(nn.Module):
    """What a linear layer with zero inputs computes: its bias (or zeros), broadcast over the leading dimensions."""

    def __init__(self, out_features: int, bias: torch.Tensor | None):
        super().__init__()
        self.out_features = out_features
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (*x.shape[:-1], self.out_features)
        if self.bias is None:
            return x.new_zeros(shape)
        return self.bias.to(x.dtype).expand(shape)


class ZeroWidth(nn.Module):
    """A linear layer with zero outputs: an empty feature dimension."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros((*x.shape[:-1], 0))


class EmptyAttention(nn.Module):
    """Stand-in for an attention module whose heads were all removed.

    It returns what the original would with every head masked: an empty context (or, when the output projection is
    inside the attention module, that projection's bias), and attention probabilities with zero heads.
    """

    def __init__(self, num_outputs: int | None, output_name: str | None = None, output: nn.Module | None = None):
        nn.Module.__init__(self)  # not super(): the stand-in may subclass the original attention class (see below)
        self.num_outputs = num_outputs
        self.output_name = output_name
        if output_name is not None:
            self.add_module(output_name, output)
        self.num_heads = 0

    def forward(self, *args, **kwargs):
        hidden = args[0] if args else kwargs.get("hidden_states", kwargs.get("query"))
        if self.output_name is not None:
            out = getattr(self, self.output_name)(hidden.new_zeros((*hidden.shape[:-1], 0)))
        else:
            out = hidden.new_zeros((*hidden.shape[:-1], 0))
        count = self.num_outputs or (2 if kwargs.get("output_attentions") else 1)
        if count == 1:
            return (out,)
        # An attention map with zero heads (not None: transformers' output recorders skip None, which would shift
        # `outputs.attentions` so that entry i no longer belongs to layer i).
        batch, length = hidden.shape[0], hidden.shape[1]
        weights = hidden.new_zeros((batch, 0, length, length))
        return (out, weights) + (None,) * (count - 2)


_EMPTY_CLASSES: dict[type, type] = {}


def _empty_attention_for(original: nn.Module, *args) -> EmptyAttention:
    """An [`EmptyAttention`] that is also an instance of the original attention class, so that transformers' output
    recorders (which collect attention maps by module class, e.g. for ViT) still give this layer its `None` entry."""
    cls = type(original)
    if isinstance(original, EmptyAttention):
        cls = next(c for c in cls.__mro__[1:] if not issubclass(c, EmptyAttention))
    if cls not in _EMPTY_CLASSES:
        _EMPTY_CLASSES[cls] = type(f"Empty{cls.__name__}", (EmptyAttention, cls), {"__module__": __name__})
    return _EMPTY_CLASSES[cls](*args)


# -- slicing helpers -------------------------------------------------------------------------------------------------
def _slice_linear(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Module:
    """A new Linear keeping `index` of the outputs (dim=0) or inputs (dim=1); stand-ins when nothing is kept."""
    if len(index) == 0:
        return ZeroWidth() if dim == 0 else BiasOnly(linear.out_features, linear.bias)
    index = index.to(linear.weight.device)
    weight = linear.weight.index_select(dim, index).detach().clone()
    bias = None
    if linear.bias is not None:
        bias = linear.bias.detach().clone() if dim == 1 else linear.bias.index_select(0, index).detach().clone()
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype)
    new.weight = nn.Parameter(weight, requires_grad=linear.weight.requires_grad)
    if bias is not None:
        new.bias = nn.Parameter(bias, requires_grad=linear.bias.requires_grad)
    return new


def head_size(adapter: ArchitectureAdapter, model: nn.Module) -> int:
    """Size of one attention head (constant across pruning)."""
    return adapter.hidden_size(model.config) // adapter.num_heads(model.config)


def layer_num_heads(adapter: ArchitectureAdapter, layer: nn.Module) -> int:
    attention = adapter.layer_module(layer, "attention")
    if isinstance(attention, EmptyAttention):
        return 0
    return int(getattr(attention, adapter.heads_attr))


def layer_ffn_size(adapter: ArchitectureAdapter, layer: nn.Module) -> int:
    ffn_in = adapter.layer_module(layer, "ffn_in")
    return 0 if isinstance(ffn_in, ZeroWidth) else int(ffn_in.out_features)


# -- the structure record --------------------------------------------------------------------------------------------
def pruning_record(model: nn.Module) -> dict:
    """The `config.hf_slim` record of `model`, creating it (describing the unpruned model) if absent."""
    adapter = get_adapter(model)
    record = getattr(model.config, CONFIG_KEY, None)
    if record:
        return record
    layers = adapter.get_layers(model)
    num_layers = len(layers)
    heads = adapter.num_heads(model.config)
    ffn = adapter.intermediate_size(model.config)
    # A model may arrive already pruned by transformers' own prune_heads (config.pruned_heads, original indices).
    stock_pruned = {int(k): set(v) for k, v in (getattr(model.config, "pruned_heads", None) or {}).items()}
    heads_kept = []
    for index, layer in enumerate(layers):
        kept = [h for h in range(heads) if h not in stock_pruned.get(index, set())]
        if len(kept) != layer_num_heads(adapter, layer):
            kept = list(range(layer_num_heads(adapter, layer)))
        heads_kept.append(kept)
    record = {
        "format_version": FORMAT_VERSION,
        "original": {"num_layers": num_layers, "num_heads": heads, "intermediate_size": ffn},
        "source_layers": list(range(num_layers)),
        "heads_kept": heads_kept,
        "intermediate_sizes": [layer_ffn_size(adapter, layer) for layer in layers],
        "history": [],
    }
    setattr(model.config, CONFIG_KEY, record)
    return record


def _sync_config(model: nn.Module, adapter: ArchitectureAdapter, record: dict) -> None:
    """Write the structure to the config, in hf_slim's record and, where stock transformers can read it, natively."""
    layers = adapter.get_layers(model)
    record["num_heads"] = [layer_num_heads(adapter, layer) for layer in layers]
    record["intermediate_sizes"] = [layer_ffn_size(adapter, layer) for layer in layers]
    config = model.config
    setattr(config, adapter.num_layers_attr, len(layers))
    original_heads = record["original"]["num_heads"]
    any_heads_pruned = any(n != original_heads for n in record["num_heads"])
    stock_heads = adapter.stock_pruned_heads and all(n > 0 for n in record["num_heads"])
    if any_heads_pruned and stock_heads:
        config.pruned_heads = {
            i: sorted(set(range(original_heads)) - set(kept))
            for i, kept in enumerate(record["heads_kept"])
            if len(kept) < original_heads
        }
    elif hasattr(config, "pruned_heads"):
        config.pruned_heads = {}
    widths = set(record["intermediate_sizes"])
    if len(widths) == 1 and 0 not in widths:
        setattr(config, adapter.intermediate_size_attr, widths.pop())
    else:
        setattr(config, adapter.intermediate_size_attr, record["original"]["intermediate_size"])
    record["stock_loadable"] = bool(
        (not any_heads_pruned or stock_heads)
        and len(set(record["intermediate_sizes"])) == 1
        and 0 not in record["intermediate_sizes"]
    )
    setattr(config, CONFIG_KEY, record)


# -- validation ------------------------------------------------------------------------------------------------------
def _check_layer(layer: object, num_layers: int, what: str) -> int:
    if isinstance(layer, torch.Tensor) and (layer.dim() != 0 or layer.is_floating_point() or layer.is_complex()):
        raise HfSlimError(f"{what}: layer {layer!r} is not an integer layer index.")
    if isinstance(layer, bool) or not hasattr(layer, "__index__"):
        raise HfSlimError(f"{what}: layer {layer!r} is not an integer layer index.")
    layer = int(layer.__index__())
    if not 0 <= layer < num_layers:
        raise HfSlimError(
            f"{what}: layer {layer} does not exist; the model has {num_layers} layers (0 to {num_layers - 1})."
        )
    return layer


def _normalise(spec: Mapping, num_layers: int, sizes: list[int], unit: str, what: str) -> dict[int, list[int]]:
    if not isinstance(spec, Mapping):
        raise HfSlimError(f"{what} expects a dict {{layer: [{unit}, ...]}}, got {type(spec).__name__}.")
    result: dict[int, list[int]] = {}
    for raw_layer, indices in spec.items():
        layer = _check_layer(raw_layer, num_layers, what)
        if isinstance(indices, torch.Tensor):
            indices = indices.tolist()
        if not isinstance(indices, Iterable) or isinstance(indices, (str, bytes)):
            raise HfSlimError(f"{what}: layer {layer} must map to a list of {unit} indices, got {indices!r}.")
        indices = list(indices)
        if any(isinstance(i, bool) or not hasattr(i, "__index__") for i in indices):
            raise HfSlimError(f"{what}: layer {layer} has non-integer {unit} indices {indices!r}.")
        indices = sorted({int(i) for i in indices})
        bad = [i for i in indices if not 0 <= i < sizes[layer]]
        if bad:
            raise HfSlimError(
                f"{what}: layer {layer} has {sizes[layer]} {unit}s; cannot remove {unit}s {bad} "
                f"(valid indices 0 to {sizes[layer] - 1})."
            )
        if indices:
            result[layer] = sorted(set(result.get(layer, [])) | set(indices))
    return result


# -- public API ------------------------------------------------------------------------------------------------------
def prune_heads(model: nn.Module, heads: Mapping[int, Iterable[int]]) -> nn.Module:
    """Remove attention heads in place: `{layer: [head, ...]}`, different counts per layer allowed.

    The query/key/value projections lose the heads' output rows and the attention output projection their input
    columns; the attention module's head count and inner size are updated. Removing every head of a layer replaces
    its attention computation by an [`EmptyAttention`] that returns what the layer computed with all heads masked
    (the output projection's bias). Indices are checked before anything changes.

    Returns the same model, with `config` describing the new structure.
    """
    adapter = get_adapter(model)
    layers = adapter.get_layers(model)
    sizes = [layer_num_heads(adapter, layer) for layer in layers]
    spec = _normalise(heads, len(layers), sizes, "head", "prune_heads")
    record = pruning_record(model)
    size = head_size(adapter, model)
    for index, remove in spec.items():
        layer = layers[index]
        keep = [h for h in range(sizes[index]) if h not in remove]
        _keep_heads(adapter, layer, keep, size)
        record["heads_kept"][index] = [record["heads_kept"][index][h] for h in keep]
    record["history"].append(
        {"op": "prune_heads", "heads": {str(record["source_layers"][i]): v for i, v in spec.items()}}
    )
    _sync_config(model, adapter, record)
    return model


def _keep_heads(adapter: ArchitectureAdapter, layer: nn.Module, keep: list[int], size: int) -> None:
    attention = adapter.layer_module(layer, "attention")
    index = torch.tensor([h * size + i for h in keep for i in range(size)], dtype=torch.long)
    if not keep:
        output_path = adapter.attention_output
        inside = output_path.startswith(adapter.attention + ".")
        output = _slice_linear(adapter.layer_module(layer, "attention_output"), index, dim=1)
        if inside:
            name = output_path[len(adapter.attention) + 1 :]
            empty = _empty_attention_for(attention, adapter.attention_outputs, name, output)
            adapter.set_layer_module(layer, "attention", empty)
        else:
            adapter.set_layer_module(layer, "attention", _empty_attention_for(attention, adapter.attention_outputs))
            adapter.set_layer_module(layer, "attention_output", output)
        return
    for which in ("query", "key", "value"):
        adapter.set_layer_module(layer, which, _slice_linear(adapter.layer_module(layer, which), index, dim=0))
    output = adapter.layer_module(layer, "attention_output")
    adapter.set_layer_module(layer, "attention_output", _slice_linear(output, index, dim=1))
    setattr(attention, adapter.heads_attr, len(keep))
    if adapter.inner_size_attr:
        setattr(attention, adapter.inner_size_attr, len(keep) * size)
    if hasattr(attention, "pruned_heads"):
        attention.pruned_heads = set()  # hf_slim indices are relative to the current heads


def prune_ffn(model: nn.Module, neurons: Mapping[int, Iterable[int]]) -> nn.Module:
    """Remove feed-forward (intermediate) neurons in place: `{layer: [neuron, ...]}`.

    The FFN up-projection loses the neurons' output rows and the down-projection their input columns. Removing every
    neuron of a layer leaves the down-projection's bias, which is what the layer computed with all neurons masked.
    """
    adapter = get_adapter(model)
    layers = adapter.get_layers(model)
    sizes = [layer_ffn_size(adapter, layer) for layer in layers]
    spec = _normalise(neurons, len(layers), sizes, "neuron", "prune_ffn")
    record = pruning_record(model)
    for index, remove in spec.items():
        keep = torch.tensor([n for n in range(sizes[index]) if n not in set(remove)], dtype=torch.long)
        _keep_neurons(adapter, layers[index], keep)
    record["history"].append(
        {"op": "prune_ffn", "neurons": {str(record["source_layers"][i]): len(v) for i, v in spec.items()}}
    )
    _sync_config(model, adapter, record)
    return model


def _keep_neurons(adapter: ArchitectureAdapter, layer: nn.Module, keep: torch.Tensor) -> None:
    adapter.set_layer_module(layer, "ffn_in", _slice_linear(adapter.layer_module(layer, "ffn_in"), keep, dim=0))
    adapter.set_layer_module(layer, "ffn_out", _slice_linear(adapter.layer_module(layer, "ffn_out"), keep, dim=1))


def drop_layers(model: nn.Module, layers: Iterable[int]) -> nn.Module:
    """Remove whole transformer layers in place ("network cropping"); at least one layer must remain."""
    adapter = get_adapter(model)
    module_list = adapter.get_layers(model)
    num_layers = len(module_list)
    if isinstance(layers, int) or not isinstance(layers, Iterable):
        raise HfSlimError(f"drop_layers expects a list of layer indices, got {layers!r}.")
    drop = sorted({_check_layer(layer, num_layers, "drop_layers") for layer in layers})
    if len(drop) == num_layers:
        raise HfSlimError(f"drop_layers: cannot remove all {num_layers} layers {drop}; keep at least one layer.")
    if not drop:
        return model
    record = pruning_record(model)
    keep = [i for i in range(num_layers) if i not in drop]
    adapter.set_layers(model, nn.ModuleList([module_list[i] for i in keep]))
    for name in adapter.per_layer_parameters:
        param = getattr(model, name, None)
        if isinstance(param, nn.Parameter) and param.dim() == 1 and param.shape[0] == num_layers + 1:
            setattr(model, name, nn.Parameter(_merge_state_weights(param.detach(), drop)))
    record["history"].append({"op": "drop_layers", "layers": [record["source_layers"][i] for i in drop]})
    for key in ("source_layers", "heads_kept", "intermediate_sizes"):
        record[key] = [record[key][i] for i in keep]
    _sync_config(model, adapter, record)
    return model


def _merge_state_weights(weights: torch.Tensor, drop: list[int]) -> torch.Tensor:
    """Softmax weights over hidden states (Wav2Vec2's weighted layer sum) after removing layers in `drop`.

    A removed layer passed its input through, so its output state equalled the state before it: its weight joins
    that state's (a log-sum-exp of logits), and the weighted sum is unchanged.
    """
    groups: list[list[int]] = [[0]]
    for layer in range(len(weights) - 1):
        if layer in drop:
            groups[-1].append(layer + 1)
        else:
            groups.append([layer + 1])
    return torch.stack([torch.logsumexp(weights[group], dim=0) for group in groups]).clone()


def apply_structure(model: nn.Module, record: dict) -> nn.Module:
    """Give a freshly built model the structure described by a `config.hf_slim` record (weights are not copied).

    Used by [`hf_slim.from_pretrained`]; the model must have been built with the record's layer count.
    """
    adapter = get_adapter(model)
    layers = adapter.get_layers(model)
    num_heads, widths = record.get("num_heads"), record.get("intermediate_sizes")
    if num_heads is None or widths is None or len(num_heads) != len(layers) or len(widths) != len(layers):
        raise HfSlimError(
            f"config.{CONFIG_KEY} does not describe this model's {len(layers)} layers (num_heads={num_heads}, "
            f"intermediate_sizes={widths}); the checkpoint's config.json was edited or comes from another model."
        )
    for index, (layer, heads, width) in enumerate(zip(layers, num_heads, widths, strict=True)):
        built_heads, built_width = layer_num_heads(adapter, layer), layer_ffn_size(adapter, layer)
        for name, value, limit in (("num_heads", heads, built_heads), ("intermediate_sizes", width, built_width)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
                raise HfSlimError(
                    f"config.{CONFIG_KEY}[{name!r}][{index}]={value!r} is impossible: the layer is built "
                    f"with {limit}; "
                    "the checkpoint's config.json was edited or comes from another model."
                )
    size = head_size(adapter, model)
    for layer, heads, width in zip(layers, num_heads, widths, strict=True):
        if heads != layer_num_heads(adapter, layer):
            _keep_heads(adapter, layer, list(range(heads)), size)
        if width != layer_ffn_size(adapter, layer):
            _keep_neurons(adapter, layer, torch.arange(width))
    setattr(model.config, CONFIG_KEY, copy.deepcopy(record))
    return model
