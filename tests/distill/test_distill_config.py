"""Tests of DistillationConfig: defaults, help texts, validation, layer-map parsing and serialisation."""

import dataclasses
import json
import re

import pytest
from transformers import HfArgumentParser, TrainingArguments

from hf_slim.distill.config import DistillationConfig, parse_layer_map, uniform_layer_map
from hf_slim.errors import HfSlimError, InvalidLayerMapError

DISTILLATION_FIELDS = {
    "temperature",
    "alpha_kd",
    "hidden_weight",
    "attention_weight",
    "layer_map",
    "hidden_loss",
    "attention_loss",
    "teacher_logits_column",
}


def make_config(tmp_path, **kwargs) -> DistillationConfig:
    return DistillationConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], **kwargs)


def _init_field_names() -> set[str]:
    return {f.name for f in dataclasses.fields(DistillationConfig) if f.init}


# --------------------------------------------------------------------------------------------------------------
# Defaults and help
# --------------------------------------------------------------------------------------------------------------


def test_defaults(tmp_path):
    config = make_config(tmp_path)
    assert config.temperature == 2.0
    assert config.alpha_kd == 0.5
    assert config.hidden_weight == 0
    assert config.attention_weight == 0
    assert config.layer_map is None
    assert config.hidden_loss == "mse"
    assert config.attention_loss == "kl"
    assert config.teacher_logits_column == "teacher_logits"
    assert config.uses_teacher_internals is False
    assert isinstance(config, TrainingArguments)


@pytest.mark.parametrize(
    "kwargs, expected", [({"hidden_weight": 0.1}, True), ({"attention_weight": 1.0}, True), ({"alpha_kd": 1.0}, False)]
)
def test_uses_teacher_internals(tmp_path, kwargs, expected):
    assert make_config(tmp_path, **kwargs).uses_teacher_internals is expected


def test_every_distillation_field_has_help():
    training_fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    own_fields = [f for f in dataclasses.fields(DistillationConfig) if f.name not in training_fields]
    assert {f.name for f in own_fields} == DISTILLATION_FIELDS
    for f in own_fields:
        help_text = f.metadata.get("help")
        assert isinstance(help_text, str) and help_text.strip(), f"field {f.name!r} has no metadata['help']"


def test_loss_name_fields_declare_their_choices():
    fields = {f.name: f for f in dataclasses.fields(DistillationConfig)}
    assert set(fields["hidden_loss"].metadata["choices"]) == {"mse", "cosine"}
    assert set(fields["attention_loss"].metadata["choices"]) == {"mse", "kl"}


# --------------------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, value",
    [
        ("temperature", 0),
        ("temperature", -1),
        ("alpha_kd", 1.5),
        ("alpha_kd", -0.1),
        ("hidden_weight", -1),
        ("attention_weight", -0.5),
        ("hidden_loss", "l1"),
        ("attention_loss", "l2"),
    ],
)
def test_invalid_values_are_rejected(tmp_path, name, value):
    with pytest.raises(HfSlimError) as excinfo:
        make_config(tmp_path, **{name: value})
    assert isinstance(excinfo.value, ValueError)
    message = str(excinfo.value)
    assert name in message
    assert repr(value) in message
    # No output is written when the config is rejected.
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "name, value",
    [
        ("temperature", 0.1),
        ("temperature", 20),
        ("alpha_kd", 0.0),
        ("alpha_kd", 1.0),
        ("hidden_weight", 0),
        ("hidden_weight", 3.5),
        ("hidden_loss", "cosine"),
        ("attention_loss", "mse"),
    ],
)
def test_boundary_and_alternative_values_are_accepted(tmp_path, name, value):
    assert getattr(make_config(tmp_path, **{name: value}), name) == value


# --------------------------------------------------------------------------------------------------------------
# layer_map
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer_map",
    [
        {0: 1, 1: 3},
        {"0": 1, "1": 3},
        {"0": "1", "1": "3"},
        [1, 3],
        (1, 3),
        '{"0": 1, "1": 3}',
        "[1, 3]",
    ],
    ids=["dict", "dict-str-keys", "dict-str-values", "list", "tuple", "json-dict", "json-list"],
)
def test_layer_map_is_normalised_to_int_dict(tmp_path, layer_map):
    config = make_config(tmp_path, layer_map=layer_map)
    assert config.layer_map == {0: 1, 1: 3}
    assert all(type(k) is int and type(v) is int for k, v in config.layer_map.items())


def test_layer_map_keeps_non_contiguous_student_layers(tmp_path):
    assert make_config(tmp_path, layer_map={"2": 5, "0": 1}).layer_map == {2: 5, 0: 1}


@pytest.mark.parametrize(
    "layer_map",
    [
        "{not json",
        "{'0': 1}",
        {0: -1},
        {-1: 0},
        [-1, 2],
        '{"0": -3}',
        {},
        [],
        "{}",
        "[]",
        {"a": 1},
        {0: "b"},
        {0: None},
        [[1]],
        7,
        '"1"',
    ],
)
def test_invalid_layer_map_raises(tmp_path, layer_map):
    with pytest.raises(InvalidLayerMapError) as excinfo:
        make_config(tmp_path, layer_map=layer_map)
    assert isinstance(excinfo.value, HfSlimError)
    assert isinstance(excinfo.value, ValueError)


