import dataclasses

import pytest
import torch
from tiny_models import MODEL_TYPES, build_model, make_inputs
from torch import nn

import hf_slim
from hf_slim import architectures
from hf_slim.architectures import ArchitectureAdapter, get_adapter, register_adapter, supported_model_types
from hf_slim.errors import HfSlimError, UnsupportedArchitectureError

PROJECTIONS = ("query", "key", "value", "attention_output", "ffn_in", "ffn_out")
# Distinct sizes, so that swapping hidden_size and intermediate_size (or layers and heads) cannot pass.
NUM_LAYERS, HIDDEN, HEADS, INTERMEDIATE = 3, 24, 2, 40


@pytest.fixture
def restore_registry():
    """Registration mutates a module-level registry; put it back so other tests see the shipped adapters."""
    saved = dict(architectures._REGISTRY)
    yield
    architectures._REGISTRY.clear()
    architectures._REGISTRY.update(saved)


def _heads_of(attention: nn.Module) -> int:
    for name in ("num_attention_heads", "num_heads", "n_heads"):
        if hasattr(attention, name):
            return getattr(attention, name)
    raise AssertionError(f"{type(attention).__name__} has no head count attribute")


def test_supported_model_types():
    types = supported_model_types()
    assert types == sorted(MODEL_TYPES)
    assert len(types) == 7
    assert hf_slim.supported_model_types() == types


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_get_adapter_resolves_model_and_config(model_type):
    model = build_model(model_type, num_layers=2)
    adapter = get_adapter(model)
    assert isinstance(adapter, ArchitectureAdapter)
    assert model_type in adapter.model_types
    assert adapter.name == model_type
    assert adapter.modality in architectures.MODALITIES
    assert get_adapter(model.config) is adapter
    assert type(model).__name__ in adapter.example_classes


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_adapter_paths_resolve_to_real_modules(model_type):
    model = build_model(model_type, num_layers=NUM_LAYERS, hidden=HIDDEN, heads=HEADS, intermediate=INTERMEDIATE)
    adapter = get_adapter(model)
    config = model.config

    assert adapter.num_layers(config) == NUM_LAYERS
    assert adapter.hidden_size(config) == HIDDEN
    assert adapter.num_heads(config) == HEADS
    assert adapter.intermediate_size(config) == INTERMEDIATE
    assert adapter.base_model(model) is model.base_model

    layers = adapter.get_layers(model)
    assert isinstance(layers, nn.ModuleList)
    assert len(layers) == NUM_LAYERS
    expected_shapes = {
        "query": (HIDDEN, HIDDEN),
        "key": (HIDDEN, HIDDEN),
        "value": (HIDDEN, HIDDEN),
        "attention_output": (HIDDEN, HIDDEN),
        "ffn_in": (HIDDEN, INTERMEDIATE),
        "ffn_out": (INTERMEDIATE, HIDDEN),
    }
    for index, layer in enumerate(layers):
        resolved = {}
        for which in PROJECTIONS:
            module = adapter.layer_module(layer, which)
            assert isinstance(module, nn.Linear), f"layer {index} {which} is {type(module).__name__}"
            assert (module.in_features, module.out_features) == expected_shapes[which], (index, which)
            resolved[which] = module
        # Six different projections, not one path resolved six times.
        assert len({id(module) for module in resolved.values()}) == len(PROJECTIONS)
        assert _heads_of(adapter.layer_module(layer, "attention")) == HEADS


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_layers_prefix_matches_state_dict(model_type):
    model = build_model(model_type, num_layers=NUM_LAYERS, hidden=HIDDEN, heads=HEADS, intermediate=INTERMEDIATE)
    adapter = get_adapter(model)
    prefix = adapter.layers_prefix(model)

    assert model.get_submodule(prefix) is adapter.get_layers(model)
    keys = list(model.state_dict())
    indices = {int(key[len(prefix) + 1 :].split(".")[0]) for key in keys if key.startswith(prefix + ".")}
    assert indices == set(range(NUM_LAYERS))
    # Keys outside the layer stack exist too (embeddings, head), so the prefix is not the whole model.
    assert any(not key.startswith(prefix + ".") for key in keys)


@pytest.mark.parametrize("model_type", ["bert", "roberta", "distilbert"])
def test_position_mask_text(model_type):
    model = build_model(model_type, num_layers=2)
    adapter = get_adapter(model)
    inputs = make_inputs(model_type)
    seq_len = inputs["input_ids"].shape[1]
    assert inputs["attention_mask"].min() == 0  # padded rows, so the mask carries information

    assert adapter.position_mask(model, inputs, seq_len) is inputs["attention_mask"]
    assert adapter.position_mask(model, {"input_ids": inputs["input_ids"]}, seq_len) is None
    # A mask that does not cover the hidden sequence is not returned as if it did.
    assert adapter.position_mask(model, inputs, seq_len + 1) is None


@pytest.mark.parametrize("model_type", ["vit", "deit"])
def test_position_mask_image(model_type):
    model = build_model(model_type, num_layers=2)
    adapter = get_adapter(model)
    inputs = make_inputs(model_type)
    inputs["attention_mask"] = torch.ones(4, 17, dtype=torch.long)
    assert adapter.position_mask(model, inputs, 17) is None


