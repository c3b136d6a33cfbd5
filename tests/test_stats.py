import json

import pytest
import torch
from tiny_models import MODEL_TYPES, build_model, make_inputs
from torch import nn

from hf_slim.errors import HfSlimError
from hf_slim.prune.structured import drop_layers, prune_ffn, prune_heads
from hf_slim.stats import _measure_size, model_stats, size_on_disk

# tiny_models defaults: hidden 32, 4 heads (head size 8), FFN width 37.
H, D, F = 32, 8, 37
SEQ = 12

# Encoder sequence length for make_inputs(): 12 tokens; 16x16 images in 4x4 patches = 16 patches + [CLS]
# (+ distillation token for DeiT); 400 samples through two convs (kernel 8, stride 4) = 99 then 23 frames.
EXPECTED_SEQ = {"bert": 12, "roberta": 12, "distilbert": 12, "vit": 17, "deit": 18, "wav2vec2": 23, "hubert": 23}


def layer_flops(seq, heads, width):
    return seq * (2 * 4 * H * heads * D + 2 * 2 * seq * heads * D + 2 * 2 * H * width)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_stats_for_every_architecture(model_type):
    model = build_model(model_type, num_layers=2)
    stats = model_stats(model, example_inputs=make_inputs(model_type))
    json.dumps(stats)
    assert stats["num_parameters"] == sum(p.numel() for p in model.parameters())
    assert sum(stats["parameters"].values()) == stats["num_parameters"]
    assert sum(stats["layer_parameters"]) == stats["parameters"]["layers"]
    assert stats["parameters"]["embeddings"] > 0 and stats["parameters"]["head"] > 0
    assert stats["num_layers"] == 2
    assert stats["num_heads"] == [4, 4] and stats["intermediate_sizes"] == [F, F]
    assert stats["seq_len"] == EXPECTED_SEQ[model_type]
    assert stats["flops"]["per_layer"] == [layer_flops(EXPECTED_SEQ[model_type], 4, F)] * 2
    assert stats["flops"] == model_stats(model, seq_len=EXPECTED_SEQ[model_type])["flops"]


def test_bert_parameter_split_and_flops_by_hand():
    model = build_model("bert", num_layers=2)
    stats = model_stats(model, seq_len=SEQ)
    # word (99) + position (64) + token type (2) embeddings of width 32, plus the embedding LayerNorm.
    assert stats["parameters"]["embeddings"] == 99 * 32 + 64 * 32 + 2 * 32 + 2 * 32
    # pooler (32 -> 32) and classifier (32 -> 3).
    assert stats["parameters"]["head"] == 32 * 32 + 32 + 32 * 3 + 3
    assert stats["parameters"]["other"] == 0
    assert stats["flops"]["per_layer"] == [12 * (8192 + 1536 + 4736)] * 2
    assert stats["flops"]["head"] == 2 * (32 * 32 + 32 * 3)
    assert stats["flops"]["total"] == 2 * 173568 + 2240
    assert stats["hidden_size"] == H and stats["head_size"] == D


def test_removing_one_head_shrinks_params_and_flops_exactly():
    model = build_model("bert", num_layers=2)
    before = model_stats(model, seq_len=SEQ)
    prune_heads(model, {1: [2]})
    after = model_stats(model, seq_len=SEQ)
    assert after["num_heads"] == [4, 3]
    # q, k, v lose D rows (weights and biases), the output projection D input columns.
    assert before["num_parameters"] - after["num_parameters"] == 4 * H * D + 3 * D
    assert before["flops"]["total"] - after["flops"]["total"] == SEQ * (2 * 4 * H * D + 2 * 2 * SEQ * D)
    assert after["flops"]["per_layer"][0] == before["flops"]["per_layer"][0]


