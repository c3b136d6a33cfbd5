"""Tests of the importance scores: first-order gates (checked against finite differences), block influence,
skip-loss and magnitude scores, on tiny models built from configs."""

import contextlib
import math

import pytest
import torch
from tiny_models import MODEL_TYPES, NUM_LABELS, build_model, make_dataset, make_inputs
from torch.utils.data import DataLoader
from transformers import default_data_collator

from hf_slim.errors import HfSlimError
from hf_slim.prune import (
    MaskHooks,
    ffn_importance,
    gate_scores,
    head_importance,
    layer_importance,
    magnitude_importance,
    prune_ffn,
    prune_heads,
)

HEADS, HEAD_SIZE, FFN = 4, 8, 37
SCORED_TYPES = ("bert", "vit", "wav2vec2")

# Module paths written out by hand (not through the adapter) so the reference does not share the code under test.
LAYERS = {"bert": "bert.encoder.layer", "vit": "vit.encoder.layer", "wav2vec2": "wav2vec2.encoder.layers"}
PARTS = {
    "bert": {
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "o": "attention.output.dense",
        "up": "intermediate.dense",
        "down": "output.dense",
    },
    "vit": {
        "q": "attention.attention.query",
        "k": "attention.attention.key",
        "v": "attention.attention.value",
        "o": "attention.output.dense",
        "up": "intermediate.dense",
        "down": "output.dense",
    },
    "wav2vec2": {
        "q": "attention.q_proj",
        "k": "attention.k_proj",
        "v": "attention.v_proj",
        "o": "attention.out_proj",
        "up": "feed_forward.intermediate_dense",
        "down": "feed_forward.output_dense",
    },
}


def layers_of(model, model_type):
    return model.get_submodule(LAYERS[model_type])


def part(model, model_type, layer, name):
    return layers_of(model, model_type)[layer].get_submodule(PARTS[model_type][name])


def make_batches(model_type, count=2, batch_size=4, dtype=None, labels=True):
    batches = []
    for seed in range(count):
        batch = make_inputs(model_type, batch_size=batch_size, seed=seed)
        if dtype is not None:
            batch = {k: v.to(dtype) if v.is_floating_point() else v for k, v in batch.items()}
        if labels:
            generator = torch.Generator().manual_seed(100 + seed)
            batch["labels"] = torch.randint(0, NUM_LABELS, (batch_size,), generator=generator)
        batches.append(batch)
    return batches


def double_model(model_type, num_layers=2, seed=0):
    """A float64 model in eval mode (no dropout), so that finite differences are accurate."""
    return build_model(model_type, num_layers=num_layers, seed=seed).double().eval()


def loss_of(model, batch):
    with torch.no_grad():
        return model(**batch).loss.item()


def hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def central_difference(model, batch, make_gate, eps=1e-3):
    """(L(gate = 1 + eps) - L(gate = 1 - eps)) / (2 eps), the gate being applied by the context manager
    `make_gate(value)`."""
    with make_gate(1 + eps):
        plus = loss_of(model, batch)
    with make_gate(1 - eps):
        minus = loss_of(model, batch)
    return (plus - minus) / (2 * eps)


@contextlib.contextmanager
def scaled(tensors_and_index, value):
    """Multiply slices of parameters by `value`, restoring them afterwards.

    A head's context is linear in its value rows, and a neuron's contribution linear in its down-projection column,
    so scaling those is exactly a gate on the head / neuron, with no code shared with `MaskHooks`."""
    saved = [(tensor, tensor.detach().clone()) for tensor, _ in tensors_and_index]
    try:
        with torch.no_grad():
            for tensor, index in tensors_and_index:
                tensor[index] *= value
        yield
    finally:
        with torch.no_grad():
            for tensor, original in saved:
                tensor.copy_(original)


