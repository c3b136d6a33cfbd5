"""Physical structured pruning (hf_slim.prune.structured): a pruned model equals the original run with the same
heads, neurons or layers masked, parameter counts shrink by exactly what was removed, the config record describes
the result, and every bad request fails before anything changes."""

import copy

import pytest
import torch
from tiny_models import MODEL_TYPES, build_model, make_inputs
from transformers import GPT2Config, GPT2ForSequenceClassification, Wav2Vec2ForSequenceClassification

import hf_slim
from hf_slim.errors import HfSlimError, UnsupportedArchitectureError
from hf_slim.prune import drop_layers, prune_ffn, prune_heads, pruning_record
from hf_slim.prune.masks import MaskHooks, full_masks
from hf_slim.prune.structured import BiasOnly, EmptyAttention, ZeroWidth

HIDDEN, HEADS, HEAD_SIZE, FFN = 32, 4, 8, 37
# Different counts per layer: layer 2 loses every head, layer 3 keeps all of them.
HEAD_SPEC = {0: [1], 1: [0, 2, 3], 2: [0, 1, 2, 3]}
# Layer 1 loses every neuron, layer 2 none.
FFN_SPEC = {0: [0, 5, 36], 1: list(range(FFN)), 3: list(range(10))}
# Each head: q, k, v rows (weights and biases) and the output projection's input columns.
PARAMS_PER_HEAD = 3 * (HIDDEN * HEAD_SIZE + HEAD_SIZE) + HIDDEN * HEAD_SIZE
# Each neuron: a row and a bias of the up-projection, a column of the down-projection.
PARAMS_PER_NEURON = HIDDEN + 1 + HIDDEN
ATOL = 1e-5


def _num_params(model):
    return sum(p.numel() for p in model.parameters())


def _layer_params_by_hand(num_heads, width):
    """Parameters of one transformer layer with `num_heads` heads and FFN width `width` (all families here)."""
    attention = 3 * (HIDDEN * num_heads * HEAD_SIZE + num_heads * HEAD_SIZE) + num_heads * HEAD_SIZE * HIDDEN + HIDDEN
    ffn = HIDDEN * width + width + width * HIDDEN + HIDDEN
    layer_norms = 2 * 2 * HIDDEN
    return attention + ffn + layer_norms


def _run(model, inputs, **kwargs):
    model.eval()
    with torch.no_grad():
        return model(**inputs, output_hidden_states=True, **kwargs)


def _masked_run(model, inputs, heads=None, ffn=None, layers=None, **kwargs):
    """Outputs of `model` with the given heads/neurons/layers (current indices) masked to 0 through hooks."""
    head_masks, ffn_masks, layer_mask = full_masks(model)
    for layer, indices in (heads or {}).items():
        head_masks[layer][indices] = 0
    for layer, indices in (ffn or {}).items():
        ffn_masks[layer][indices] = 0
    for layer in layers or []:
        layer_mask[layer] = 0
    with MaskHooks(model, head_masks, ffn_masks, layer_mask if layers else None):
        return _run(model, inputs, **kwargs)


def _assert_same_outputs(actual, expected, atol=ATOL, logits=True):
    if logits:
        torch.testing.assert_close(actual.logits, expected.logits, rtol=0, atol=atol)
    # The tiny models' logits are small (~1e-3 for audio); the last hidden state is a sharper comparison.
    torch.testing.assert_close(actual.hidden_states[-1], expected.hidden_states[-1], rtol=0, atol=atol)


def _assert_masking_matters(masked, original):
    # Otherwise the equivalence checks below could not tell which heads/neurons were removed.
    assert (masked.hidden_states[-1] - original.hidden_states[-1]).abs().max() > 1e-3


def _eager(model):
    """The same model with eager attention, so that `output_attentions=True` returns the probabilities."""
    config = copy.deepcopy(model.config)
    config._attn_implementation = "eager"
    eager = type(model)(config)
    eager.load_state_dict(model.state_dict())
    return eager.eval()


def _snapshot(model):
    return (
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        copy.deepcopy(model.config.to_dict()),
        [type(m).__name__ for m in model.modules()],
    )


def _assert_unchanged(model, snapshot):
    state, config, module_types = snapshot
    now = model.state_dict()
    assert now.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(now[key], value), f"{key} changed"
    assert model.config.to_dict() == config
    assert [type(m).__name__ for m in model.modules()] == module_types


