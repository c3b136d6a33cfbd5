"""Reloading pruned models: hf_slim.modeling.from_pretrained rebuilds the recorded structure strictly and without
transformers' prune_heads (gone in v5); stock AutoModelFor*.from_pretrained reloads what transformers 4.x can
represent."""

import json
import sys

import pytest
import torch
import transformers
from tiny_models import AUTO_CLASSES, MODEL_TYPES, build_model, make_inputs
from transformers import (
    AutoModelForSequenceClassification,
    BertForSequenceClassification,
)

import hf_slim
import hf_slim.prune.structured
from hf_slim.errors import HfSlimError
from hf_slim.modeling import from_pretrained
from hf_slim.prune import drop_layers, prune_ffn, prune_heads

# Families whose transformers 4.x classes rebuild heads from config.pruned_heads.
STOCK_HEAD_FAMILIES = ("bert", "roberta", "distilbert", "vit", "deit")
FFN = 37


def _nonuniform(model):
    """Different heads per layer (one layer without heads), different FFN widths (one without neurons), a layer
    dropped: what only hf_slim's loader can rebuild."""
    prune_heads(model, {0: [1], 1: [0, 2, 3], 2: [0, 1, 2, 3]})
    prune_ffn(model, {0: [0, 5], 1: list(range(FFN)), 3: [1, 2, 3]})
    drop_layers(model, [1])


def _stock_heads(model):
    """Heads pruned (at least one left everywhere), uniform FFN widths and a dropped layer."""
    prune_heads(model, {0: [1], 1: [0, 3], 3: [2]})
    prune_ffn(model, {layer: [layer, 7] for layer in range(4)})
    drop_layers(model, [2])


# (id, pruning, whether stock transformers can load it: True, False, or the families for which it can)
CASES = [
    ("dropped-layers", lambda m: drop_layers(m, [0, 2]), True),
    ("uniform-ffn", lambda m: prune_ffn(m, {layer: [0, 3, 9] for layer in range(4)}), True),
    ("heads-everywhere", _stock_heads, STOCK_HEAD_FAMILIES),
    ("layer-without-heads", lambda m: prune_heads(m, {1: [0, 1, 2, 3]}), False),
    ("nonuniform-ffn", lambda m: prune_ffn(m, {0: [0], 2: [0, 1]}), False),
    ("layer-without-ffn", lambda m: prune_ffn(m, {layer: list(range(FFN)) for layer in range(4)}), False),
    ("everything", _nonuniform, False),
]


def _run(model, inputs, **kwargs):
    model.eval()
    with torch.no_grad():
        return model(**inputs, output_hidden_states=True, **kwargs)


def _assert_same_outputs(actual, expected, atol=0.0):
    torch.testing.assert_close(actual.logits, expected.logits, rtol=0, atol=atol)
    torch.testing.assert_close(actual.hidden_states[-1], expected.hidden_states[-1], rtol=0, atol=atol)


def _assert_same_state(actual, expected):
    actual, expected = actual.state_dict(), expected.state_dict()
    assert actual.keys() == expected.keys()
    for key in expected:
        assert actual[key].shape == expected[key].shape, key
        assert torch.equal(actual[key], expected[key]), key


def _pruned(model_type, prune, tmp_path):
    model = build_model(model_type).eval()
    prune(model)
    model.save_pretrained(tmp_path)
    return model


