"""Tests of PruningConfig (validation, help texts, command line) and of resolve_target / scheduled_fraction."""

import dataclasses
import math

import pytest
from transformers import HfArgumentParser

from hf_slim.distill.config import DistillationConfig
from hf_slim.errors import HfSlimError
from hf_slim.prune import PruningConfig
from hf_slim.prune.config import resolve_target, scheduled_fraction

PRUNING_FIELDS = {
    "target_heads",
    "target_ffn",
    "target_layers",
    "pruning_start_step",
    "pruning_end_step",
    "pruning_frequency",
    "pruning_schedule",
    "importance",
}


def make_config(tmp_path, **kwargs) -> PruningConfig:
    return PruningConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], **kwargs)


# -- defaults, fields, help ------------------------------------------------------------------------------------------


def test_defaults_and_inheritance(tmp_path):
    config = make_config(tmp_path, target_heads=0.5)
    assert isinstance(config, DistillationConfig)
    assert config.target_heads == 0.5
    assert config.target_ffn is None and config.target_layers is None
    assert config.pruning_start_step == 0
    assert config.pruning_end_step is None
    assert config.pruning_frequency == 10
    assert config.pruning_schedule == "cubic"
    assert config.importance == "first_order"
    # Distillation from the dense model is on by default.
    assert config.alpha_kd == 0.5


def test_new_fields_are_exactly_the_pruning_fields():
    new = {f.name for f in dataclasses.fields(PruningConfig)} - {
        f.name for f in dataclasses.fields(DistillationConfig)
    }
    assert new == PRUNING_FIELDS


@pytest.mark.parametrize("name", sorted(PRUNING_FIELDS))
def test_every_new_field_has_help(name):
    field = {f.name: f for f in dataclasses.fields(PruningConfig)}[name]
    help_text = field.metadata.get("help")
    assert isinstance(help_text, str) and len(help_text) > 10


def test_choices_are_declared_for_the_command_line():
    fields = {f.name: f for f in dataclasses.fields(PruningConfig)}
    assert set(fields["pruning_schedule"].metadata["choices"]) == {"cubic", "linear"}
    assert set(fields["importance"].metadata["choices"]) == {"first_order", "magnitude"}


def test_command_line_parsing(tmp_path):
    parser = HfArgumentParser(PruningConfig)
    (config,) = parser.parse_args_into_dataclasses(
        [
            "--output_dir",
            str(tmp_path),
            "--use_cpu",
            "--report_to",
            "none",
            "--target_heads",
            "0.25",
            "--target_layers",
            "2",
            "--pruning_end_step",
            "50",
            "--pruning_schedule",
            "linear",
            "--importance",
            "magnitude",
        ]
    )
    assert config.target_heads == 0.25
    assert config.target_layers == 2
    assert config.target_ffn is None
    assert config.pruning_end_step == 50
    assert config.pruning_schedule == "linear"
    assert config.importance == "magnitude"


def test_command_line_rejects_unknown_schedule(tmp_path):
    parser = HfArgumentParser(PruningConfig)
    with pytest.raises(SystemExit):
        parser.parse_args_into_dataclasses(
            ["--output_dir", str(tmp_path), "--target_heads", "0.5", "--pruning_schedule", "exponential"]
        )


# -- validation ------------------------------------------------------------------------------------------------------


def test_accepts_fractions_counts_and_combinations(tmp_path):
    config = make_config(tmp_path, target_heads=0.5, target_ffn=100, target_layers=1, pruning_end_step=20)
    assert (config.target_heads, config.target_ffn, config.target_layers) == (0.5, 100, 1)
    # A whole number given as a float is a count.
    assert make_config(tmp_path, target_ffn=3.0).target_ffn == 3.0


@pytest.mark.parametrize("targets", [{}, {"target_heads": None}, {"target_heads": 0, "target_ffn": 0.0}])
def test_needs_a_target(tmp_path, targets):
    with pytest.raises(HfSlimError, match="needs a target") as info:
        make_config(tmp_path, **targets)
    assert isinstance(info.value, ValueError)
    assert "target_heads" in str(info.value)


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("target_heads", -1, "target_heads=-1"),
        ("target_ffn", -0.25, "target_ffn=-0.25"),
        ("target_layers", float("nan"), "target_layers=nan"),
        ("target_heads", True, "target_heads=True"),
        ("target_heads", "0.5", "target_heads='0.5'"),
    ],
)
def test_rejects_invalid_targets(tmp_path, name, value, shown):
    with pytest.raises(HfSlimError) as info:
        make_config(tmp_path, **{name: value})
    assert shown in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(("name", "value"), [("target_heads", 1.5), ("target_ffn", 10.2), ("target_layers", 2.5)])
def test_counts_must_be_whole_numbers(tmp_path, name, value):
    with pytest.raises(HfSlimError, match="whole numbers") as info:
        make_config(tmp_path, **{name: value})
    assert f"{name}={value}" in str(info.value)


@pytest.mark.parametrize(("start", "end"), [(0, 0), (5, 5), (10, 3)])
def test_end_step_must_follow_start_step(tmp_path, start, end):
    with pytest.raises(HfSlimError) as info:
        make_config(tmp_path, target_heads=0.5, pruning_start_step=start, pruning_end_step=end)
    assert f"pruning_end_step={end}" in str(info.value)
    assert f"pruning_start_step={start}" in str(info.value)