# -- identity --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_pruning_nothing_is_the_identity(model_type):
    model = build_model(model_type).eval()
    inputs = make_inputs(model_type)
    before = _run(model, inputs)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    prune_heads(model, {})
    prune_heads(model, {0: []})
    prune_ffn(model, {})
    prune_ffn(model, {1: []})
    drop_layers(model, [])

    after = _run(model, inputs)
    _assert_same_outputs(after, before, atol=0)
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    record = pruning_record(model)
    assert record["num_heads"] == [HEADS] * 4
    assert record["intermediate_sizes"] == [FFN] * 4
    assert record["source_layers"] == [0, 1, 2, 3]
    assert record["stock_loadable"] is True
    assert hf_slim.get_adapter(model).num_layers(model.config) == 4


# -- equivalence with the masked original ----------------------------------------------------------------------------
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_pruned_heads_equal_masked_heads(model_type):
    model = build_model(model_type).eval()
    inputs = make_inputs(model_type)
    original = _run(model, inputs)
    masked = _masked_run(model, inputs, heads=HEAD_SPEC)
    _assert_masking_matters(masked, original)

    prune_heads(model, HEAD_SPEC)

    _assert_same_outputs(_run(model, inputs), masked)
    adapter = hf_slim.get_adapter(model)
    layers = adapter.get_layers(model)
    assert isinstance(adapter.layer_module(layers[2], "attention"), EmptyAttention)
    for index, expected in enumerate([3, 1, 0, 4]):
        if expected:
            attention = adapter.layer_module(layers[index], "attention")
            assert getattr(attention, adapter.heads_attr) == expected
            assert adapter.layer_module(layers[index], "query").weight.shape == (expected * HEAD_SIZE, HIDDEN)
            assert adapter.layer_module(layers[index], "attention_output").weight.shape == (
                HIDDEN,
                expected * HEAD_SIZE,
            )


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_pruned_ffn_equals_masked_neurons(model_type):
    model = build_model(model_type).eval()
    inputs = make_inputs(model_type)
    original = _run(model, inputs)
    masked = _masked_run(model, inputs, ffn=FFN_SPEC)
    _assert_masking_matters(masked, original)

    prune_ffn(model, FFN_SPEC)

    _assert_same_outputs(_run(model, inputs), masked)
    adapter = hf_slim.get_adapter(model)
    layers = adapter.get_layers(model)
    assert isinstance(adapter.layer_module(layers[1], "ffn_in"), ZeroWidth)
    assert isinstance(adapter.layer_module(layers[1], "ffn_out"), BiasOnly)
    assert adapter.layer_module(layers[0], "ffn_in").weight.shape == (FFN - 3, HIDDEN)
    assert adapter.layer_module(layers[0], "ffn_out").weight.shape == (HIDDEN, FFN - 3)
    assert adapter.layer_module(layers[3], "ffn_in").out_features == FFN - 10


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_heads_and_ffn_pruned_together_equal_masks(model_type):
    model = build_model(model_type).eval()
    inputs = make_inputs(model_type)
    masked = _masked_run(model, inputs, heads=HEAD_SPEC, ffn=FFN_SPEC)

    prune_ffn(model, FFN_SPEC)
    prune_heads(model, HEAD_SPEC)

    _assert_same_outputs(_run(model, inputs), masked)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_drop_layers_equals_layer_mask(model_type):
    model = build_model(model_type).eval()
    inputs = make_inputs(model_type)
    original = _run(model, inputs)
    masked = _masked_run(model, inputs, layers=[1, 2])
    _assert_masking_matters(masked, original)
    weights = getattr(model, "layer_weights", None)
    weights = None if weights is None else weights.detach().clone()

    drop_layers(model, [1, 2])

    pruned = _run(model, inputs)
    assert len(pruned.hidden_states) == 3
    # The tiny Wav2Vec2 classifier pools a softmax-weighted sum over all hidden states (use_weighted_layer_sum=True).
    # A masked layer repeats its input in that sum, so drop_layers merges the dropped states' weights into the state
    # they repeated (log-sum-exp of the logits): the logits stay identical.
    _assert_same_outputs(pruned, masked)
    if weights is not None:
        # Remaining states: the embeddings', layer 0's (which layers 1 and 2 repeated) and layer 3's.
        expected = torch.stack([weights[0], torch.logsumexp(weights[1:4], 0), weights[4]])
        torch.testing.assert_close(model.layer_weights.detach(), expected)
    assert hf_slim.get_adapter(model).num_layers(model.config) == 2


