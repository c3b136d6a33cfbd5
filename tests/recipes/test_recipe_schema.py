import glob
import os

import pytest
import yaml

from hf_slim.recipes.schema import RecipeError, apply_overrides, load_recipe

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
SHIPPED = sorted(glob.glob(os.path.join(ROOT, "recipes", "*.yaml")))


def base(**changes) -> dict:
    recipe = {
        "task": "image-classification",
        "model": {"config": {"model_type": "vit", "image_size": 8, "patch_size": 2, "num_channels": 1}},
        "dataset": {"name": "sklearn-digits", "eval_split": None, "eval_fraction": 0.2},
        "stages": [
            {"finetune": {"num_train_epochs": 1}},
            {"distill": {"student": {"num_layers": 1}, "temperature": 2.0}},
            {"prune": {"method": "post_training", "flops_ratio": 0.5}},
            {"quantize": {"mode": "dynamic"}},
            "evaluate",
        ],
    }
    recipe.update(changes)
    return recipe


def test_every_shipped_recipe_is_valid():
    names = {os.path.basename(p) for p in SHIPPED}
    assert {"quickstart.yaml", "text-classification.yaml", "image-classification.yaml"} <= names
    assert "audio-classification.yaml" in names
    for path in SHIPPED:
        recipe = load_recipe(path)
        assert recipe.stages and recipe.task in ("text-classification", "image-classification", "audio-classification")
        assert recipe.name


def test_valid_recipe_maps_options_onto_stages():
    recipe = load_recipe(base())
    assert [s.kind for s in recipe.stages] == ["finetune", "distill", "prune", "quantize", "evaluate"]
    assert [s.name for s in recipe.stages][:2] == ["stage-1-finetune", "stage-2-distill"]
    assert recipe.stages[1].options == {"student": {"num_layers": 1}, "temperature": 2.0}
    assert recipe.dataset.eval_fraction == 0.2


@pytest.mark.parametrize(
    "changes, path, fragment",
    [
        ({"modle": "x"}, "modle", "unknown key"),
        ({"task": "translation"}, "task", "'translation' is not one of"),
        ({"stages": []}, "stages", "is empty"),
        ({"stages": [{"compress": {}}]}, "stages[0].compress", "unknown stage"),
        ({"stages": [{"finetune": {"num_train_epoch": 3}}]}, "stages[0].finetune.num_train_epoch", "unknown option"),
        ({"stages": [{"finetune": {"learning_rate": "fast"}}]}, "stages[0].finetune.learning_rate", "'fast'"),
        ({"stages": [{"finetune": {"temperature": 3.0}}]}, "stages[0].finetune.temperature", "distillation option"),
        (
            {"stages": [{"finetune": {}}, {"distill": {"temperature": 2.0}}]},
            "stages[1].distill.student",
            "is required",
        ),
        (
            {"stages": [{"finetune": {}}, {"distill": {"student": {"num_layers": 1}, "temperature": -1}}]},
            "stages[1].distill",
            "temperature",
        ),
        ({"stages": [{"prune": {"method": "magic"}}]}, "stages[0].prune.method", "'magic' is not one of"),
        ({"stages": [{"prune": {"heads": 0.5}}]}, "stages[0].prune.heads", "unknown option"),
        ({"stages": [{"prune": {"method": "post_training", "flops_ratio": 2}}]}, "flops_ratio", "(0, 1]"),
        ({"stages": [{"quantize": {"mode": "int4"}}]}, "stages[0].quantize.mode", "'int4' is not one of"),
        ({"stages": [{"quantize": {}}, {"prune": {"target_heads": 0.5}}]}, "stages[1].prune", "needs a PyTorch model"),
        ({"stages": [{"quantize": {}}, {"quantize": {}}]}, "stages[1].quantize", "already quantized"),
        ({"stages": [{"distill": {"student": {"num_layers": 1}}}]}, "stages[0].distill", "needs a trained teacher"),
        ({"stages": [{"evaluate": {"split": "dev"}}]}, "stages[0].evaluate.split", "'dev' is not one of"),
        ({"stages": [{"push": {}}]}, "stages[0].push.repo_id", "is required"),
        ({"dataset": {"name": "csv", "text_col": "x"}}, "dataset.text_col", "unknown option"),
        ({"dataset": {"name": "csv", "max_length": "long"}}, "dataset.max_length", "'long'"),
        ({"model": {"config": {"model_type": "bert"}}}, "model.config.model_type", "cannot do image-classification"),
        ({"model": {"config": {"model_type": "gpt2"}}}, "model.config.model_type", "does not support"),
    ],
)
def test_invalid_recipes_name_the_yaml_path(changes, path, fragment):
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(base(**changes))
    message = str(excinfo.value)
    assert message.startswith(path) or f" {path}" in message or path in message
    assert fragment in message


def test_errors_from_a_file_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(base(task="nope")))
    with pytest.raises(RecipeError, match=r"bad\.yaml: task: 'nope'"):
        load_recipe(path)
    with pytest.raises(RecipeError, match="no such recipe file"):
        load_recipe(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("stages: [\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(tmp_path / "broken.yaml")


def test_overrides_win_over_yaml():
    recipe = load_recipe(
        base(),
        ["stages[1].distill.temperature=4", "stages.0.finetune.learning_rate=0.01", "seed=7", "dataset.max_length=16"],
    )
    assert recipe.stages[1].options["temperature"] == 4
    assert recipe.stages[0].options["learning_rate"] == 0.01
    assert recipe.seed == 7 and recipe.dataset.max_length == 16
    assert recipe.raw["stages"][1]["distill"]["temperature"] == 4


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("seed", "expected KEY.PATH=VALUE"),
        ("stages[9].distill.temperature=4", "not an index"),
        ("stages[1].distill.temprature=4", "unknown option"),
        ("seed=abc", "'abc'"),
    ],
)
def test_bad_overrides_are_clear_errors(override, fragment):
    with pytest.raises(RecipeError, match=fragment):
        load_recipe(base(), [override])


def test_apply_overrides_does_not_modify_its_input():
    raw = base()
    apply_overrides(raw, ["seed=3"])
    assert "seed" not in raw


def test_fingerprint_follows_the_resolved_recipe():
    assert load_recipe(base()).fingerprint() == load_recipe(base()).fingerprint()
    assert load_recipe(base()).fingerprint() != load_recipe(base(), ["seed=1"]).fingerprint()
