import glob
import json
import os
import subprocess
import sys

import pytest
from tiny_models import MODEL_TYPES

import hf_slim
from hf_slim.cli import main


def _run(argv, capsys):
    """Run the CLI in-process; returns (exit code, stdout, stderr) whether it returns or exits."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--help"], ["usage: hf-slim", "--version", "env"]),
        (["-h"], ["usage: hf-slim", "--version", "env"]),
        (["env", "--help"], ["usage: hf-slim env"]),
    ],
    ids=["help", "short-help", "env-help"],
)
def test_help(argv, expected, capsys):
    code, out, _ = _run(argv, capsys)
    assert code == 0
    for fragment in expected:
        assert fragment in out


def test_help_subprocess():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "hf_slim.cli", "--help"], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    assert "usage: hf-slim" in result.stdout
    assert "env" in result.stdout


def test_env_prints_json(capsys):
    code, out, _ = _run(["env"], capsys)
    assert code == 0
    info = json.loads(out)
    assert info["hf_slim"] == hf_slim.__version__
    assert sorted(info["supported_model_types"]) == sorted(MODEL_TYPES)
    assert "bert" in info["supported_model_types"]
    for package in ("torch", "transformers", "accelerate", "datasets", "evaluate"):
        assert info[package] not in ("", "not installed"), package
    assert info["python"].count(".") == 2


@pytest.mark.parametrize("argv", [["--version"], ["--version", "env"]])
def test_version(argv, capsys):
    code, out, _ = _run(argv, capsys)
    assert code == 0
    assert out.strip() == hf_slim.__version__


def test_no_command_prints_help(capsys):
    code, out, _ = _run([], capsys)
    assert code == 2
    assert "usage: hf-slim" in out
    assert "env" in out


def test_unknown_command(capsys):
    code, _, err = _run(["distil-everything"], capsys)
    assert code == 2
    assert "distil-everything" in err


# -- every command --------------------------------------------------------------------------------------------------
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED_RECIPES = sorted(glob.glob(os.path.join(ROOT, "recipes", "*.yaml")))
COMMANDS = ["run", "validate", "distill", "prune", "quantize", "evaluate", "report", "push", "env"]


def test_every_command_is_listed_in_the_help(capsys):
    code, out, _ = _run(["--help"], capsys)
    assert code == 0
    for command in COMMANDS:
        assert command in out


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help(command, capsys):
    code, out, err = _run([command, "--help"], capsys)
    assert code == 0, err
    assert out.startswith(f"usage: hf-slim {command}")
    assert "-h, --help" in out


@pytest.mark.parametrize("command", ["run", "validate"])
def test_recipe_commands_document_their_options(command, capsys):
    _, out, _ = _run([command, "--help"], capsys)
    assert "recipe" in out and "--set KEY=VALUE" in out
    if command == "run":
        assert "--output-dir" in out and "--overwrite" in out


@pytest.mark.parametrize("command", ["distill", "prune", "quantize", "evaluate"])
def test_single_stage_commands_need_a_model_and_a_recipe(command, capsys):
    _, out, _ = _run([command, "--help"], capsys)
    assert "model" in out and "--recipe" in out and "--output-dir" in out and "--overwrite" in out
    code, _, err = _run([command, "some-model"], capsys)
    assert code == 2
    assert "--recipe" in err


def test_push_documents_its_options(capsys):
    _, out, _ = _run(["push", "--help"], capsys)
    for fragment in ("source", "--repo-id", "--private", "--dry-run", "--folder", "--base-model", "onnx/", "HF_TOKEN"):
        assert fragment in out, fragment
    code, _, err = _run(["push", "some-run"], capsys)
    assert code == 2
    assert "--repo-id" in err


@pytest.mark.parametrize("command", ["run", "validate", "report", "push"])
def test_missing_argument_is_a_usage_error(command, capsys):
    code, _, err = _run([command], capsys)
    assert code == 2
    assert f"usage: hf-slim {command}" in err


# -- validate -----------------------------------------------------------------------------------------------------
def test_shipped_recipes_are_found():
    names = {os.path.basename(p) for p in SHIPPED_RECIPES}
    assert {"quickstart.yaml", "text-classification.yaml", "image-classification.yaml"} <= names


@pytest.mark.parametrize("recipe", SHIPPED_RECIPES, ids=os.path.basename)
def test_validate_every_shipped_recipe(recipe, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # validating writes nothing, not even outputs/
    code, out, err = _run(["validate", recipe], capsys)
    assert code == 0, err
    assert out.startswith(f"{recipe}: valid (")
    assert "stages: " in out
    assert os.listdir(tmp_path) == []


def test_validate_applies_overrides(capsys):
    recipe = os.path.join(ROOT, "recipes", "quickstart.yaml")
    code, out, _ = _run(["validate", recipe, "--set", "stages=[quantize, evaluate]"], capsys)
    assert code == 0
    assert "stages: quantize, evaluate" in out


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["modle=vit"], "modle: unknown key"),
        (["stages[0].finetune.learning_rate=fast"], "stages[0].finetune.learning_rate: 'fast' is not a valid float"),
        (["stages[1].distill.temprature=4"], "stages[1].distill.temprature: unknown option"),
        (["stages=[quantize, {prune: {method: post_training}}]"], "stages[1].prune: needs a PyTorch model"),
        (["model.config.model_type=bert"], "model.config.model_type: a bert model is a text model"),
        (["seed"], "--set 'seed': expected KEY.PATH=VALUE"),
    ],
    ids=["unknown-key", "bad-type", "unknown-option", "stage-order", "wrong-modality", "bad-override"],
)
def test_validate_reports_the_yaml_path(overrides, message, capsys):
    recipe = os.path.join(ROOT, "recipes", "quickstart.yaml")
    code, out, err = _run(["validate", recipe, *[a for o in overrides for a in ("--set", o)]], capsys)
    assert code == 2
    assert out == ""
    assert err.startswith("hf-slim: error: ") and message in err, err
    assert "Traceback" not in err


def test_validate_missing_and_broken_files(tmp_path, capsys):
    code, _, err = _run(["validate", str(tmp_path / "nope.yaml")], capsys)
    assert code == 2 and "nope.yaml: no such recipe file" in err
    broken = tmp_path / "broken.yaml"
    broken.write_text("stages: [\n")
    code, _, err = _run(["validate", str(broken)], capsys)
    assert code == 2 and "broken.yaml: not valid YAML" in err


# -- report -------------------------------------------------------------------------------------------------------
@pytest.fixture
def written_report(tmp_path):
    from hf_slim.recipes.report import StageRow, build_report, write_report

    rows = [
        StageRow("stage-0-base", "pytorch", "stage-0-base", 1000, 4000, {"1": 2.0, "32": 20.0}, "accuracy", 0.5, 1.0),
        StageRow("stage-1-quantize", "onnx-int8", "stage-1-quantize", None, 1000, {"1": 1.0}, "accuracy", 0.49, 2.0),
    ]
    write_report(build_report(rows, title="cli test"), tmp_path)
    return tmp_path


def test_report_rerenders_markdown_and_plot(written_report, capsys):
    expected = (written_report / "report.md").read_text()
    json_before = (written_report / "report.json").read_text()
    (written_report / "report.md").unlink()
    (written_report / "tradeoff.png").unlink()

    code, out, err = _run(["report", str(written_report)], capsys)
    assert code == 0, err
    assert (written_report / "report.md").read_text() == expected
    assert (written_report / "tradeoff.png").stat().st_size > 0
    assert (written_report / "report.json").read_text() == json_before
    assert set(out.split()) == {str(written_report / n) for n in ("report.json", "report.md", "tradeoff.png")}


def test_report_without_report_json(tmp_path, capsys):
    code, out, err = _run(["report", str(tmp_path)], capsys)
    assert code == 2
    assert out == ""
    assert f"no report.json in {tmp_path}" in err and "hf-slim run" in err
    assert os.listdir(tmp_path) == []

    code, _, err = _run(["report", str(tmp_path / "missing")], capsys)
    assert code == 2 and "no report.json" in err
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize(
    "content", ["{not json", '{"rows": []}', "[1, 2]"], ids=["corrupt", "no-rows", "not-a-report"]
)
def test_report_with_a_bad_report_json(content, tmp_path, capsys):
    (tmp_path / "report.json").write_text(content)
    code, _, err = _run(["report", str(tmp_path)], capsys)
    assert code == 2
    assert str(tmp_path / "report.json") in err
    assert "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == ["report.json"]


# -- single-stage commands read their recipe like `run` does ------------------------------------------------------
SINGLE_RECIPE_BUG = (
    "hf_slim/cli.py::_single reads --recipe with a bare open() + yaml.safe_load instead of the checks of "
    "schema.load_recipe, so a missing or broken recipe file escapes main() as FileNotFoundError / YAMLError "
    "(traceback, exit 1) instead of `hf-slim: error: ...` with exit 2"
)


@pytest.mark.parametrize("command, problem", [("quantize", "missing"), ("prune", "broken")])
def test_single_stage_command_with_a_bad_recipe_file(command, problem, tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    if problem == "broken":
        recipe.write_text("stages: [\n")
    out = tmp_path / "out"
    code, _, err = _run([command, str(tmp_path / "model"), "--recipe", str(recipe), "--output-dir", str(out)], capsys)
    assert code == 2
    assert err.startswith("hf-slim: error: ") and "recipe.yaml" in err
    assert ("no such recipe file" if problem == "missing" else "not valid YAML") in err
    assert not out.exists()