def test_drop_layers_without_weighted_layer_sum_equals_layer_mask():
    reference = build_model("wav2vec2")
    config = copy.deepcopy(reference.config)
    config.use_weighted_layer_sum = False
    model = Wav2Vec2ForSequenceClassification(config).eval()
    model.load_state_dict(reference.state_dict(), strict=False)
    inputs = make_inputs("wav2vec2")
    masked = _masked_run(model, inputs, layers=[0, 2])

    drop_layers(model, [0, 2])

    _assert_same_outputs(_run(model, inputs), masked)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_everything_pruned_together_equals_masks(model_type):
    model = build_model(model_type).eval()
    inputs = make_inputs(model_type)
    heads, ffn = {0: [1], 1: [0, 1, 2, 3], 3: [2, 3]}, {0: [4], 1: list(range(FFN)), 3: [0, 1, 2]}
    masked = _masked_run(model, inputs, heads=heads, ffn=ffn, layers=[2])

    prune_heads(model, heads)
    prune_ffn(model, ffn)
    drop_layers(model, [2])

    weighted_sum = getattr(model.config, "use_weighted_layer_sum", False)
    _assert_same_outputs(_run(model, inputs), masked, logits=not weighted_sum)
    assert pruning_record(model)["num_heads"] == [3, 0, 2]


# -- attention probabilities -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_attentions_of_partially_pruned_layers(model_type):
    model = _eager(build_model(model_type))
    inputs = make_inputs(model_type)
    heads = {0: [1], 1: [0, 2, 3]}
    masked = _masked_run(model, inputs, heads=heads, output_attentions=True)

    prune_heads(model, heads)

    pruned = _run(model, inputs, output_attentions=True)
    _assert_same_outputs(pruned, masked)
    assert len(pruned.attentions) == 4
    for layer, kept in enumerate([[0, 2, 3], [1], [0, 1, 2, 3], [0, 1, 2, 3]]):
        assert pruned.attentions[layer].shape[1] == len(kept)
        # Masks act on the heads' context, so the masked original still computes the probabilities of every head.
        torch.testing.assert_close(pruned.attentions[layer], masked.attentions[layer][:, kept], rtol=0, atol=ATOL)


@pytest.mark.parametrize(
    "model_type",
    MODEL_TYPES,
)
def test_attentions_stay_aligned_with_layers_when_a_layer_has_no_heads(model_type):
    model = _eager(build_model(model_type))
    inputs = make_inputs(model_type)
    masked = _masked_run(model, inputs, heads={1: [0, 1, 2, 3]}, output_attentions=True)

    prune_heads(model, {1: [0, 1, 2, 3]})

    pruned = _run(model, inputs, output_attentions=True)
    _assert_same_outputs(pruned, masked)
    # One entry per layer, so that attentions[i] belongs to layer i (as distillation losses assume).
    assert len(pruned.attentions) == 4
    # The headless layer's attention map has zero heads.
    assert pruned.attentions[1].shape == (*masked.attentions[1].shape[:1], 0, *masked.attentions[1].shape[2:])
    for layer in (0, 2, 3):
        torch.testing.assert_close(pruned.attentions[layer], masked.attentions[layer], rtol=0, atol=ATOL)


# -- shapes and counts -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_parameter_counts_shrink_by_what_was_removed(model_type):
    model = build_model(model_type)
    adapter = hf_slim.get_adapter(model)
    start = _num_params(model)
    assert [sum(p.numel() for p in layer.parameters()) for layer in adapter.get_layers(model)] == [
        _layer_params_by_hand(HEADS, FFN)
    ] * 4

    prune_heads(model, HEAD_SPEC)
    after_heads = _num_params(model)
    assert start - after_heads == 8 * PARAMS_PER_HEAD

    prune_ffn(model, FFN_SPEC)
    after_ffn = _num_params(model)
    assert after_heads - after_ffn == (3 + FFN + 10) * PARAMS_PER_NEURON

    expected_layers = [(3, FFN - 3), (1, 0), (0, FFN), (4, FFN - 10)]
    per_layer = [sum(p.numel() for p in layer.parameters()) for layer in adapter.get_layers(model)]
    assert per_layer == [_layer_params_by_hand(n, f) for n, f in expected_layers]

    drop_layers(model, [1, 3])
    # The weighted-layer-sum models also lose one layer weight per dropped layer.
    weights = 2 if getattr(model.config, "use_weighted_layer_sum", False) else 0
    assert after_ffn - _num_params(model) == per_layer[1] + per_layer[3] + weights
    assert len(adapter.get_layers(model)) == 2


