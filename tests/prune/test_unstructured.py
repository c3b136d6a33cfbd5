import json
import math
import re

import pytest
import torch
from tiny_models import MODEL_TYPES, build_model, make_inputs
from torch import nn
from transformers import AutoModelForSequenceClassification

from hf_slim.architectures import get_adapter
from hf_slim.errors import HfSlimError
from hf_slim.modeling import from_pretrained
from hf_slim.prune.structured import prune_heads
from hf_slim.prune.unstructured import prune_unstructured


def layer_linears(model):
    """The nn.Linear modules inside the transformer layers, found without hf_slim's own part classification."""
    return [m for m in get_adapter(model).get_layers(model).modules() if isinstance(m, nn.Linear)]


def layer_weights(model):
    return [m.weight for m in layer_linears(model)]


def count_zeros(weights):
    return sum(int((w == 0).sum()) for w in weights)


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("target", [0.1, 0.3, 0.5, 0.77, 0.95])
def test_achieved_sparsity_matches_target(target):
    model = build_model("bert", num_layers=2)
    report = prune_unstructured(model, target)
    weights = layer_weights(model)
    total = sum(w.numel() for w in weights)
    zeros = count_zeros(weights)
    assert report["total"] == total
    assert report["zeros"] == zeros
    assert abs(zeros - target * total) <= 1
    assert report["achieved"] == pytest.approx(zeros / total)
    assert report["target"] == target


def test_smallest_magnitudes_are_zeroed_globally():
    model = build_model("bert", num_layers=2)
    before = [w.detach().clone() for w in layer_weights(model)]
    prune_unstructured(model, 0.6)
    after = layer_weights(model)
    zeroed = torch.cat([b[a == 0].abs() for b, a in zip(before, after, strict=True)])
    kept = torch.cat([a[a != 0].abs() for a in after])
    assert len(zeroed) > 0 and len(kept) > 0
    assert zeroed.max() <= kept.min()
    # Kept weights keep their values; layers are pruned unevenly (the threshold is global, not per layer).
    for b, a in zip(before, after, strict=True):
        assert torch.equal(a[a != 0], b[a != 0])
    fractions = [float((a == 0).float().mean()) for a in after]
    assert max(fractions) - min(fractions) > 0.01


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_only_transformer_layer_weights_change(model_type):
    model = build_model(model_type, num_layers=2)
    before = snapshot(model)
    keys = set(model.state_dict())
    report = prune_unstructured(model, 0.5)
    pruned = {id(w) for w in layer_weights(model)}
    for name, param in model.named_parameters():
        if id(param) in pruned:
            assert 0.2 < float((param == 0).float().mean()) < 0.8, name
        else:
            assert torch.equal(param, before[name]), f"{name} changed"
    assert len(report["per_layer"]) == len(pruned)
    # Permanent: no torch.nn.utils.prune reparametrisation or hooks left behind.
    assert set(model.state_dict()) == keys
    assert not any(m._forward_pre_hooks for m in model.modules())
    with torch.no_grad():
        assert torch.isfinite(model(**make_inputs(model_type)).logits).all()


def test_include_classifier_prunes_the_head_but_never_embeddings():
    model = build_model("bert", num_layers=2)
    before = snapshot(model)
    report = prune_unstructured(model, 0.5, include_classifier=True)
    assert "classifier" in report["per_layer"] and "bert.pooler.dense" in report["per_layer"]
    assert (model.classifier.weight == 0).any()
    assert (model.bert.pooler.dense.weight == 0).any()
    for name, param in model.named_parameters():
        if "embeddings" in name or name.endswith("bias"):
            assert torch.equal(param, before[name]), f"{name} changed"
    head = model.classifier.weight.numel() + model.bert.pooler.dense.weight.numel()
    assert report["total"] == sum(w.numel() for w in layer_weights(model)) + head


def test_default_leaves_classifier_untouched():
    model = build_model("bert", num_layers=2)
    classifier = model.classifier.weight.detach().clone()
    report = prune_unstructured(model, 0.9)
    assert torch.equal(model.classifier.weight, classifier)
    assert "classifier" not in report["per_layer"]


def test_zero_sparsity_is_identity():
    model = build_model("bert", num_layers=2)
    before = snapshot(model)
    report = prune_unstructured(model, 0)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert report["zeros"] == 0 and report["achieved"] == 0.0


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5, "a", None, True, float("nan")])
def test_invalid_sparsity_errors_before_any_change(sparsity):
    model = build_model("bert", num_layers=2)
    before = snapshot(model)
    with pytest.raises(HfSlimError, match=re.escape(repr(sparsity))):
        prune_unstructured(model, sparsity)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert not getattr(model.config, "hf_slim", None)


def test_ties_at_the_threshold_give_the_exact_count():
    model = build_model("bert", num_layers=2)
    with torch.no_grad():
        for w in layer_weights(model):
            w.fill_(0.5)
    report = prune_unstructured(model, 0.3)
    total = report["total"]
    assert report["zeros"] == count_zeros(layer_weights(model)) == math.floor(0.3 * total + 0.5)


def test_repeated_pruning_keeps_earlier_zeros():
    model = build_model("bert", num_layers=2)
    prune_unstructured(model, 0.5)
    first = [w == 0 for w in layer_weights(model)]
    report = prune_unstructured(model, 0.8)
    assert abs(report["zeros"] - 0.8 * report["total"]) <= 1
    for mask, w in zip(first, layer_weights(model), strict=True):
        assert (w[mask] == 0).all()
    assert [h["target"] for h in model.config.hf_slim["history"]] == [0.5, 0.8]


def test_report_is_recorded_in_history_and_json_serialisable():
    model = build_model("bert", num_layers=2)
    report = prune_unstructured(model, 0.4)
    json.dumps(report)
    history = model.config.hf_slim["history"]
    assert history == [{"op": "prune_unstructured", **report}]
    json.dumps(model.config.to_dict())


def test_save_reload_keeps_the_zeros(tmp_path):
    model = build_model("bert", num_layers=2).eval()
    report = prune_unstructured(model, 0.7)
    model.save_pretrained(tmp_path)
    inputs = make_inputs("bert")
    with torch.no_grad():
        expected = model(**inputs).logits
    for reloaded in (AutoModelForSequenceClassification.from_pretrained(tmp_path), from_pretrained(str(tmp_path))):
        reloaded.eval()
        state = reloaded.state_dict()
        for name, value in model.state_dict().items():
            assert torch.equal(state[name], value), name
        assert count_zeros(layer_weights(reloaded)) == report["zeros"]
        assert reloaded.config.hf_slim["history"][-1]["op"] == "prune_unstructured"
        assert reloaded.config.hf_slim["history"][-1]["zeros"] == report["zeros"]
        with torch.no_grad():
            torch.testing.assert_close(reloaded(**inputs).logits, expected)


def test_after_structured_pruning_with_an_empty_layer(tmp_path):
    model = build_model("bert", num_layers=2).eval()
    prune_heads(model, {0: [0, 1, 2, 3], 1: [1]})
    report = prune_unstructured(model, 0.5)
    assert abs(report["zeros"] - 0.5 * report["total"]) <= 1
    assert [h["op"] for h in model.config.hf_slim["history"]] == ["prune_heads", "prune_unstructured"]
    model.save_pretrained(tmp_path)
    reloaded = from_pretrained(str(tmp_path))
    inputs = make_inputs("bert")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, model(**inputs).logits)