@contextlib.contextmanager
def layer_gate(model, model_type, index, value):
    """Own hook making layer `index` compute `x + value * (layer(x) - x)`."""

    def hook(module, args, kwargs, output):
        hidden_in = args[0] if args else kwargs["hidden_states"]
        hidden_out = output[0] if isinstance(output, tuple) else output
        mixed = hidden_in + value * (hidden_out - hidden_in)
        return (mixed,) + tuple(output[1:]) if isinstance(output, tuple) else mixed

    handle = layers_of(model, model_type)[index].register_forward_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def assert_close_scalar(actual, expected, rel=1e-4, abs_=1e-12, what=""):
    assert math.isclose(actual, expected, rel_tol=rel, abs_tol=abs_), f"{what}: {actual} != {expected}"


# -- shapes, normalisation, side effects -----------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_scores_have_one_entry_per_head_and_neuron(model_type):
    model = build_model(model_type, num_layers=2)
    batches = make_batches(model_type)
    heads = head_importance(model, batches)
    ffn = ffn_importance(model, batches)
    assert [tuple(s.shape) for s in heads] == [(HEADS,), (HEADS,)]
    assert [tuple(s.shape) for s in ffn] == [(FFN,), (FFN,)]
    for scores in heads + ffn:
        assert torch.isfinite(scores).all()
        assert (scores >= 0).all()
        assert scores.sum() > 0, "a layer got all-zero scores: no gradient reached its gates"


@pytest.mark.parametrize("model_type", SCORED_TYPES)
def test_scores_after_physical_pruning_follow_the_new_structure(model_type):
    model = build_model(model_type, num_layers=3)
    prune_heads(model, {0: [0, 1, 2, 3], 1: [2]})
    prune_ffn(model, {1: list(range(FFN)), 2: list(range(10))})
    batches = make_batches(model_type)
    heads = head_importance(model, batches)
    ffn = ffn_importance(model, batches)
    assert [s.numel() for s in heads] == [0, 3, 4]
    assert [s.numel() for s in ffn] == [FFN, 0, FFN - 10]
    raw_heads, raw_ffn, raw_layers = gate_scores(model, batches, layers=True)
    assert [s.numel() for s in raw_heads] == [0, 3, 4]
    assert [s.numel() for s in raw_ffn] == [FFN, 0, FFN - 10]
    assert raw_layers.shape == (3,)
    for scores in [heads[1], heads[2], ffn[0], ffn[2]]:
        assert torch.allclose(scores.norm(), torch.tensor(1.0), atol=1e-5)
    magnitude = magnitude_importance(model)
    assert [s.numel() for s in magnitude["heads"]] == [0, 3, 4]
    assert [s.numel() for s in magnitude["ffn"]] == [FFN, 0, FFN - 10]


@pytest.mark.parametrize("model_type", SCORED_TYPES)
def test_normalised_scores_are_raw_scores_over_their_layer_norm(model_type):
    model = build_model(model_type, num_layers=2)
    batches = make_batches(model_type)
    for function in (head_importance, ffn_importance):
        raw = function(model, batches, normalize=False)
        normalised = function(model, batches, normalize=True)
        for r, n in zip(raw, normalised, strict=True):
            assert torch.allclose(n.norm(), torch.tensor(1.0), atol=1e-5)
            assert torch.allclose(n, r / r.norm(), rtol=1e-5, atol=1e-8)
        # Raw scores are not already normalised: otherwise the test above would prove nothing.
        assert any(abs(r.norm().item() - 1) > 1e-3 for r in raw)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("model_type", SCORED_TYPES)
def test_scoring_leaves_the_model_as_it_was(model_type, training):
    model = build_model(model_type, num_layers=2)
    model.train(training)
    probe = make_inputs(model_type, batch_size=2, seed=7)
    model.eval()
    with torch.no_grad():
        before = model(**probe).logits
    model.train(training)
    hooks = hook_count(model)
    batches = make_batches(model_type)

    gate_scores(model, batches, layers=True)
    head_importance(model, batches)
    ffn_importance(model, batches)
    layer_importance(model, batches, method="block_influence")
    layer_importance(model, batches, method="loss")

    assert model.training is training
    assert all(p.grad is None for p in model.parameters()), "scoring left gradients on the model's parameters"
    assert all(p.requires_grad for p in model.parameters())
    assert hook_count(model) == hooks, "scoring left hooks on the model"
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(**probe).logits, before)