@pytest.mark.parametrize("model_type", ["wav2vec2", "hubert"])
def test_position_mask_audio_is_frame_level(model_type):
    model = build_model(model_type, num_layers=2).eval()
    adapter = get_adapter(model)
    inputs = make_inputs(model_type)  # 4 clips of 400 samples
    valid_samples = [400, 200, 100, 400]
    inputs["attention_mask"] = torch.zeros(4, 400, dtype=torch.long)
    for row, valid in enumerate(valid_samples):
        inputs["attention_mask"][row, :valid] = 1

    with torch.no_grad():
        hidden = model(**inputs, output_hidden_states=True).hidden_states[-1]
    seq_len = hidden.shape[1]
    # Two convs with kernel 8, stride 4: 400 -> 99 -> 23, 200 -> 49 -> 11, 100 -> 24 -> 5 frames.
    assert seq_len == 23
    expected_frames = [23, 11, 5, 23]

    mask = adapter.position_mask(model, inputs, seq_len)
    assert mask.shape == (4, seq_len)
    expected = torch.zeros(4, seq_len, dtype=torch.long)
    for row, frames in enumerate(expected_frames):
        expected[row, :frames] = 1
    assert mask.long().tolist() == expected.tolist()
    assert adapter.position_mask(model, {"input_values": inputs["input_values"]}, seq_len) is None


def _adapter(**changes) -> ArchitectureAdapter:
    fields = dict(
        name="toy",
        model_types=("toy",),
        modality="text",
        layers="encoder.layer",
        attention="attention.self",
        query="attention.self.query",
        key="attention.self.key",
        value="attention.self.value",
        attention_output="attention.output.dense",
        ffn_in="intermediate.dense",
        ffn_out="output.dense",
    )
    fields.update(changes)
    return ArchitectureAdapter(**fields)


def test_register_new_adapter(restore_registry):
    adapter = _adapter()
    assert register_adapter(adapter) is adapter
    assert "toy" in supported_model_types()
    config = type("ToyConfig", (), {"model_type": "toy"})()
    assert get_adapter(config) is adapter


@pytest.mark.parametrize(
    "changes, fragment",
    [
        (dict(modality="video"), "'video'"),
        (dict(modality="Text"), "'Text'"),
        (dict(model_types=()), "model_types=()"),
        (dict(layers=""), "layers=''"),
        (dict(query=""), "query=''"),
        (dict(ffn_out="output..dense"), "ffn_out='output..dense'"),
        (dict(key=".key"), "key='.key'"),
        (dict(attention_output="attention.output."), "attention_output='attention.output.'"),
        (dict(value=None), "value=None"),
        (dict(model_types=("bert",)), "'bert'"),
        (dict(model_types=("toy", "vit")), "'vit'"),
    ],
    ids=[
        "bad-modality",
        "modality-case",
        "no-model-types",
        "empty-layers",
        "empty-query",
        "empty-path-part",
        "leading-dot",
        "trailing-dot",
        "non-string-path",
        "duplicate",
        "duplicate-among-several",
    ],
)
def test_register_adapter_rejects_invalid(restore_registry, changes, fragment):
    before = dict(architectures._REGISTRY)
    with pytest.raises(HfSlimError) as excinfo:
        register_adapter(_adapter(**changes))
    assert isinstance(excinfo.value, ValueError)
    assert fragment in str(excinfo.value)
    # A rejected adapter registers nothing, not even its valid model types.
    assert architectures._REGISTRY == before


def test_register_adapter_rejects_non_adapter(restore_registry):
    with pytest.raises(TypeError, match="dict"):
        register_adapter(dict(name="toy"))


def test_register_adapter_duplicate_message_names_fix(restore_registry):
    with pytest.raises(HfSlimError, match="overwrite=True"):
        register_adapter(dataclasses.replace(get_adapter(build_model("bert", num_layers=1)), name="bert2"))


def test_register_adapter_overwrite(restore_registry):
    model = build_model("bert", num_layers=2)
    original = get_adapter(model)
    replacement = dataclasses.replace(original, name="bert-custom")

    assert register_adapter(replacement, overwrite=True) is replacement
    assert get_adapter(model) is replacement
    assert get_adapter(build_model("roberta", num_layers=1)).name == "roberta"
    assert supported_model_types() == sorted(MODEL_TYPES)


def test_registry_restored_after_overwrite():
    # Runs after test_register_adapter_overwrite: the fixture put the shipped adapter back.
    assert get_adapter(build_model("bert", num_layers=1)).name == "bert"
    assert supported_model_types() == sorted(MODEL_TYPES)


@pytest.mark.parametrize("model_type", [None, "gpt2", "toy"])
def test_get_adapter_unsupported(model_type):
    config = type("Config", (), {"model_type": model_type})()
    with pytest.raises(UnsupportedArchitectureError) as excinfo:
        get_adapter(config)
    message = str(excinfo.value)
    assert repr(model_type) in message
    for supported in MODEL_TYPES:
        assert supported in message
    assert "register_adapter" in message


def test_register_adapter_rejects_string_model_types(restore_registry):
    before = dict(architectures._REGISTRY)
    with pytest.raises(HfSlimError, match="model_types"):
        register_adapter(_adapter(model_types="toy"))
    assert architectures._REGISTRY == before