def _stock_load_fails(model_type, path):
    """Stock transformers either refuses the checkpoint or reports what it could not load."""
    try:
        _, info = AUTO_CLASSES[model_type].from_pretrained(path, output_loading_info=True)
    except (RuntimeError, ValueError, OSError):
        return True
    return bool(info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"])


# -- round trips -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_strict_round_trip(model_type, tmp_path):
    model = _pruned(model_type, _nonuniform, tmp_path)
    inputs = make_inputs(model_type)
    assert (tmp_path / "model.safetensors").is_file()
    assert not (tmp_path / "pytorch_model.bin").exists()

    loaded = from_pretrained(str(tmp_path))

    assert type(loaded) is type(model)
    assert not loaded.training
    _assert_same_state(loaded, model)
    _assert_same_outputs(_run(loaded, inputs), _run(model, inputs))
    assert loaded.config.hf_slim == model.config.hf_slim
    assert loaded.config.hf_slim["num_heads"] == [3, 0, 4]
    assert loaded.config.hf_slim["intermediate_sizes"] == [FFN - 2, FFN, FFN - 3]
    assert hf_slim.get_adapter(loaded).num_layers(loaded.config) == 3


@pytest.mark.parametrize("model_type", MODEL_TYPES)
@pytest.mark.parametrize("prune, stock", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_stock_loader_where_transformers_can_represent_the_result(model_type, prune, stock, tmp_path):
    model = _pruned(model_type, prune, tmp_path)
    inputs = make_inputs(model_type)
    expected = _run(model, inputs)
    stock_loadable = stock if isinstance(stock, bool) else model_type in stock

    assert model.config.hf_slim["stock_loadable"] is stock_loadable
    # hf_slim's loader handles every case.
    _assert_same_outputs(_run(from_pretrained(str(tmp_path)), inputs), expected)
    if stock_loadable:
        loaded, info = AUTO_CLASSES[model_type].from_pretrained(tmp_path, output_loading_info=True)
        assert info["missing_keys"] == []
        assert info["unexpected_keys"] == []
        assert info["mismatched_keys"] == []
        _assert_same_state(loaded, model)
        _assert_same_outputs(_run(loaded, inputs), expected, atol=1e-6)
    else:
        # The flag is honest: stock transformers cannot load it.
        assert _stock_load_fails(model_type, tmp_path)


def test_reload_prune_again_and_reload(tmp_path):
    model = _pruned("bert", _stock_heads, tmp_path / "first")
    inputs = make_inputs("bert")

    loaded = from_pretrained(str(tmp_path / "first"))
    prune_heads(loaded, {0: [0]})
    drop_layers(loaded, [2])
    loaded.save_pretrained(tmp_path / "second")
    again = from_pretrained(str(tmp_path / "second"))

    record = again.config.hf_slim
    assert record["source_layers"] == [0, 1]
    assert record["heads_kept"] == [[2, 3], [1, 2]]
    assert [entry["op"] for entry in record["history"]] == [
        "prune_heads",
        "prune_ffn",
        "drop_layers",
        "prune_heads",
        "drop_layers",
    ]
    assert again.config.pruned_heads == {0: [0, 1], 1: [0, 3]}
    _assert_same_state(again, loaded)
    _assert_same_outputs(_run(again, inputs), _run(loaded, inputs))
    assert not torch.equal(_run(again, inputs).logits, _run(model, inputs).logits)
    stock, info = AutoModelForSequenceClassification.from_pretrained(tmp_path / "second", output_loading_info=True)
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"])
    _assert_same_outputs(_run(stock, inputs), _run(again, inputs), atol=1e-6)


def test_sharded_checkpoint(tmp_path):
    model = build_model("bert").eval()
    _nonuniform(model)
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert not (tmp_path / "model.safetensors").exists()

    loaded = from_pretrained(str(tmp_path))

    _assert_same_state(loaded, model)


# -- no dependency on prune_heads ------------------------------------------------------------------------------------
class _Removed(AssertionError):
    pass


def _remove_head_pruning(monkeypatch, model):
    """Make every transformers head-pruning entry point raise, as if running on transformers 5."""

    def removed(*args, **kwargs):
        raise _Removed("transformers head pruning was called")

    monkeypatch.setattr(transformers.PreTrainedModel, "prune_heads", removed)
    classes = {cls for module in model.modules() for cls in type(module).__mro__}
    for cls in classes:
        for name in ("prune_heads", "_prune_heads"):
            if name in vars(cls):
                monkeypatch.setattr(cls, name, removed)
    modules = [transformers.pytorch_utils, sys.modules[type(model).__module__]]
    for module in modules:
        for name in ("prune_linear_layer", "find_pruneable_heads_and_indices"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, removed)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
@pytest.mark.parametrize("prune", [_stock_heads, _nonuniform], ids=["stock-heads", "nonuniform"])
def test_loader_does_not_use_prune_heads(model_type, prune, tmp_path, monkeypatch):
    model = _pruned(model_type, prune, tmp_path)
    inputs = make_inputs(model_type)
    expected = _run(model, inputs)
    _remove_head_pruning(monkeypatch, model)
    if model.config.pruned_heads:
        # The patch is effective: stock transformers 4.x needs prune_heads for this checkpoint.
        with pytest.raises(_Removed):
            AUTO_CLASSES[model_type].from_pretrained(tmp_path)

    loaded = from_pretrained(str(tmp_path))

    _assert_same_state(loaded, model)
    _assert_same_outputs(_run(loaded, inputs), expected)
    assert loaded.config.pruned_heads == model.config.pruned_heads


@pytest.mark.parametrize("model_type", ["bert", "vit", "hubert"])
def test_unpruned_checkpoint_loads_through_the_stock_path(model_type, tmp_path, monkeypatch):
    model = build_model(model_type).eval()
    model.save_pretrained(tmp_path)
    inputs = make_inputs(model_type)

    def not_used(*args, **kwargs):
        raise AssertionError("unpruned checkpoints load with the stock loader")

    monkeypatch.setattr(hf_slim.prune.structured, "apply_structure", not_used)
    monkeypatch.setattr(hf_slim.modeling, "_load_safetensors_state", not_used)

    loaded = from_pretrained(str(tmp_path))

    assert type(loaded) is type(model)
    assert getattr(loaded.config, "hf_slim", None) is None
    _assert_same_state(loaded, model)
    _assert_same_outputs(_run(loaded, inputs), _run(model, inputs))


# -- options ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pruned", [True, False], ids=["pruned", "unpruned"])
@pytest.mark.parametrize(
    "kwargs", [{"torch_dtype": torch.float64}, {"dtype": "float64"}], ids=["torch_dtype", "dtype"]
)
def test_dtype_is_applied(pruned, kwargs, tmp_path):
    model = _pruned("bert", _nonuniform if pruned else (lambda m: None), tmp_path)
    inputs = make_inputs("bert")

    loaded = from_pretrained(str(tmp_path), **kwargs)

    assert {p.dtype for p in loaded.parameters()} == {torch.float64}
    _assert_same_outputs(_run(loaded, inputs), _run(model.double(), inputs), atol=1e-6)


@pytest.mark.parametrize("model_type", ["bert", "wav2vec2"])
def test_attn_implementation_is_applied(model_type, tmp_path):
    _pruned(model_type, _stock_heads, tmp_path)

    loaded = from_pretrained(str(tmp_path), attn_implementation="eager")

    assert loaded.config._attn_implementation == "eager"
    attentions = _run(loaded, make_inputs(model_type), output_attentions=True).attentions
    assert [a.shape[1] for a in attentions] == [3, 2, 3]


def test_model_class_overrides_config_architectures(tmp_path):
    model = _pruned("bert", _nonuniform, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["architectures"] = ["NoSuchModelForSequenceClassification"]
    (tmp_path / "config.json").write_text(json.dumps(config))

    with pytest.raises(HfSlimError, match="model_class"):
        from_pretrained(str(tmp_path))
    loaded = from_pretrained(str(tmp_path), model_class=BertForSequenceClassification)

    _assert_same_state(loaded, model)


# -- errors ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "pruned",
    [
        True,
        False,
    ],
    ids=["pruned", "unpruned"],
)
def test_checkpoint_without_safetensors(pruned, tmp_path):
    model = build_model("bert")
    if pruned:
        _nonuniform(model)
    model.save_pretrained(tmp_path, safe_serialization=False)
    assert (tmp_path / "pytorch_model.bin").is_file()

    with pytest.raises(HfSlimError, match="safetensors"):
        from_pretrained(str(tmp_path))


def _edit_record(tmp_path, edit):
    config = json.loads((tmp_path / "config.json").read_text())
    edit(config["hf_slim"])
    (tmp_path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda r: r["num_heads"].__setitem__(0, 2), r"mismatched shapes \[.*layer\.0\.attention"),
        (lambda r: r["num_heads"].__setitem__(1, 1), r"missing \[.*layer\.1\.attention\.self\.query"),
        (lambda r: r["intermediate_sizes"].__setitem__(2, 30), r"mismatched shapes \[.*layer\.2\.(intermediate|out)"),
        (lambda r: r["num_heads"].pop(), r"does not describe this model's 3 layers"),
        (lambda r: r.pop("intermediate_sizes"), r"does not describe"),
        (lambda r: r["num_heads"].__setitem__(0, 5), r"num_heads"),
        (lambda r: r["intermediate_sizes"].__setitem__(2, 99), r"intermediate_sizes"),
    ],
    ids=["fewer-heads", "empty-layer", "ffn-width", "layer-count", "no-widths", "too-many-heads", "too-wide-ffn"],
)
def test_edited_record_is_a_clear_error(edit, match, tmp_path):
    _pruned("bert", _nonuniform, tmp_path)
    _edit_record(tmp_path, edit)

    with pytest.raises(HfSlimError, match=match):
        from_pretrained(str(tmp_path))


def test_weights_from_another_model_are_an_error(tmp_path):
    _pruned("bert", _nonuniform, tmp_path / "pruned")
    build_model("bert", num_layers=3).save_pretrained(tmp_path / "other")
    (tmp_path / "other" / "model.safetensors").replace(tmp_path / "pruned" / "model.safetensors")

    with pytest.raises(HfSlimError, match="mismatched shapes"):
        from_pretrained(str(tmp_path / "pruned"))


def test_unsupported_arguments(tmp_path):
    # Checked before anything is read: the folder does not even exist.
    with pytest.raises(HfSlimError, match=r"\['trust_remote_code'\].*torch_dtype.*attn_implementation") as error:
        from_pretrained(str(tmp_path / "missing"), trust_remote_code=True)
    assert "local_files_only" in str(error.value)
    with pytest.raises(HfSlimError, match=r"\['foo', 'use_safetensors'\]"):
        from_pretrained(str(tmp_path / "missing"), use_safetensors=False, foo=1)