def test_end_step_one_after_start_is_fine(tmp_path):
    config = make_config(tmp_path, target_heads=0.5, pruning_start_step=4, pruning_end_step=5)
    assert config.pruning_end_step == 5


@pytest.mark.parametrize("start", [-1, 2.5])
def test_start_step_must_be_a_non_negative_integer(tmp_path, start):
    with pytest.raises(HfSlimError, match="pruning_start_step") as info:
        make_config(tmp_path, target_heads=0.5, pruning_start_step=start)
    assert str(start) in str(info.value)


@pytest.mark.parametrize("frequency", [0, -3, 1.5])
def test_frequency_must_be_positive_integer(tmp_path, frequency):
    with pytest.raises(HfSlimError, match="pruning_frequency") as info:
        make_config(tmp_path, target_heads=0.5, pruning_frequency=frequency)
    assert f"got {frequency}" in str(info.value)


def test_unknown_schedule(tmp_path):
    with pytest.raises(HfSlimError, match="pruning_schedule='exponential'") as info:
        make_config(tmp_path, target_heads=0.5, pruning_schedule="exponential")
    assert "cubic" in str(info.value) and "linear" in str(info.value)


def test_unknown_importance(tmp_path):
    with pytest.raises(HfSlimError, match="importance='random'") as info:
        make_config(tmp_path, target_heads=0.5, importance="random")
    assert "first_order" in str(info.value) and "magnitude" in str(info.value)


def test_distillation_validation_still_applies(tmp_path):
    with pytest.raises(HfSlimError, match="alpha_kd"):
        make_config(tmp_path, target_heads=0.5, alpha_kd=1.5)


# -- resolve_target --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "total", "expected"),
    [
        (None, 12, 0),
        (0, 12, 0),
        (0.5, 12, 6),
        (0.25, 12, 3),
        (0.3, 10, 3),
        (0.26, 111, 29),  # 28.86 rounds to the nearest count
        (0.9, 10, 9),
        (1, 12, 1),  # >= 1 is a count: one unit, not 100%
        (5, 12, 5),
        (12.0, 12, 12),
    ],
)
def test_resolve_target(value, total, expected):
    assert resolve_target(value, total, "target_heads") == expected


def test_resolve_target_too_many_counts():
    with pytest.raises(HfSlimError) as info:
        resolve_target(13, 12, "target_heads")
    message = str(info.value)
    assert "target_heads=13" in message
    assert "12 heads" in message
    assert "at most 12" in message


def test_resolve_target_too_many_after_rounding_with_leave_one():
    # 0.9 of 3 layers rounds to 3 layers, and one layer must remain.
    with pytest.raises(HfSlimError) as info:
        resolve_target(0.9, 3, "target_layers", leave_one=True)
    assert "target_layers=0.9" in str(info.value)
    assert "3 layers" in str(info.value)
    assert "at most 2" in str(info.value)


@pytest.mark.parametrize(("value", "expected"), [(2, 2), (0.5, 2), (0.66, 2)])
def test_resolve_target_leave_one_allows_all_but_one(value, expected):
    assert resolve_target(value, 3, "target_layers", leave_one=True) == expected


def test_resolve_target_leave_one_rejects_all_layers():
    with pytest.raises(HfSlimError, match="at most 3"):
        resolve_target(4, 4, "target_layers", leave_one=True)
    # Without leave_one every unit may go (e.g. all neurons of the model).
    assert resolve_target(4, 4, "target_ffn") == 4


# -- scheduled_fraction ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["cubic", "linear"])
def test_schedule_before_start_and_after_end(schedule):
    assert scheduled_fraction(0, 10, 20, schedule) == 0.0
    assert scheduled_fraction(9, 10, 20, schedule) == 0.0
    assert scheduled_fraction(10, 10, 20, schedule) == 0.0
    assert scheduled_fraction(20, 10, 20, schedule) == 1.0
    assert scheduled_fraction(1000, 10, 20, schedule) == 1.0


@pytest.mark.parametrize("step", [11, 12, 15, 17, 19])
def test_cubic_schedule_formula(step):
    progress = (step - 10) / 10
    assert math.isclose(scheduled_fraction(step, 10, 20, "cubic"), 1 - (1 - progress) ** 3, rel_tol=1e-12)


def test_cubic_schedule_values():
    assert math.isclose(scheduled_fraction(15, 10, 20), 0.875)  # cubic is the default
    assert math.isclose(scheduled_fraction(2, 0, 6), 19 / 27)
    assert math.isclose(scheduled_fraction(4, 0, 6), 26 / 27)


@pytest.mark.parametrize("step", [11, 12, 15, 17, 19])
def test_linear_schedule_formula(step):
    assert math.isclose(scheduled_fraction(step, 10, 20, "linear"), (step - 10) / 10, rel_tol=1e-12)


@pytest.mark.parametrize("schedule", ["cubic", "linear"])
def test_schedule_is_monotonic(schedule):
    values = [scheduled_fraction(step, 3, 30, schedule) for step in range(40)]
    assert values == sorted(values)
    assert all(0.0 <= v <= 1.0 for v in values)


def test_cubic_prunes_faster_than_linear_early():
    for step in range(11, 20):
        assert scheduled_fraction(step, 10, 20, "cubic") > scheduled_fraction(step, 10, 20, "linear")