@pytest.mark.parametrize("model_type", ["bert", "distilbert", "wav2vec2"])
def test_flops_shrink_by_what_was_removed(model_type):
    stats = pytest.importorskip("hf_slim.stats")
    model = build_model(model_type)
    seq = 10
    before = stats.model_stats(model, seq_len=seq)

    prune_heads(model, HEAD_SPEC)
    prune_ffn(model, FFN_SPEC)
    after = stats.model_stats(model, seq_len=seq)

    per_head = seq * (2 * 4 * HIDDEN * HEAD_SIZE + 2 * 2 * seq * HEAD_SIZE)
    per_neuron = seq * 2 * 2 * HIDDEN
    removed = [(1, 3), (3, FFN), (4, 0), (0, 10)]
    assert after["num_heads"] == [3, 1, 0, 4]
    assert after["intermediate_sizes"] == [FFN - 3, 0, FFN, FFN - 10]
    assert [b - a for b, a in zip(before["flops"]["per_layer"], after["flops"]["per_layer"], strict=True)] == [
        h * per_head + n * per_neuron for h, n in removed
    ]
    assert before["num_parameters"] - after["num_parameters"] == 8 * PARAMS_PER_HEAD + 50 * PARAMS_PER_NEURON

    layer_flops = after["flops"]["per_layer"]
    drop_layers(model, [0])
    dropped = stats.model_stats(model, seq_len=seq)
    assert dropped["flops"]["per_layer"] == layer_flops[1:]
    assert dropped["flops"]["total"] == after["flops"]["total"] - layer_flops[0]


# -- the config record -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_record_describes_what_was_removed(model_type):
    model = build_model(model_type)
    adapter = hf_slim.get_adapter(model)

    prune_heads(model, HEAD_SPEC)
    prune_ffn(model, FFN_SPEC)
    drop_layers(model, [3])

    record = model.config.hf_slim
    assert record["original"] == {"num_layers": 4, "num_heads": HEADS, "intermediate_size": FFN}
    assert record["source_layers"] == [0, 1, 2]
    assert record["num_heads"] == [3, 1, 0]
    assert record["heads_kept"] == [[0, 2, 3], [1], []]
    assert record["intermediate_sizes"] == [FFN - 3, 0, FFN]
    assert record["history"] == [
        {"op": "prune_heads", "heads": {"0": [1], "1": [0, 2, 3], "2": [0, 1, 2, 3]}},
        {"op": "prune_ffn", "neurons": {"0": 3, "1": FFN, "3": 10}},
        {"op": "drop_layers", "layers": [3]},
    ]
    assert record["stock_loadable"] is False
    assert adapter.num_layers(model.config) == 3
    # Non-uniform widths: the config keeps the original width, the record has the real ones.
    assert adapter.intermediate_size(model.config) == FFN
    # A layer without heads cannot be described by config.pruned_heads.
    assert model.config.pruned_heads == {}
    # The record survives a JSON round trip of the config.
    assert type(model.config).from_dict(model.config.to_dict()).hf_slim == record


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_uniform_ffn_width_is_written_to_the_config(model_type):
    model = build_model(model_type)
    adapter = hf_slim.get_adapter(model)

    prune_ffn(model, {layer: [0, layer + 1] for layer in range(4)})

    assert adapter.intermediate_size(model.config) == FFN - 2
    assert model.config.hf_slim["intermediate_sizes"] == [FFN - 2] * 4
    assert model.config.hf_slim["stock_loadable"] is True


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_config_pruned_heads_written_for_stock_families(model_type):
    model = build_model(model_type)
    stock = hf_slim.get_adapter(model).stock_pruned_heads

    prune_heads(model, {0: [1], 2: [0, 3]})

    assert model.config.pruned_heads == ({0: [1], 2: [0, 3]} if stock else {})
    assert model.config.hf_slim["stock_loadable"] is stock
    assert stock is (model_type not in ("wav2vec2", "hubert"))


