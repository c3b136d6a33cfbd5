"""The README's first command runs examples/distill_digits.py; these tests run it small (default) and full (slow)."""

import importlib.util
import json
import os

import pytest
import torch
from transformers import AutoModelForImageClassification

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "distill_digits.py")


def load_example():
    spec = importlib.util.spec_from_file_location("distill_digits", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_example_runs_and_saves_reloadable_models(tmp_path):
    example = load_example()
    results = example.main(["--output-dir", str(tmp_path), "--teacher-epochs", "1", "--student-epochs", "1"])

    assert set(results) == {"teacher", "student (no KD)", "student (distilled)"}
    assert results["student (distilled)"]["layers"] == 2
    assert results["teacher"]["parameters"] > results["student (distilled)"]["parameters"]
    with open(tmp_path / "results.json") as f:
        assert json.load(f) == results

    student = AutoModelForImageClassification.from_pretrained(tmp_path / "student")
    teacher = AutoModelForImageClassification.from_pretrained(tmp_path / "teacher")
    assert student.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == 4
    assert (tmp_path / "student" / "model.safetensors").exists()
    # The saved student is the model that was evaluated: reproduce its accuracy from the files on disk.
    _, test = example.digits_datasets(seed=42)
    batch = test[:]
    with torch.no_grad():
        logits = student.eval()(pixel_values=batch["pixel_values"]).logits
    accuracy = (logits.argmax(-1) == batch["labels"]).float().mean().item()
    assert accuracy == pytest.approx(results["student (distilled)"]["accuracy"], abs=1e-6)
    # No temporary folders are left behind by the atomic writes.
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_quickstart_example_rejects_bad_arguments(tmp_path, capsys):
    example = load_example()
    with pytest.raises(SystemExit) as excinfo:
        example.main(["--output-dir", str(tmp_path / "out"), "--student-layers", "7"])
    assert excinfo.value.code == 2
    assert "--student-layers" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_quickstart_example_full_run_keeps_accuracy(tmp_path):
    results = load_example().main(["--output-dir", str(tmp_path)])
    assert results["teacher"]["accuracy"] > 0.93
    assert results["student (distilled)"]["retention"] > 0.97