def test_mode_is_restored_when_scoring_fails():
    model = build_model("bert", num_layers=2).train()
    batches = make_batches("bert", labels=False)
    with pytest.raises(HfSlimError):
        head_importance(model, batches)
    assert model.training
    with pytest.raises(HfSlimError):
        layer_importance(model, batches, method="loss")
    assert model.training
    assert hook_count(model) == hook_count(build_model("bert", num_layers=2))


# -- first-order scores against finite differences -------------------------------------------------------------------


@pytest.mark.parametrize("pruned", [False, True], ids=["dense", "pruned"])
@pytest.mark.parametrize("model_type", SCORED_TYPES)
def test_head_scores_equal_gate_gradients(model_type, pruned):
    model = double_model(model_type)
    if pruned:
        prune_heads(model, {0: [1]})
        prune_ffn(model, {1: [0, 5, 6]})
    (batch,) = make_batches(model_type, count=1, dtype=torch.float64)
    raw = head_importance(model, [batch], normalize=False)
    shapes = [s.numel() for s in raw]
    assert shapes == ([3, 4] if pruned else [4, 4])
    for layer, count in enumerate(shapes):
        value = part(model, model_type, layer, "v")
        for head in range(count):
            rows = slice(head * HEAD_SIZE, (head + 1) * HEAD_SIZE)

            def gate(g, value=value, rows=rows):
                return scaled([(value.weight, rows), (value.bias, rows)], g)

            def mask_gate(g, layer=layer, head=head):
                masks = [torch.ones(n, dtype=torch.float64) for n in shapes]
                masks[layer][head] = g
                return MaskHooks(model, head_masks=masks)

            reference = abs(central_difference(model, batch, gate))
            assert reference > 1e-10, "degenerate reference: the head does not affect the loss"
            assert_close_scalar(raw[layer][head].item(), reference, what=f"layer {layer} head {head}")
            # MaskHooks gates the same head.
            assert_close_scalar(abs(central_difference(model, batch, mask_gate)), reference, rel=1e-6)


@pytest.mark.parametrize("model_type", SCORED_TYPES)
def test_ffn_scores_equal_gate_gradients(model_type):
    model = double_model(model_type)
    (batch,) = make_batches(model_type, count=1, dtype=torch.float64)
    raw = ffn_importance(model, [batch], normalize=False)
    for layer in range(2):
        down = part(model, model_type, layer, "down").weight
        # The largest, the smallest and two arbitrary neurons of each layer.
        for neuron in {int(raw[layer].argmax()), int(raw[layer].argmin()), 0, 11}:

            def gate(g, down=down, neuron=neuron):
                return scaled([(down, (slice(None), neuron))], g)

            reference = abs(central_difference(model, batch, gate))
            assert_close_scalar(raw[layer][neuron].item(), reference, what=f"layer {layer} neuron {neuron}")


@pytest.mark.parametrize("model_type", SCORED_TYPES)
def test_layer_gate_scores_equal_gate_gradients(model_type):
    model = double_model(model_type, num_layers=3)
    (batch,) = make_batches(model_type, count=1, dtype=torch.float64)
    heads, ffn, layers = gate_scores(model, [batch], layers=True)
    assert layers.shape == (3,)
    for layer in range(3):
        reference = abs(
            central_difference(model, batch, lambda g, layer=layer: layer_gate(model, model_type, layer, g))
        )
        assert reference > 1e-10
        assert_close_scalar(layers[layer].item(), reference, what=f"layer {layer}")
    # The head and neuron scores are the same with or without the layer gates.
    for a, b in zip(heads + ffn, sum(gate_scores(model, [batch])[:2], []), strict=True):
        assert torch.allclose(a, b, rtol=1e-6)
    assert gate_scores(model, [batch])[2] is None