def test_layer_without_heads():
    model = build_model("bert", num_layers=2)
    before = model_stats(model, seq_len=SEQ)
    prune_heads(model, {0: [0, 1, 2, 3]})
    after = model_stats(model, seq_len=SEQ)
    json.dumps(after)
    assert after["num_heads"] == [0, 4]
    # q, k, v go entirely; the output projection keeps only its bias.
    assert before["num_parameters"] - after["num_parameters"] == 4 * H * H + 3 * H
    assert after["flops"]["per_layer"][0] == SEQ * 2 * 2 * H * F
    assert before["flops"]["total"] - after["flops"]["total"] == SEQ * (2 * 4 * H * H + 2 * 2 * SEQ * H)
    assert after["size_on_disk"] < before["size_on_disk"]


def test_prune_ffn_shrinks_params_and_flops_exactly():
    model = build_model("bert", num_layers=2)
    before = model_stats(model, seq_len=SEQ)
    prune_ffn(model, {0: [0, 1, 2], 1: list(range(F))})
    after = model_stats(model, seq_len=SEQ)
    assert after["intermediate_sizes"] == [F - 3, 0]
    # ffn_in loses rows and biases, ffn_out input columns; layer 1 keeps only ffn_out's bias.
    assert before["num_parameters"] - after["num_parameters"] == 3 * (2 * H + 1) + F * (2 * H + 1)
    assert before["flops"]["total"] - after["flops"]["total"] == SEQ * 2 * 2 * H * (3 + F)


def test_drop_layers_removes_the_layer_cost():
    model = build_model("bert", num_layers=3)
    prune_heads(model, {1: [0]})
    before = model_stats(model, seq_len=SEQ)
    drop_layers(model, [1])
    after = model_stats(model, seq_len=SEQ)
    assert after["num_layers"] == 2 and after["num_heads"] == [4, 4]
    assert before["num_parameters"] - after["num_parameters"] == before["layer_parameters"][1]
    assert before["flops"]["total"] - after["flops"]["total"] == layer_flops(SEQ, 3, F)


def test_size_on_disk_is_four_bytes_per_parameter_plus_header():
    model = build_model("bert", num_layers=2)
    stats = model_stats(model)
    assert stats["size_on_disk_method"] == "safetensors"
    assert 0 <= stats["size_on_disk"] - 4 * stats["num_parameters"] < 8 * 1024
    half = model_stats(model.half())
    assert 0 <= half["size_on_disk"] - 2 * stats["num_parameters"] < 8 * 1024


def test_size_without_save_pretrained_counts_tensor_bytes():
    linear = nn.Linear(4, 3)
    assert _measure_size(linear) == ((4 * 3 + 3) * 4, "state_dict")


def test_size_on_disk_helper(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"x" * 123)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.json").write_bytes(b"y" * 77)
    assert size_on_disk(tmp_path / "a.bin") == 123
    assert size_on_disk(tmp_path) == 200
    with pytest.raises(HfSlimError, match="missing"):
        size_on_disk(tmp_path / "missing")


def test_without_sequence_length_flops_are_none():
    stats = model_stats(build_model("bert", num_layers=1))
    assert stats["seq_len"] is None and stats["flops"] is None
    json.dumps(stats)


@pytest.mark.parametrize("seq_len", [0, -3, 1.5, "12", True])
def test_invalid_seq_len(seq_len):
    with pytest.raises(HfSlimError, match="seq_len"):
        model_stats(build_model("bert", num_layers=1), seq_len=seq_len)


def test_seq_len_and_inputs_are_exclusive():
    with pytest.raises(HfSlimError, match="either"):
        model_stats(build_model("bert", num_layers=1), example_inputs=make_inputs("bert"), seq_len=12)


def test_deriving_seq_len_keeps_training_mode_and_ignores_batch_size():
    model = build_model("vit", num_layers=1).train()
    one = model_stats(model, example_inputs=make_inputs("vit", batch_size=1))
    assert model.training
    many = model_stats(model, example_inputs=make_inputs("vit", batch_size=5))
    assert one["flops"] == many["flops"] and one["seq_len"] == 17
    assert torch.is_grad_enabled()
