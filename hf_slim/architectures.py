"""The one registry of architecture knowledge.

Everything hf_slim needs to know about a model family (where the transformer layers are, the names of the attention
projections and feed-forward layers, how to turn an attention mask into a per-position mask) lives in one
[`ArchitectureAdapter`] per family, registered with [`register_adapter`]. Distillation, student initialisation and
pruning all dispatch through [`get_adapter`]; adding an architecture means adding one adapter here and one test row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .errors import HfSlimError, UnsupportedArchitectureError

MODALITIES = ("text", "image", "audio")


def _text_mask(model: nn.Module, inputs: dict[str, Any], seq_len: int) -> torch.Tensor | None:
    mask = inputs.get("attention_mask")
    if mask is None or mask.shape[-1] != seq_len:
        return None
    return mask


def _no_mask(model: nn.Module, inputs: dict[str, Any], seq_len: int) -> torch.Tensor | None:
    return None


def _audio_frame_mask(model: nn.Module, inputs: dict[str, Any], seq_len: int) -> torch.Tensor | None:
    # The processor's attention mask is over raw samples; the encoder works on conv frames.
    mask = inputs.get("attention_mask")
    if mask is None:
        return None
    base = getattr(model, "base_model", model)
    return base._get_feature_vector_attention_mask(seq_len, mask)


@dataclasses.dataclass(frozen=True)
class ArchitectureAdapter:
    """Where the parts of one model family live.

    Module paths are dotted attribute paths. `layers` is relative to the base model (`model.base_model`, e.g.
    `BertModel` inside `BertForSequenceClassification`); the attention and feed-forward paths are relative to one
    transformer layer.

    Args:
        name (`str`): Family name shown in messages and tables, e.g. `"bert"`.
        model_types (`tuple[str, ...]`): `config.model_type` values this adapter handles.
        modality (`str`): One of `"text"`, `"image"`, `"audio"`.
        layers (`str`): Path of the `nn.ModuleList` of transformer layers, relative to the base model.
        attention (`str`): Path of the attention module that owns the head count, relative to a layer.
        query, key, value (`str`): Paths of the q/k/v `nn.Linear` projections, relative to a layer.
        attention_output (`str`): Path of the attention output projection, relative to a layer.
        ffn_in, ffn_out (`str`): Paths of the feed-forward up and down projections, relative to a layer.
        num_layers_attr, num_heads_attr, hidden_size_attr, intermediate_size_attr (`str`): Config attribute names.
        position_mask (`Callable`): `(model, inputs, seq_len) -> (batch, seq_len) mask or None`, the valid positions
            of the encoder's sequence, used to ignore padding in hidden-state and attention losses.
        heads_attr (`str`): Attribute of the attention module holding its current head count.
        inner_size_attr (`str`, *optional*): Attribute of the attention module holding `heads * head_size`, updated
            when heads are removed.
        attention_outputs (`int`, *optional*): Number of values the attention module returns (`None`: 1, or 2 when
            called with `output_attentions=True`); used for the stand-in of a layer whose heads were all removed.
        stock_pruned_heads (`bool`): Whether transformers 4.x rebuilds this family's pruned heads from
            `config.pruned_heads` on load (so stock `from_pretrained` can reload head-pruned checkpoints).
        quantize_operators (`tuple[str, ...]`, *optional*): ONNX operator types ONNX Runtime int8 quantization should
            touch for this family; `None` keeps Optimum's defaults. Wav2Vec2/HuBERT need `("MatMul",)`: the
            weight-normed positional convolution is not an initializer and breaks the default dynamic config.
        per_layer_parameters (`tuple[str, ...]`): Parameters of the full model indexed by `hidden_states` position
            (length `num_layers + 1`), such as Wav2Vec2's `layer_weights`; sliced when layers are selected.
        example_classes (`tuple[str, ...]`): Task heads supported and tested, for documentation.
    """

    name: str
    model_types: tuple[str, ...]
    modality: str
    layers: str
    attention: str
    query: str
    key: str
    value: str
    attention_output: str
    ffn_in: str
    ffn_out: str
    num_layers_attr: str = "num_hidden_layers"
    num_heads_attr: str = "num_attention_heads"
    hidden_size_attr: str = "hidden_size"
    intermediate_size_attr: str = "intermediate_size"
    heads_attr: str = "num_attention_heads"
    inner_size_attr: str | None = "all_head_size"
    attention_outputs: int | None = 2
    stock_pruned_heads: bool = True
    position_mask: Callable[[nn.Module, dict[str, Any], int], torch.Tensor | None] = _text_mask
    quantize_operators: tuple[str, ...] | None = None
    per_layer_parameters: tuple[str, ...] = ()
    example_classes: tuple[str, ...] = ()

    # -- accessors -------------------------------------------------------------------------------------------
    def base_model(self, model: nn.Module) -> nn.Module:
        return getattr(model, "base_model", model)

    def get_layers(self, model: nn.Module) -> nn.ModuleList:
        return _get_path(self.base_model(model), self.layers)

    def layers_prefix(self, model: nn.Module) -> str:
        """State-dict prefix of the layer list in the full model, e.g. `"bert.encoder.layer"`."""
        base = self.base_model(model)
        prefix = getattr(model, "base_model_prefix", "")
        if base is model or not prefix:
            return self.layers
        return f"{prefix}.{self.layers}"

    def num_layers(self, config) -> int:
        return int(getattr(config, self.num_layers_attr))

    def num_heads(self, config) -> int:
        return int(getattr(config, self.num_heads_attr))

    def hidden_size(self, config) -> int:
        return int(getattr(config, self.hidden_size_attr))

    def intermediate_size(self, config) -> int:
        return int(getattr(config, self.intermediate_size_attr))

    def layer_module(self, layer: nn.Module, which: str) -> nn.Module:
        """`which` is one of the path fields: `"attention"`, `"query"`, ..., `"ffn_out"`."""
        return _get_path(layer, getattr(self, which))

    def set_layer_module(self, layer: nn.Module, which: str, module: nn.Module) -> None:
        """Replace the module at path field `which` of `layer`."""
        parent_path, _, name = getattr(self, which).rpartition(".")
        parent = _get_path(layer, parent_path) if parent_path else layer
        setattr(parent, name, module)

    def set_layers(self, model: nn.Module, layers: nn.ModuleList) -> None:
        parent_path, _, name = self.layers.rpartition(".")
        base = self.base_model(model)
        setattr(_get_path(base, parent_path) if parent_path else base, name, layers)


_REGISTRY: dict[str, ArchitectureAdapter] = {}
_PATH_FIELDS = ("layers", "attention", "query", "key", "value", "attention_output", "ffn_in", "ffn_out")


def register_adapter(adapter: ArchitectureAdapter, *, overwrite: bool = False) -> ArchitectureAdapter:
    """Register an [`ArchitectureAdapter`] for its `model_types`.

    Validates the adapter first: a known modality, non-empty module paths, and no model type registered twice
    (unless `overwrite=True`).
    """
    if not isinstance(adapter, ArchitectureAdapter):
        raise TypeError(f"register_adapter expects an ArchitectureAdapter, got {type(adapter).__name__}.")
    if adapter.modality not in MODALITIES:
        raise HfSlimError(
            f"Adapter {adapter.name!r} has modality {adapter.modality!r}; expected one of {', '.join(MODALITIES)}."
        )
    types = adapter.model_types
    if not isinstance(types, (tuple, list)) or not types or not all(isinstance(t, str) and t for t in types):
        raise HfSlimError(
            f"Adapter {adapter.name!r} has model_types={types!r}; expected a non-empty tuple of model_type strings "
            "such as ('bert',)."
        )
    for field in _PATH_FIELDS:
        path = getattr(adapter, field)
        if not isinstance(path, str) or not path or any(not part for part in path.split(".")):
            raise HfSlimError(f"Adapter {adapter.name!r} has an invalid module path {field}={path!r}.")
    for model_type in adapter.model_types:
        if model_type in _REGISTRY and not overwrite:
            raise HfSlimError(
                f"model_type {model_type!r} is already handled by adapter {_REGISTRY[model_type].name!r}; "
                "pass overwrite=True to replace it."
            )
    for model_type in adapter.model_types:
        _REGISTRY[model_type] = adapter
    return adapter


def supported_model_types() -> list[str]:
    return sorted(_REGISTRY)


def get_adapter(model_or_config) -> ArchitectureAdapter:
    """Return the adapter for a model or a config, or raise [`UnsupportedArchitectureError`]."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type not in _REGISTRY:
        raise UnsupportedArchitectureError(
            f"hf_slim does not support model_type {model_type!r}. Supported model types: "
            f"{', '.join(supported_model_types())}. To add one, register an ArchitectureAdapter with "
            "hf_slim.register_adapter()."
        )
    return _REGISTRY[model_type]