def test_squared_scores_are_squared_gradients_summed_over_batches():
    model = build_model("bert", num_layers=2).eval()
    first, second = make_batches("bert", count=2)
    a_heads, a_ffn, a_layers = gate_scores(model, [first], layers=True)
    b_heads, b_ffn, b_layers = gate_scores(model, [second], layers=True)
    s_heads, s_ffn, s_layers = gate_scores(model, [first, second], square=True, layers=True)
    for a, b, s in zip(a_heads + a_ffn, b_heads + b_ffn, s_heads + s_ffn, strict=True):
        assert torch.allclose(s, a**2 + b**2, rtol=1e-5, atol=1e-12)
    assert torch.allclose(s_layers, a_layers**2 + b_layers**2, rtol=1e-5, atol=1e-12)


def test_first_order_scores_sum_absolute_gradients_over_batches():
    # |g1| + |g2|, not |g1 + g2|: gradients of opposite signs must not cancel.
    model = build_model("bert", num_layers=2)
    batches = make_batches("bert", count=3)
    together = head_importance(model, batches, normalize=False)
    apart = [head_importance(model, [batch], normalize=False) for batch in batches]
    for layer, scores in enumerate(together):
        assert torch.allclose(scores, sum(a[layer] for a in apart), rtol=1e-5, atol=1e-10)
    first_only = head_importance(model, batches, normalize=False, max_batches=1)
    for layer, scores in enumerate(first_only):
        assert torch.allclose(scores, apart[0][layer], rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("model_type", SCORED_TYPES)
def test_dead_units_score_zero_and_are_pruned_first(model_type):
    """A head whose values are zero and a neuron whose output column is zero do not affect the loss: they score 0,
    rank lowest, and removing them leaves the loss unchanged, unlike removing the top-scored unit."""
    model = double_model(model_type)  # float64: removing a head of a tiny wav2vec2 moves its loss by ~1e-6
    dead_head, dead_neuron = 2, 5
    with torch.no_grad():
        value = part(model, model_type, 1, "v")
        value.weight[dead_head * HEAD_SIZE : (dead_head + 1) * HEAD_SIZE] = 0
        value.bias[dead_head * HEAD_SIZE : (dead_head + 1) * HEAD_SIZE] = 0
        part(model, model_type, 0, "down").weight[:, dead_neuron] = 0
    batches = make_batches(model_type, dtype=torch.float64)
    heads = head_importance(model, batches)
    ffn = ffn_importance(model, batches)
    assert heads[1][dead_head].item() == 0
    assert int(torch.cat(heads).argmin()) == HEADS + dead_head
    assert ffn[0][dead_neuron].item() == 0
    assert int(torch.cat(ffn).argmin()) == dead_neuron

    base = sum(loss_of(model, batch) for batch in batches)

    def loss_without_head(layer, head):
        masks = [torch.ones(HEADS), torch.ones(HEADS)]
        masks[layer][head] = 0
        with MaskHooks(model, head_masks=masks):
            return sum(loss_of(model, batch) for batch in batches)

    top_layer, top_head = divmod(int(torch.cat(heads).argmax()), HEADS)
    assert math.isclose(loss_without_head(1, dead_head), base, rel_tol=1e-12)
    assert abs(loss_without_head(top_layer, top_head) - base) > 1e-8


# -- layer importance ------------------------------------------------------------------------------------------------


def capture_layer_io(model, model_type):
    """Own forward hooks recording each layer's input and output hidden states."""
    records = {}
    handles = []
    for index, layer in enumerate(layers_of(model, model_type)):

        def pre(module, args, kwargs, index=index):
            records.setdefault(index, {})["in"] = args[0] if args else kwargs["hidden_states"]

        def post(module, args, output, index=index):
            records[index]["out"] = output[0] if isinstance(output, tuple) else output

        handles.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(layer.register_forward_hook(post))
    return records, handles


@pytest.mark.parametrize("model_type", SCORED_TYPES)
def test_block_influence_is_mean_one_minus_cosine_over_real_positions(model_type):
    model = build_model(model_type, num_layers=3)
    batches = make_batches(model_type, count=2)
    if model_type == "bert":
        assert (batches[0]["attention_mask"] == 0).any(), "the test needs padding to exercise the mask"
    sums, count = torch.zeros(3, dtype=torch.float64), 0.0
    records, handles = capture_layer_io(model, model_type)
    model.eval()
    try:
        for batch in batches:
            with torch.no_grad():
                model(**{k: v for k, v in batch.items() if k != "labels"})
            mask = batch.get("attention_mask")
            for index in range(3):
                a, b = records[index]["in"].double(), records[index]["out"].double()
                distance = 1 - (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
                valid = torch.ones_like(distance) if mask is None else mask.double()
                sums[index] += (distance * valid).sum()
            count += (torch.ones(distance.shape) if mask is None else mask).sum().item()
    finally:
        for handle in handles:
            handle.remove()
    expected = (sums / count).float()

    model.train()
    scores = layer_importance(model, batches)  # block_influence is the default
    assert model.training
    assert scores.shape == (3,)
    assert torch.allclose(scores, expected, rtol=1e-4, atol=1e-7)
    assert (scores > 0).all()
    # No labels needed for block influence.
    unlabelled = [{k: v for k, v in batch.items() if k != "labels"} for batch in batches]
    assert torch.allclose(layer_importance(model, unlabelled, "block_influence"), scores)


def test_block_influence_ignores_padding():
    model = build_model("bert", num_layers=2)
    (batch,) = make_batches("bert", count=1)
    scores = layer_importance(model, [batch])
    unmasked = dict(batch, attention_mask=torch.ones_like(batch["attention_mask"]))
    # Same tokens, but every position counts (and attends): the scores must differ.
    assert not torch.allclose(layer_importance(model, [unmasked]), scores, rtol=1e-4)
    # Changing the ids at padded positions changes nothing.
    noisy = dict(batch, input_ids=batch["input_ids"].masked_fill(batch["attention_mask"] == 0, 42))
    assert torch.allclose(layer_importance(model, [noisy]), scores, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("model_type", SCORED_TYPES)
def test_skip_loss_is_the_loss_increase_when_the_layer_is_skipped(model_type):
    model = double_model(model_type, num_layers=3)  # float64: skipping a layer of a tiny model moves the loss little
    batches = make_batches(model_type, count=2, dtype=torch.float64)
    expected = torch.zeros(3, dtype=torch.float64)
    for batch in batches:
        base = loss_of(model, batch)
        for index, layer in enumerate(layers_of(model, model_type)):

            def skip(module, args, kwargs, output):
                hidden_in = args[0] if args else kwargs["hidden_states"]
                return (hidden_in,) + tuple(output[1:]) if isinstance(output, tuple) else hidden_in

            handle = layer.register_forward_hook(skip, with_kwargs=True)
            try:
                expected[index] += loss_of(model, batch) - base
            finally:
                handle.remove()
    expected /= len(batches)
    scores = layer_importance(model, batches, method="loss")
    assert scores.shape == (3,)
    assert torch.allclose(scores.double(), expected, rtol=1e-5, atol=1e-10)
    assert scores.abs().max() > 1e-6
    assert not torch.allclose(scores, layer_importance(model, batches[:1], method="loss"))


def test_layer_importance_rejects_unknown_method():
    model = build_model("bert", num_layers=2)
    with pytest.raises(HfSlimError, match="method='cosine'") as info:
        layer_importance(model, make_batches("bert"), method="cosine")
    assert "block_influence" in str(info.value) and "loss" in str(info.value)


@pytest.mark.parametrize(
    "score",
    [
        lambda model, data: head_importance(model, data),
        lambda model, data: ffn_importance(model, data),
        lambda model, data: gate_scores(model, data, layers=True),
        lambda model, data: layer_importance(model, data, method="block_influence"),
        lambda model, data: layer_importance(model, data, method="loss"),
    ],
    ids=["heads", "ffn", "gates", "block_influence", "loss"],
)
def test_empty_dataloader_is_an_error(score):
    model = build_model("bert", num_layers=2)
    with pytest.raises(HfSlimError, match="no batches"):
        score(model, [])
    with pytest.raises(HfSlimError, match="no batches"):
        score(model, iter(make_batches("bert")[:0]))


def test_max_batches_zero_is_an_error():
    model = build_model("bert", num_layers=2)
    with pytest.raises(HfSlimError, match="max_batches"):
        head_importance(model, make_batches("bert"), max_batches=0)
    with pytest.raises(HfSlimError, match="max_batches"):
        layer_importance(model, make_batches("bert"), max_batches=0)


@pytest.mark.parametrize("function", [head_importance, ffn_importance], ids=["heads", "ffn"])
def test_first_order_scores_need_labels(function):
    model = build_model("bert", num_layers=2)
    with pytest.raises(HfSlimError, match="labels"):
        function(model, make_batches("bert", labels=False))


def test_batches_must_be_dicts():
    model = build_model("bert", num_layers=2)
    batch = make_batches("bert", count=1)[0]
    with pytest.raises(HfSlimError, match="dict"):
        head_importance(model, [(batch["input_ids"], batch["labels"])])


def test_scores_work_with_a_dataloader():
    model = build_model("bert", num_layers=2)
    dataset = make_dataset("bert", num_rows=8)
    loader = DataLoader(dataset, batch_size=4, collate_fn=default_data_collator)
    scores = head_importance(model, loader, normalize=False)
    by_hand = head_importance(model, list(loader), normalize=False)
    for a, b in zip(scores, by_hand, strict=True):
        assert torch.allclose(a, b)
    assert layer_importance(model, loader).shape == (2,)


# -- magnitude -------------------------------------------------------------------------------------------------------


def reference_magnitude(model, model_type, layer):
    q, k, v = (part(model, model_type, layer, name).weight for name in "qkv")
    o = part(model, model_type, layer, "o").weight
    heads = []
    for h in range(q.shape[0] // HEAD_SIZE):
        rows = slice(h * HEAD_SIZE, (h + 1) * HEAD_SIZE)
        total = sum((w[rows] ** 2).sum() for w in (q, k, v)) + (o[:, rows] ** 2).sum()
        heads.append(total.sqrt())
    up, down = part(model, model_type, layer, "up").weight, part(model, model_type, layer, "down").weight
    neurons = [((up[n] ** 2).sum() + (down[:, n] ** 2).sum()).sqrt() for n in range(up.shape[0])]
    return torch.stack(heads), torch.stack(neurons)


@pytest.mark.parametrize("model_type", SCORED_TYPES)
def test_magnitude_scores_are_weight_norms(model_type):
    model = build_model(model_type, num_layers=3)
    with torch.no_grad():
        # Make heads and neurons clearly different so that a permutation would be caught.
        part(model, model_type, 0, "q").weight[HEAD_SIZE : 2 * HEAD_SIZE] *= 3
        part(model, model_type, 1, "down").weight[:, 7] *= 5
    prune_heads(model, {1: [0]})
    prune_ffn(model, {2: [3, 4]})
    scores = magnitude_importance(model)
    assert set(scores) == {"heads", "ffn", "layers"}
    for layer in range(3):
        heads, neurons = reference_magnitude(model, model_type, layer)
        assert torch.allclose(scores["heads"][layer], heads, rtol=1e-5)
        assert torch.allclose(scores["ffn"][layer], neurons, rtol=1e-5)
    assert scores["heads"][1].numel() == 3 and scores["ffn"][2].numel() == FFN - 2
    assert int(scores["heads"][0].argmax()) == 1
    assert int(scores["ffn"][1].argmax()) == 7
    expected_layers = torch.stack(
        [sum((p**2).sum() for p in layer.parameters()).sqrt() for layer in layers_of(model, model_type)]
    )
    assert torch.allclose(scores["layers"], expected_layers, rtol=1e-5)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("model_type", SCORED_TYPES)
def test_magnitude_of_fully_pruned_layers_is_empty(model_type):
    model = build_model(model_type, num_layers=2)
    prune_heads(model, {0: list(range(HEADS))})
    prune_ffn(model, {1: list(range(FFN))})
    scores = magnitude_importance(model)
    assert scores["heads"][0].shape == (0,)
    assert scores["heads"][1].shape == (HEADS,)
    assert scores["ffn"][0].shape == (FFN,)
    assert scores["ffn"][1].shape == (0,)
    assert scores["layers"].shape == (2,) and (scores["layers"] > 0).all()
