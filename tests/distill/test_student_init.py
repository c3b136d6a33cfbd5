import re

import numpy as np
import pytest
import torch
from tiny_models import AUTO_CLASSES, MODEL_TYPES, build_model, make_inputs
from transformers import (
    AlbertConfig,
    AlbertForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
)

import hf_slim
from hf_slim.distill import evenly_spaced_layers, init_student_from_teacher
from hf_slim.errors import HfSlimError, InvalidLayerMapError, UnsupportedArchitectureError


def _layer_state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_same_state(actual, expected):
    assert actual.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=0, msg=f"{key} differs")


def _non_layer_keys(model):
    adapter = hf_slim.get_adapter(model)
    prefix = adapter.layers_prefix(model) + "."
    return [
        key
        for key in model.state_dict()
        if not key.startswith(prefix) and key.rsplit(".", 1)[-1] not in adapter.per_layer_parameters
    ]


def _logits(model, inputs):
    model.eval()
    with torch.no_grad():
        return model(**inputs).logits


def _last_hidden_state(model, inputs):
    # Logits of the tiny audio models are ~1e-3, so the (layer-normed) hidden states make a sharper comparison.
    model.eval()
    with torch.no_grad():
        return model(**inputs, output_hidden_states=True).hidden_states[-1]


@pytest.mark.parametrize(
    "num_teacher_layers, num_layers, expected",
    [
        (4, 2, [0, 3]),
        (6, 3, [0, 2, 5]),
        # step 11/5 = 2.2: 0, 2.2, 4.4, 6.6, 8.8, 11 -> rounded
        (12, 6, [0, 2, 4, 7, 9, 11]),
        (4, 4, [0, 1, 2, 3]),
        (12, 1, [11]),
    ],
)
def test_evenly_spaced_layers(num_teacher_layers, num_layers, expected):
    assert evenly_spaced_layers(num_teacher_layers, num_layers) == expected


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_student_has_fewer_layers_of_the_teacher_class(model_type):
    teacher = build_model(model_type, num_layers=4)
    student = init_student_from_teacher(teacher, num_layers=2)
    adapter = hf_slim.get_adapter(student)

    assert type(student) is type(teacher)
    assert adapter.num_layers(student.config) == 2
    assert len(adapter.get_layers(student)) == 2
    # Everything else in the config is the teacher's.
    student_config, teacher_config = student.config.to_dict(), teacher.config.to_dict()
    assert student_config.pop(adapter.num_layers_attr) == 2
    assert teacher_config.pop(adapter.num_layers_attr) == 4
    assert student_config == teacher_config
    # The student follows the teacher's mode.
    assert student.training == teacher.training
    assert init_student_from_teacher(teacher.eval(), num_layers=2).training is False


@pytest.mark.parametrize("model_type", MODEL_TYPES)
@pytest.mark.parametrize(
    "kwargs, expected_layers",
    [
        (dict(num_layers=2), [0, 3]),
        (dict(num_layers=3), [0, 2, 3]),
        (dict(layers=[3, 1]), [3, 1]),
        (dict(num_layers=2, layers=[2, 0]), [2, 0]),
    ],
    ids=["default-2", "default-3", "explicit-3-1", "explicit-with-num-layers"],
)
def test_student_copies_teacher_weights(model_type, kwargs, expected_layers):
    teacher = build_model(model_type, num_layers=4)
    student = init_student_from_teacher(teacher, **kwargs)
    adapter = hf_slim.get_adapter(teacher)
    teacher_layers, student_layers = adapter.get_layers(teacher), adapter.get_layers(student)

    assert len(student_layers) == len(expected_layers)
    for i, old in enumerate(expected_layers):
        _assert_same_state(_layer_state(student_layers[i]), _layer_state(teacher_layers[old]))
    # The layers of the random teacher differ, so the comparison above pins down which layer was copied.
    assert not torch.equal(
        adapter.layer_module(teacher_layers[0], "query").weight,
        adapter.layer_module(teacher_layers[3], "query").weight,
    )

    keys = _non_layer_keys(teacher)
    assert any("classifier" in key for key in keys)
    assert any("embed" in key or "feature" in key for key in keys)
    assert _non_layer_keys(student) == keys
    teacher_state, student_state = teacher.state_dict(), student.state_dict()
    _assert_same_state({k: student_state[k] for k in keys}, {k: teacher_state[k] for k in keys})


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_student_with_all_layers_matches_teacher(model_type):
    teacher = build_model(model_type, num_layers=4)
    student = init_student_from_teacher(teacher, layers=list(range(4)))
    inputs = make_inputs(model_type)

    torch.testing.assert_close(_logits(student, inputs), _logits(teacher, inputs), rtol=0, atol=1e-6)
    expected = _last_hidden_state(teacher, inputs)
    torch.testing.assert_close(_last_hidden_state(student, inputs), expected, rtol=0, atol=1e-5)
    # Dropping layers must change the outputs, so the equality above is not trivially true.
    shallow = init_student_from_teacher(teacher, num_layers=2)
    assert not torch.allclose(_last_hidden_state(shallow, inputs), expected, atol=1e-2)