def test_invalid_json_layer_map_message_names_the_value():
    with pytest.raises(InvalidLayerMapError, match=re.escape(repr("{0: 1,"))):
        parse_layer_map("{0: 1,")


def test_negative_layer_map_message_names_the_entry():
    with pytest.raises(InvalidLayerMapError, match=r"-2"):
        parse_layer_map({1: -2})


def test_parse_layer_map_none_is_none():
    assert parse_layer_map(None) is None


@pytest.mark.parametrize(
    "num_student, num_teacher, expected",
    [
        (3, 6, {0: 1, 1: 3, 2: 5}),
        (2, 4, {0: 1, 1: 3}),
        (4, 4, {0: 0, 1: 1, 2: 2, 3: 3}),
        (1, 6, {0: 5}),
        (2, 12, {0: 5, 1: 11}),
        (4, 12, {0: 2, 1: 5, 2: 8, 3: 11}),
    ],
)
def test_uniform_layer_map(num_student, num_teacher, expected):
    assert uniform_layer_map(num_student, num_teacher) == expected


@pytest.mark.parametrize("num_student, num_teacher", [(1, 1), (2, 3), (3, 7), (5, 12), (6, 24)])
def test_uniform_layer_map_properties(num_student, num_teacher):
    mapping = uniform_layer_map(num_student, num_teacher)
    assert sorted(mapping) == list(range(num_student))
    assert mapping[num_student - 1] == num_teacher - 1
    teacher_layers = [mapping[i] for i in range(num_student)]
    assert teacher_layers == sorted(set(teacher_layers))  # strictly increasing
    assert all(0 <= t < num_teacher for t in teacher_layers)


# --------------------------------------------------------------------------------------------------------------
# Command line and serialisation
# --------------------------------------------------------------------------------------------------------------


def test_hf_argument_parser(tmp_path):
    parser = HfArgumentParser(DistillationConfig)
    (config,) = parser.parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--temperature", "4", "--layer_map", '{"0": 1}', "--report_to", "none"]
        + ["--use_cpu"]
    )
    assert isinstance(config, DistillationConfig)
    assert config.temperature == 4.0
    assert config.layer_map == {0: 1}
    assert config.alpha_kd == 0.5
    assert config.use_cpu is True


def test_hf_argument_parser_all_distillation_options(tmp_path):
    parser = HfArgumentParser(DistillationConfig)
    args = ["--output_dir", str(tmp_path), "--use_cpu", "--report_to", "none"]
    args += ["--alpha_kd", "0.9", "--hidden_weight", "1.5", "--attention_weight", "0.25"]
    args += ["--layer_map", "[1, 3]", "--hidden_loss", "cosine", "--attention_loss", "mse"]
    args += ["--teacher_logits_column", "cached"]
    (config,) = parser.parse_args_into_dataclasses(args)
    assert config.alpha_kd == 0.9
    assert config.hidden_weight == 1.5
    assert config.attention_weight == 0.25
    assert config.layer_map == {0: 1, 1: 3}
    assert config.hidden_loss == "cosine"
    assert config.attention_loss == "mse"
    assert config.teacher_logits_column == "cached"


def test_hf_argument_parser_rejects_unknown_loss_choice(tmp_path):
    parser = HfArgumentParser(DistillationConfig)
    with pytest.raises(SystemExit):
        parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path), "--use_cpu", "--hidden_loss", "l1"])


def test_hf_argument_parser_rejects_invalid_temperature(tmp_path):
    parser = HfArgumentParser(DistillationConfig)
    with pytest.raises(HfSlimError, match="temperature"):
        parser.parse_args_into_dataclasses(
            ["--output_dir", str(tmp_path), "--use_cpu", "--report_to", "none", "--temperature", "0"]
        )


def test_to_dict_and_json_round_trip(tmp_path):
    config = make_config(
        tmp_path,
        temperature=4.0,
        alpha_kd=0.7,
        hidden_weight=0.5,
        attention_weight=0.25,
        layer_map={"0": 1, "1": 3},
        hidden_loss="cosine",
        attention_loss="mse",
        teacher_logits_column="cached",
    )
    as_dict = config.to_dict()
    for name in DISTILLATION_FIELDS:
        assert as_dict[name] == getattr(config, name), name
    assert as_dict["layer_map"] == {0: 1, 1: 3}

    as_json = json.loads(config.to_json_string())
    assert as_json["temperature"] == 4.0
    assert as_json["alpha_kd"] == 0.7
    assert as_json["hidden_loss"] == "cosine"
    assert as_json["attention_loss"] == "mse"
    assert as_json["layer_map"] == {"0": 1, "1": 3}  # JSON object keys are strings

    init_names = _init_field_names()
    rebuilt = DistillationConfig(**{k: v for k, v in as_json.items() if k in init_names})
    for name in DISTILLATION_FIELDS:
        assert getattr(rebuilt, name) == getattr(config, name), name
    assert rebuilt.layer_map == {0: 1, 1: 3}
    assert rebuilt.output_dir == config.output_dir
    assert rebuilt.use_cpu is True


def test_to_dict_with_default_layer_map(tmp_path):
    config = make_config(tmp_path)
    assert config.to_dict()["layer_map"] is None
    assert json.loads(config.to_json_string())["layer_map"] is None
