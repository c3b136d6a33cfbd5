import copy

import pytest
import torch
from tiny_models import build_model, make_dataset
from torch.utils.data import DataLoader
from transformers import default_data_collator

from hf_slim.errors import HfSlimError
from hf_slim.modeling import from_pretrained
from hf_slim.prune.post_training import _solve_scales, prune_to_target, search_masks, unit_flops


def loader(model_type, rows=32, batch_size=4):
    return DataLoader(make_dataset(model_type, num_rows=rows), batch_size=batch_size, collate_fn=default_data_collator)


def test_unit_flops_formula():
    head, neuron = unit_flops(hidden_size=32, head_dim=8, seq_len=10)
    assert head == 2 * (4 * 32 * 8 + 2 * 10 * 8)
    assert neuron == 2 * 2 * 32


def test_search_masks_picks_the_best_split_under_the_budget():
    heads = [torch.tensor([5.0, 1.0]), torch.tensor([3.0, 0.5])]
    neurons = [torch.tensor([2.0, 2.0, 0.1]), torch.tensor([1.0, 0.2, 0.3])]
    # A head costs 10, a neuron 1; budget 23 allows 2 heads + 3 neurons (score 8 + 5) or 1 head + 6 neurons (5 + 5.6)
    # or 0 heads + 6 neurons; the best is 2 heads (5, 3) + the 3 best neurons (2, 2, 1).
    head_keep, neuron_keep = search_masks(heads, neurons, head_cost=10, neuron_cost=1, budget=23)
    assert [k.tolist() for k in head_keep] == [[True, False], [True, False]]
    assert [k.tolist() for k in neuron_keep] == [[True, True, False], [True, False, False]]


def test_search_masks_with_a_budget_too_small_for_anything_keeps_nothing():
    head_keep, neuron_keep = search_masks([torch.ones(2)], [torch.ones(3)], head_cost=10, neuron_cost=5, budget=4)
    assert not head_keep[0].any() and not neuron_keep[0].any()


def test_solve_scales_is_the_least_squares_optimum():
    torch.manual_seed(0)
    contributions = torch.randn(200, 5, 3, dtype=torch.float64)  # tokens x units x output dim
    gram = torch.einsum("tuo,tvo->uv", contributions, contributions)
    keep = torch.tensor([True, False, True, True, False])
    scales = _solve_scales(gram, keep, ridge=0.0)
    target = contributions.sum(1)
    kept = contributions[:, keep]
    reference = torch.linalg.lstsq(kept.permute(0, 2, 1).reshape(-1, 3), target.reshape(-1)).solution
    torch.testing.assert_close(scales, reference)
    error = (torch.einsum("tuo,u->to", kept, scales) - target).norm()
    assert error < (kept.sum(1) - target).norm()  # better than keeping the units as they are


@pytest.mark.parametrize("model_type", ["bert", "vit", "wav2vec2"])
def test_prune_to_target_meets_the_flops_budget_and_reloads(tmp_path, model_type):
    model = build_model(model_type, num_layers=2, hidden=32, heads=4, intermediate=48).eval()
    prune_to_target(model, loader(model_type), flops_ratio=0.5)
    report = model.config.hf_slim["history"][-1]
    assert report["op"] == "prune_to_target"
    assert 0.4 < report["flops_ratio_achieved"] <= 0.5
    assert model.config.hf_slim["num_heads"] == report["heads_kept"]
    assert model.config.hf_slim["intermediate_sizes"] == report["neurons_kept"]
    assert sum(report["heads_kept"]) < 8 or sum(report["neurons_kept"]) < 96
    model.save_pretrained(tmp_path)
    reloaded = from_pretrained(str(tmp_path))
    inputs = {k: torch.tensor(v) for k, v in make_dataset(model_type, num_rows=4)[:].items() if k != "labels"}
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, model(**inputs).logits)


def test_mask_tuning_brings_the_pruned_attention_closer_to_the_original():
    base = build_model("bert", num_layers=1, hidden=32, heads=8, intermediate=48, seed=3).eval()
    data = loader("bert", rows=32)
    batch = next(iter(DataLoader(make_dataset("bert", num_rows=32), batch_size=32, collate_fn=default_data_collator)))
    inputs = {k: v for k, v in batch.items() if k != "labels"}

    def attention_output(model):
        captured = {}
        layer = model.bert.encoder.layer[0]
        handle = layer.attention.output.dense.register_forward_hook(lambda m, a, out: captured.update(out=out))
        with torch.no_grad():
            model(**inputs)
        handle.remove()
        return captured["out"]

    reference = attention_output(base)
    errors = {}
    for tuning in (False, True):
        model = copy.deepcopy(base)
        prune_to_target(model, data, flops_ratio=0.6, mask_tuning=tuning)
        assert 0 < model.config.hf_slim["num_heads"][0] < 8, "the test needs a partially pruned attention"
        errors[tuning] = (attention_output(model) - reference).norm().item()
    assert errors[True] < errors[False]


@pytest.mark.parametrize("ratio", [0, -0.5, 1.5, "half", True])
def test_invalid_flops_ratio_is_rejected_before_any_work(ratio):
    model = build_model("bert", num_layers=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(HfSlimError, match="flops_ratio"):
        prune_to_target(model, loader("bert"), flops_ratio=ratio)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_labels_are_required():
    model = build_model("bert", num_layers=1)
    rows = make_dataset("bert", num_rows=8).remove_columns("labels")
    with pytest.raises(HfSlimError, match="labels"):
        prune_to_target(model, DataLoader(rows, batch_size=4, collate_fn=default_data_collator))