@pytest.mark.parametrize("model_type", ["bert", "wav2vec2"])
def test_successive_head_pruning_uses_current_indices(model_type):
    model = build_model(model_type).eval()
    inputs = make_inputs(model_type)
    masked = _masked_run(model, inputs, heads={0: [0, 1], 1: [3]})

    prune_heads(model, {0: [0]})
    prune_heads(model, {0: [0], 1: [3]})

    _assert_same_outputs(_run(model, inputs), masked)
    record = model.config.hf_slim
    assert record["heads_kept"][:2] == [[2, 3], [0, 1, 2]]
    assert record["num_heads"] == [2, 3, 4, 4]
    assert [entry["heads"] for entry in record["history"]] == [{"0": [0]}, {"0": [0], "1": [3]}]
    if model_type == "bert":
        assert model.config.pruned_heads == {0: [0, 1], 1: [3]}


@pytest.mark.parametrize("model_type", ["bert", "wav2vec2"])
def test_successive_ffn_pruning_uses_current_indices(model_type):
    model = build_model(model_type).eval()
    inputs = make_inputs(model_type)
    masked = _masked_run(model, inputs, ffn={2: [0, 1, 9]})

    prune_ffn(model, {2: [0, 9]})
    prune_ffn(model, {2: [0]})

    _assert_same_outputs(_run(model, inputs), masked)
    assert model.config.hf_slim["intermediate_sizes"] == [FFN, FFN, FFN - 3, FFN]


@pytest.mark.parametrize("model_type", ["bert", "distilbert", "hubert"])
def test_drop_layers_remaps_record_and_pruned_heads(model_type):
    model = build_model(model_type).eval()
    inputs = make_inputs(model_type)
    # Original layer 2 is the new layer 1 after dropping layer 0.
    masked = _masked_run(model, inputs, heads={2: [3, 0]}, ffn={1: [5]}, layers=[0])

    prune_heads(model, {2: [3]})
    drop_layers(model, [0])
    prune_heads(model, {1: [0]})
    prune_ffn(model, {0: [5]})

    _assert_same_outputs(_run(model, inputs), masked)
    record = model.config.hf_slim
    assert record["source_layers"] == [1, 2, 3]
    assert record["heads_kept"] == [[0, 1, 2, 3], [1, 2], [0, 1, 2, 3]]
    assert record["num_heads"] == [4, 2, 4]
    assert record["intermediate_sizes"] == [FFN - 1, FFN, FFN]
    # History names layers by their original index.
    assert record["history"] == [
        {"op": "prune_heads", "heads": {"2": [3]}},
        {"op": "drop_layers", "layers": [0]},
        {"op": "prune_heads", "heads": {"2": [0]}},
        {"op": "prune_ffn", "neurons": {"1": 1}},
    ]
    stock = hf_slim.get_adapter(model).stock_pruned_heads
    assert model.config.pruned_heads == ({1: [0, 3]} if stock else {})
    assert hf_slim.get_adapter(model).num_layers(model.config) == 3


def test_record_of_a_model_pruned_by_transformers_keeps_its_heads():
    model = build_model("bert").eval()
    model.prune_heads({0: [1]})

    prune_ffn(model, {layer: [0] for layer in range(4)})

    record = model.config.hf_slim
    assert record["num_heads"] == [3, 4, 4, 4]
    assert record["heads_kept"][0] == [0, 2, 3]
    assert model.config.pruned_heads == {0: [1]}


@pytest.mark.parametrize("model_type", ["bert", "wav2vec2"])
def test_pruned_model_trains(model_type):
    model = build_model(model_type)
    prune_heads(model, HEAD_SPEC)
    prune_ffn(model, FFN_SPEC)
    model.train()
    inputs = make_inputs(model_type)

    loss = model(**inputs, labels=torch.tensor([0, 1, 2, 0])).loss
    loss.backward()

    assert torch.isfinite(loss)
    adapter = hf_slim.get_adapter(model)
    layers = adapter.get_layers(model)
    # The stand-ins keep the removed blocks' biases as trainable parameters.
    assert adapter.layer_module(layers[1], "ffn_out").bias.grad is not None
    assert adapter.layer_module(layers[0], "query").weight.grad is not None
    assert all(p.requires_grad for p in model.parameters())


# -- errors ----------------------------------------------------------------------------------------------------------
def _empty_layer_2(model):
    prune_heads(model, {2: [0, 1, 2, 3]})


