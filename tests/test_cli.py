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