@pytest.mark.parametrize("layers", [[0, 3], [3, 1], [2], [0, 1, 2, 3]])
def test_wav2vec2_weighted_layer_sum_is_sliced(layers):
    teacher = build_model("wav2vec2", num_layers=4)
    assert teacher.config.use_weighted_layer_sum
    with torch.no_grad():
        # Distinct values per position (the default init is uniform, which would hide a wrong slice).
        teacher.layer_weights.copy_(torch.arange(5, dtype=torch.float32) + 10)
    student = init_student_from_teacher(teacher, layers=layers)

    assert student.layer_weights.shape == (len(layers) + 1,)
    expected = teacher.layer_weights.detach()[[0] + [layer + 1 for layer in layers]]
    torch.testing.assert_close(student.layer_weights.detach(), expected, rtol=0, atol=0)
    torch.testing.assert_close(student.layer_weights.detach()[0], torch.tensor(10.0), rtol=0, atol=0)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_student_round_trips_with_stock_transformers(model_type, tmp_path):
    teacher = build_model(model_type, num_layers=4)
    student = init_student_from_teacher(teacher, num_layers=2)
    student.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()

    loaded, info = AUTO_CLASSES[model_type].from_pretrained(tmp_path, output_loading_info=True)

    assert type(loaded) is type(teacher)
    assert not info["missing_keys"]
    assert not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    assert hf_slim.get_adapter(loaded).num_layers(loaded.config) == 2
    assert len(hf_slim.get_adapter(loaded).get_layers(loaded)) == 2
    inputs = make_inputs(model_type)
    torch.testing.assert_close(_logits(loaded, inputs), _logits(student, inputs), rtol=0, atol=1e-6)
    torch.testing.assert_close(
        _last_hidden_state(loaded, inputs), _last_hidden_state(student, inputs), rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_teacher_is_untouched_and_not_shared(model_type):
    teacher = build_model(model_type, num_layers=4)
    before = {k: v.detach().clone() for k, v in teacher.state_dict().items()}
    config_before = teacher.config.to_dict()
    mode_before = teacher.training

    student = init_student_from_teacher(teacher, layers=[3, 1])

    _assert_same_state(teacher.state_dict(), before)
    assert teacher.config.to_dict() == config_before
    assert teacher.training == mode_before
    assert len(hf_slim.get_adapter(teacher).get_layers(teacher)) == 4

    teacher_storage = {t.untyped_storage().data_ptr() for t in teacher.state_dict().values()}
    shared = [k for k, t in student.state_dict().items() if t.untyped_storage().data_ptr() in teacher_storage]
    assert shared == []
    with torch.no_grad():
        for parameter in student.parameters():
            parameter.add_(1.0)
    _assert_same_state(teacher.state_dict(), before)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
@pytest.mark.parametrize(
    "kwargs, fragments",
    [
        (dict(num_layers=0), ["num_layers=0", "4 layers"]),
        (dict(num_layers=5), ["num_layers=5", "4 layers", "1 to 4"]),
        (dict(num_layers=-1), ["num_layers=-1", "4 layers"]),
        (dict(num_layers=2.0), ["num_layers", "2.0", "integer"]),
        (dict(num_layers=True), ["num_layers", "True", "integer"]),
        (dict(layers=[4]), ["[4]", "4 layers", "0 to 3"]),
        (dict(layers=[0, -1]), ["[-1]", "4 layers", "0 to 3"]),
        (dict(layers=[1, 1]), ["[1, 1]", "twice"]),
        (dict(layers=[]), ["layers", "empty"]),
        (dict(), ["num_layers=", "layers="]),
        (dict(num_layers=None, layers=None), ["num_layers=", "layers="]),
        (dict(num_layers=3, layers=[0, 1]), ["num_layers=3", "[0, 1]", "2 layers"]),
    ],
    ids=[
        "zero",
        "too-many",
        "negative",
        "float",
        "bool",
        "index-out-of-range",
        "negative-index",
        "duplicate",
        "empty",
        "neither",
        "both-none",
        "count-disagrees",
    ],
)
def test_invalid_layer_requests(model_type, kwargs, fragments):
    teacher = build_model(model_type, num_layers=4, seed=1)
    with pytest.raises(InvalidLayerMapError) as excinfo:
        init_student_from_teacher(teacher, **kwargs)
    assert isinstance(excinfo.value, ValueError)
    assert isinstance(excinfo.value, HfSlimError)
    message = str(excinfo.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def _tiny_gpt2():
    config = GPT2Config(vocab_size=99, n_positions=64, n_embd=32, n_layer=2, n_head=4, num_labels=3)
    return GPT2ForSequenceClassification(config)


def _tiny_albert():
    config = AlbertConfig(
        vocab_size=99,
        embedding_size=16,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        num_labels=3,
    )
    return AlbertForSequenceClassification(config)


@pytest.mark.parametrize("build, model_type", [(_tiny_gpt2, "gpt2"), (_tiny_albert, "albert")], ids=["gpt2", "albert"])
def test_unsupported_architecture(build, model_type):
    with pytest.raises(UnsupportedArchitectureError) as excinfo:
        init_student_from_teacher(build(), num_layers=1)
    assert isinstance(excinfo.value, ValueError)
    message = str(excinfo.value)
    assert repr(model_type) in message
    # Word boundaries: "albert" and "distilbert" must not satisfy the check for "bert".
    for supported in MODEL_TYPES:
        assert re.search(rf"(?<![\w]){supported}\b", message), supported


def test_numpy_integer_layers_are_accepted():
    teacher = build_model("bert", num_layers=4)
    student = init_student_from_teacher(teacher, layers=np.array([3, 1]))
    reference = init_student_from_teacher(teacher, layers=[3, 1])
    _assert_same_state(student.state_dict(), reference.state_dict())


def test_bool_layers_are_rejected():
    teacher = build_model("bert", num_layers=4)
    with pytest.raises(InvalidLayerMapError, match="True"):
        init_student_from_teacher(teacher, layers=[True])