ERROR_CASES = [
    # (id, setup, call, message pattern)
    ("head-out-of-range", None, lambda m: prune_heads(m, {0: [1], 1: [4]}), r"layer 1 has 4 heads.*\[4\]"),
    ("head-negative", None, lambda m: prune_heads(m, {0: [-1]}), r"layer 0 has 4 heads.*\[-1\]"),
    ("head-layer-missing", None, lambda m: prune_heads(m, {0: [1], 9: [0]}), r"layer 9 does not exist.*4 layers"),
    ("head-layer-negative", None, lambda m: prune_heads(m, {-1: [0]}), r"layer -1 does not exist"),
    ("head-float-index", None, lambda m: prune_heads(m, {0: [1.5]}), r"non-integer"),
    ("head-bool-index", None, lambda m: prune_heads(m, {0: [True]}), r"non-integer"),
    ("head-string-layer", None, lambda m: prune_heads(m, {"0": [1]}), r"not an integer layer index"),
    ("head-bool-layer", None, lambda m: prune_heads(m, {True: [1]}), r"not an integer layer index"),
    ("head-not-a-list", None, lambda m: prune_heads(m, {0: 1}), r"list of head indices"),
    ("head-string-list", None, lambda m: prune_heads(m, {0: "01"}), r"list of head indices"),
    ("head-not-a-dict", None, lambda m: prune_heads(m, [0, 1]), r"expects a dict"),
    ("head-of-empty-layer", _empty_layer_2, lambda m: prune_heads(m, {2: [0]}), r"layer 2 has 0 heads"),
    ("ffn-out-of-range", None, lambda m: prune_ffn(m, {0: [1], 3: [FFN]}), rf"layer 3 has {FFN} neurons.*\[{FFN}\]"),
    ("ffn-layer-missing", None, lambda m: prune_ffn(m, {4: [0]}), r"layer 4 does not exist"),
    ("ffn-float-index", None, lambda m: prune_ffn(m, {0: [0.0]}), r"non-integer"),
    ("drop-every-layer", None, lambda m: drop_layers(m, [3, 2, 1, 0]), r"cannot remove all 4 layers"),
    ("drop-every-layer-repeated", None, lambda m: drop_layers(m, [0, 1, 2, 3, 3]), r"cannot remove all 4 layers"),
    ("drop-missing-layer", None, lambda m: drop_layers(m, [0, 4]), r"layer 4 does not exist"),
    ("drop-negative-layer", None, lambda m: drop_layers(m, [-1]), r"layer -1 does not exist"),
    ("drop-float-layer", None, lambda m: drop_layers(m, [1.0]), r"not an integer"),
    ("drop-int-not-list", None, lambda m: drop_layers(m, 1), r"expects a list"),
]


@pytest.mark.parametrize("model_type", ["bert", "wav2vec2"])
@pytest.mark.parametrize("setup, call, match", [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_errors_are_raised_before_anything_changes(model_type, setup, call, match):
    model = build_model(model_type)
    if setup is not None:
        setup(model)
    snapshot = _snapshot(model)

    with pytest.raises(HfSlimError, match=match) as error:
        call(model)

    assert isinstance(error.value, ValueError)
    _assert_unchanged(model, snapshot)


def test_float_tensor_layer_index_is_rejected():
    model = build_model("bert")
    snapshot = _snapshot(model)

    with pytest.raises(HfSlimError, match="integer"):
        prune_heads(model, {torch.tensor(1.5): [0]})

    _assert_unchanged(model, snapshot)


def test_integer_like_indices_are_accepted():
    model = build_model("bert")

    prune_heads(model, {torch.tensor(0): torch.tensor([1, 1]), 2: (3,)})
    drop_layers(model, [torch.tensor(3)])

    assert model.config.hf_slim["heads_kept"] == [[0, 2, 3], [0, 1, 2, 3], [0, 1, 2]]


@pytest.mark.parametrize(
    "call",
    [lambda m: prune_heads(m, {0: [0]}), lambda m: prune_ffn(m, {0: [0]}), lambda m: drop_layers(m, [0])],
    ids=["prune_heads", "prune_ffn", "drop_layers"],
)
def test_unsupported_architecture(call):
    config = GPT2Config(vocab_size=99, n_positions=64, n_embd=32, n_layer=2, n_head=4, num_labels=3)
    model = GPT2ForSequenceClassification(config)
    snapshot = _snapshot(model)

    with pytest.raises(UnsupportedArchitectureError, match="gpt2") as error:
        call(model)

    for model_type in MODEL_TYPES:
        assert model_type in str(error.value)
    _assert_unchanged(model, snapshot)