def _get_path(module: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        module = module[int(part)] if part.isdigit() else getattr(module, part)
    return module


_BERT_LIKE = dict(
    layers="encoder.layer",
    attention="attention.self",
    query="attention.self.query",
    key="attention.self.key",
    value="attention.self.value",
    attention_output="attention.output.dense",
    ffn_in="intermediate.dense",
    ffn_out="output.dense",
)
_VIT_LIKE = dict(
    layers="encoder.layer",
    attention="attention.attention",
    query="attention.attention.query",
    key="attention.attention.key",
    value="attention.attention.value",
    attention_output="attention.output.dense",
    ffn_in="intermediate.dense",
    ffn_out="output.dense",
    position_mask=_no_mask,
    # Not Conv: int8 Conv becomes ConvInteger, slow or unsupported on many ONNX Runtime CPU builds, and the patch
    # embedding is a small share of the compute.
    quantize_operators=("MatMul", "Attention", "Gather", "Transpose"),
)
_WAV2VEC2_LIKE = dict(
    layers="encoder.layers",
    attention="attention",
    query="attention.q_proj",
    key="attention.k_proj",
    value="attention.v_proj",
    attention_output="attention.out_proj",
    ffn_in="feed_forward.intermediate_dense",
    ffn_out="feed_forward.output_dense",
    position_mask=_audio_frame_mask,
    per_layer_parameters=("layer_weights",),
    heads_attr="num_heads",
    inner_size_attr="embed_dim",
    attention_outputs=3,
    stock_pruned_heads=False,
    quantize_operators=("MatMul",),
)

register_adapter(
    ArchitectureAdapter(
        name="bert",
        model_types=("bert",),
        modality="text",
        example_classes=("BertForSequenceClassification",),
        **_BERT_LIKE,
    )
)
register_adapter(
    ArchitectureAdapter(
        name="roberta",
        model_types=("roberta",),
        modality="text",
        example_classes=("RobertaForSequenceClassification",),
        **_BERT_LIKE,
    )
)
register_adapter(
    ArchitectureAdapter(
        name="distilbert",
        model_types=("distilbert",),
        modality="text",
        layers="transformer.layer",
        attention="attention",
        query="attention.q_lin",
        key="attention.k_lin",
        value="attention.v_lin",
        attention_output="attention.out_lin",
        ffn_in="ffn.lin1",
        ffn_out="ffn.lin2",
        num_layers_attr="n_layers",
        num_heads_attr="n_heads",
        hidden_size_attr="dim",
        intermediate_size_attr="hidden_dim",
        heads_attr="n_heads",
        inner_size_attr="dim",
        attention_outputs=None,
        example_classes=("DistilBertForSequenceClassification",),
    )
)
register_adapter(
    ArchitectureAdapter(
        name="vit",
        model_types=("vit",),
        modality="image",
        example_classes=("ViTForImageClassification",),
        **_VIT_LIKE,
    )
)
register_adapter(
    ArchitectureAdapter(
        name="deit",
        model_types=("deit",),
        modality="image",
        example_classes=("DeiTForImageClassification", "DeiTForImageClassificationWithTeacher"),
        **_VIT_LIKE,
    )
)
register_adapter(
    ArchitectureAdapter(
        name="wav2vec2",
        model_types=("wav2vec2",),
        modality="audio",
        example_classes=("Wav2Vec2ForSequenceClassification",),
        **_WAV2VEC2_LIKE,
    )
)
register_adapter(
    ArchitectureAdapter(
        name="hubert",
        model_types=("hubert",),
        modality="audio",
        example_classes=("HubertForSequenceClassification",),
        **_WAV2VEC2_LIKE,
    )
)
