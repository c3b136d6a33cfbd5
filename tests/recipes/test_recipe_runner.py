"""`hf-slim run`: the quickstart recipe end to end (reduced by default, full when slow), resume after a failed
stage, ownership of the output dir, and validation before any work."""

import glob
import hashlib
import json
import os
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file
from tiny_models import QUICKSTART_REDUCED
from transformers import AutoModelForImageClassification, BertConfig, TrainerCallback

import hf_slim
import hf_slim.export
from hf_slim.cli import main
from hf_slim.recipes import runner as runner_module
from hf_slim.recipes.runner import RecipeRunner
from hf_slim.recipes.schema import RecipeError, load_recipe

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICKSTART = os.path.join(ROOT, "recipes", "quickstart.yaml")
REDUCED = QUICKSTART_REDUCED
STAGES = [
    "stage-0-base",
    "stage-1-finetune",
    "stage-2-distill",
    "stage-3-prune",
    "stage-4-quantize",
    "stage-5-evaluate",
]
STAGE_DIRS = STAGES[:-1]  # evaluate measures the quantized model and writes no folder
# What a run with a given seed must reproduce; latency and seconds are measurements of the machine.
MEASURED = ("metric", "parameters", "size_bytes")


def sets(overrides):
    return [arg for item in overrides for arg in ("--set", item)]


def run_argv(output_dir, *extra, overrides=REDUCED):
    return ["run", QUICKSTART, "--output-dir", str(output_dir), *sets(overrides), *extra]


def cli(argv, capsys):
    """Run the CLI in-process; returns (exit code, stdout, stderr) whether it returns or exits."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def read_json(path):
    with open(path) as f:
        return json.load(f)


def measured(rows_or_records):
    """{stage: (metric, parameters, size_bytes)} from report rows or state.json records."""
    if isinstance(rows_or_records, dict):
        items = rows_or_records.items()
    else:
        items = ((row["stage"], row) for row in rows_or_records)
    return {name: tuple(record[key] for key in MEASURED) for name, record in items}


def snapshot(directory):
    """Every path under `directory` with its size and content hash (files) or None (folders)."""
    result = {}
    for parent, dirs, files in os.walk(directory):
        for name in dirs:
            result[os.path.relpath(os.path.join(parent, name), directory)] = None
        for name in files:
            path = os.path.join(parent, name)
            with open(path, "rb") as f:
                result[os.path.relpath(path, directory)] = (
                    os.path.getsize(path),
                    hashlib.sha256(f.read()).hexdigest(),
                )
    return result


def leftovers(directory):
    """Temporary siblings of the atomic writes (`.stage-N-name.tmp-*`, `.state.json.*`...) that were not cleaned."""
    return sorted(name for name in os.listdir(directory) if name.startswith(".") and name != runner_module.WORK_DIR)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The models are tiny: on 2 shared cores, two intra-op threads contending with other processes make every step
    # ~10x slower than one thread does.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def reduced_run(tmp_path_factory):
    """One uninterrupted reduced quickstart run, shared by the tests that only read its outputs."""
    out = tmp_path_factory.mktemp("quickstart") / "out"
    code = main(run_argv(out))
    return {
        "code": code,
        "dir": out,
        "state": read_json(out / "state.json"),
        "report": read_json(out / "report.json"),
    }


# -- the quickstart end to end ----------------------------------------------------------------------------------------
def test_reduced_quickstart_writes_every_stage_and_the_report(reduced_run):
    out = reduced_run["dir"]
    assert reduced_run["code"] == 0
    for name in STAGE_DIRS:
        assert (out / name).is_dir(), name
    assert not (out / "stage-5-evaluate").exists()
    assert leftovers(out) == []
    # Each stage's Trainer checkpoints are removed once the stage is done.
    assert not os.listdir(out / ".work")

    state = reduced_run["state"]
    assert list(state["stages"]) == STAGES
    assert state["recipe_name"] == "quickstart"
    recipe = load_recipe(QUICKSTART, REDUCED)
    assert state["fingerprint"] == recipe.fingerprint()
    assert read_json(out / "recipe.json") == recipe.raw
    assert state["stages"]["stage-5-evaluate"]["evaluated"] == "stage-4-quantize"

    for name in ("report.json", "report.md", "tradeoff.png"):
        assert (out / name).is_file(), name
    report = reduced_run["report"]
    assert [row["stage"] for row in report["rows"]] == STAGES
    assert len(report["rows"]) == 6
    assert report["reference"] == "stage-1-finetune"
    assert report["metric_name"] == "accuracy"
    assert report["batch_sizes"] == ["1", "32"]
    # The report shows what state.json recorded for every stage, with a latency for every batch size.
    assert measured(report["rows"]) == measured(state["stages"])
    for row in report["rows"]:
        assert set(row["latency_ms"]) == {"1", "32"} and all(v > 0 for v in row["latency_ms"].values()), row
        assert 0 <= row["metric"] <= 1
    rows = {row["stage"]: row for row in report["rows"]}
    assert rows["stage-5-evaluate"]["path"] == "stage-4-quantize"
    assert rows["stage-5-evaluate"]["notes"] == "eval split"
    assert rows["stage-4-quantize"]["parameters"] is None and rows["stage-4-quantize"]["kind"] == "onnx-int8"
    assert rows["stage-1-finetune"]["retention"] == 1.0
    # Every stage makes the model smaller on disk, except fine-tuning.
    sizes = [rows[name]["size_bytes"] for name in STAGE_DIRS]
    assert sizes[0] == sizes[1] > sizes[2] > sizes[3] > sizes[4] > 0


def test_reduced_quickstart_stage_outputs_reload(reduced_run):
    out = reduced_run["dir"]
    rows = {row["stage"]: row for row in reduced_run["report"]["rows"]}

    quantized = out / "stage-4-quantize"
    assert (quantized / "model_quantized.onnx").is_file()
    quantization = read_json(quantized / "quantization_report.json")
    assert quantization  # written by hf_slim.quantize, read by people

    # Distillation output is a stock transformers checkpoint with the 2-layer student.
    student = AutoModelForImageClassification.from_pretrained(out / "stage-2-distill")
    assert student.config.num_hidden_layers == 2
    assert len(student.vit.encoder.layer) == 2
    assert sum(p.numel() for p in student.parameters()) == rows["stage-2-distill"]["parameters"]

    # The pruned model needs hf_slim to rebuild its smaller heads and FFNs.
    pruned = hf_slim.from_pretrained(str(out / "stage-3-prune"))
    pruned_parameters = sum(p.numel() for p in pruned.parameters())
    assert pruned_parameters == rows["stage-3-prune"]["parameters"]
    assert pruned_parameters < rows["stage-2-distill"]["parameters"] < rows["stage-1-finetune"]["parameters"]


def test_reduced_quickstart_report_can_be_rerendered(reduced_run, tmp_path, capsys):
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(reduced_run["dir"] / "report.json", copy / "report.json")
    code, out, err = cli(["report", str(copy)], capsys)
    assert code == 0, err
    assert (copy / "report.md").read_text() == (reduced_run["dir"] / "report.md").read_text()
    assert (copy / "tradeoff.png").stat().st_size > 0
    assert str(copy / "report.md") in out
    assert leftovers(copy) == []


@pytest.mark.slow
def test_full_quickstart_keeps_accuracy(tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = cli(["run", QUICKSTART, "--output-dir", str(out)], capsys)
    assert code == 0, err
    rows = {row["stage"]: row for row in read_json(out / "report.json")["rows"]}
    assert list(rows) == STAGES
    assert rows["stage-1-finetune"]["metric"] > 0.9
    assert rows["stage-4-quantize"]["retention"] > 0.97
    assert rows["stage-5-evaluate"]["metric"] == rows["stage-4-quantize"]["metric"]
    assert "| stage-4-quantize |" in stdout


# -- resume -------------------------------------------------------------------------------------------------------
def _write_then_crash(self, stage, model_path, target):
    # Fails half-way through writing the stage's output.
    open(os.path.join(target, "model_quantized.onnx"), "wb").close()
    raise RuntimeError("simulated crash in quantize")


def _interrupt_after_export(*args, **kwargs):
    # Ctrl-C once the ONNX export is in .work/ and quantization has started.
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    "target, replacement, error, exported",
    [
        (RecipeRunner, ("_quantize", _write_then_crash), RuntimeError, False),
        (hf_slim.export, ("quantize", _interrupt_after_export), KeyboardInterrupt, True),
    ],
    ids=["crash-while-writing", "interrupt-after-export"],
)
def test_resume_after_a_failed_stage_gives_the_same_report(
    target, replacement, error, exported, reduced_run, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    real_quantize = RecipeRunner._quantize
    with monkeypatch.context() as patch:
        patch.setattr(target, *replacement)
        with pytest.raises(error):
            main(run_argv(out))

    state = read_json(out / "state.json")
    finished = STAGES[:4]
    assert list(state["stages"]) == finished
    assert sorted(p for p in os.listdir(out) if p.startswith("stage-")) == finished
    assert leftovers(out) == []
    assert not (out / "report.json").exists()
    assert (out / ".work" / "stage-4-quantize" / "onnx" / "model.onnx").is_file() == exported

    calls = {}

    def spy(name):
        real = getattr(RecipeRunner, name)

        def wrapper(self, *args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return real(self, *args, **kwargs)

        return wrapper

    assert RecipeRunner._quantize is real_quantize
    for name in ("_build_base", "_finetune", "_distill", "_prune", "_quantize"):
        monkeypatch.setattr(RecipeRunner, name, spy(name))
    assert main(run_argv(out)) == 0
    assert calls == {"_quantize": 1}  # the finished stages were not run again

    resumed = read_json(out / "state.json")
    assert list(resumed["stages"]) == STAGES
    # What was recorded before the crash is kept as it was, seconds included.
    for name in finished:
        assert resumed["stages"][name] == state["stages"][name], name
    report = read_json(out / "report.json")
    assert [row["stage"] for row in report["rows"]] == STAGES
    rows = {row["stage"]: row for row in report["rows"]}
    for name in finished:
        assert rows[name]["seconds"] == state["stages"][name]["seconds"]
    assert measured(report["rows"]) == measured(resumed["stages"])
    # Same seed, same numbers as the uninterrupted run.
    assert measured(report["rows"]) == measured(reduced_run["report"]["rows"])
    assert leftovers(out) == []


def test_resume_after_a_crash_between_writing_and_recording_a_stage(reduced_run, tmp_path, monkeypatch):
    """A stage folder in place but not in state.json (the crash came while measuring it) is redone and replaced."""
    out = tmp_path / "out"
    real_measure = RecipeRunner._measure

    def crash_on_quantized(self, artifact, *args, **kwargs):
        if artifact.path.endswith("stage-4-quantize"):
            raise RuntimeError("simulated crash while measuring")
        return real_measure(self, artifact, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(RecipeRunner, "_measure", crash_on_quantized)
        with pytest.raises(RuntimeError, match="while measuring"):
            main(run_argv(out))
    assert list(read_json(out / "state.json")["stages"]) == STAGES[:4]
    assert (out / "stage-4-quantize" / "model_quantized.onnx").is_file()

    assert main(run_argv(out)) == 0
    assert leftovers(out) == []
    assert sorted(p for p in os.listdir(out) if p.startswith("stage-")) == STAGE_DIRS
    assert measured(read_json(out / "report.json")["rows"]) == measured(reduced_run["report"]["rows"])


class _CrashAfterFirstSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        raise RuntimeError(f"simulated crash after saving step {state.global_step}")


def test_resume_continues_an_interrupted_training_from_its_checkpoint(tmp_path, monkeypatch):
    """A training stage stopped after its first epoch's checkpoint resumes from it and gives the same model."""
    two_epochs = ["stages=[{finetune: {num_train_epochs: 2, per_device_train_batch_size: 32}}]", *REDUCED[3:]]
    uninterrupted = tmp_path / "uninterrupted"
    assert main(run_argv(uninterrupted, overrides=two_epochs)) == 0

    out = tmp_path / "out"
    real_train = RecipeRunner._train

    def crashing_train(self, trainer, args):
        trainer.add_callback(_CrashAfterFirstSave())
        real_train(self, trainer, args)

    monkeypatch.setattr(RecipeRunner, "_train", crashing_train)
    with pytest.raises(RuntimeError, match="simulated crash after saving step 7"):
        main(run_argv(out, overrides=two_epochs))
    checkpoints = glob.glob(str(out / ".work" / "stage-1-finetune" / "checkpoint-*"))
    assert [os.path.basename(p) for p in checkpoints] == ["checkpoint-7"]
    assert list(read_json(out / "state.json")["stages"]) == ["stage-0-base"]
    assert not (out / "stage-1-finetune").exists()

    resumed_from = []

    def recording_train(self, trainer, args):
        resumed_from.append(self._resume_checkpoint(args))
        real_train(self, trainer, args)

    monkeypatch.setattr(RecipeRunner, "_train", recording_train)
    assert main(run_argv(out, overrides=two_epochs)) == 0
    assert [os.path.basename(p) for p in resumed_from] == ["checkpoint-7"]
    assert not (out / ".work" / "stage-1-finetune").exists()
    assert measured(read_json(out / "report.json")["rows"]) == measured(
        read_json(uninterrupted / "report.json")["rows"]
    )
    # The second epoch continued from the checkpoint's weights, optimizer, scheduler and data order.
    resumed_weights = load_file(out / "stage-1-finetune" / "model.safetensors")
    expected_weights = load_file(uninterrupted / "stage-1-finetune" / "model.safetensors")
    assert resumed_weights.keys() == expected_weights.keys()
    for name, tensor in expected_weights.items():
        torch.testing.assert_close(resumed_weights[name], tensor, rtol=0, atol=1e-6, msg=name)
    assert not torch.equal(
        expected_weights["classifier.weight"],
        load_file(out / "stage-0-base" / "model.safetensors")["classifier.weight"],
    )


def test_rerunning_a_finished_run_does_no_work(reduced_run, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(reduced_run["dir"], out)
    for name in ("_build_base", "_finetune", "_distill", "_prune", "_quantize", "_measure"):
        monkeypatch.setattr(RecipeRunner, name, lambda *a, _name=name, **k: pytest.fail(f"{_name} ran again"))
    assert main(run_argv(out)) == 0
    assert read_json(out / "state.json") == reduced_run["state"]
    assert measured(read_json(out / "report.json")["rows"]) == measured(reduced_run["report"]["rows"])


# -- the output dir belongs to one recipe ---------------------------------------------------------------------------
# A recipe that runs in a second or two: the base model evaluated once.
EVALUATE_ONLY = ["stages=[evaluate]", *REDUCED[3:]]


def test_output_dir_of_a_different_recipe_is_refused_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = cli(run_argv(out, overrides=EVALUATE_ONLY), capsys)
    assert code == 0, err
    before = snapshot(out)

    other = [*EVALUATE_ONLY, "seed=1"]
    code, _, err = cli(run_argv(out, overrides=other), capsys)
    assert code == 2
    assert "different recipe" in err and "--overwrite" in err and str(out) in err
    assert snapshot(out) == before

    code, _, err = cli(run_argv(out, "--overwrite", overrides=other), capsys)
    assert code == 0, err
    state = read_json(out / "state.json")
    assert state["fingerprint"] == load_recipe(QUICKSTART, other).fingerprint()
    assert list(state["stages"]) == ["stage-0-base", "stage-1-evaluate"]
    assert read_json(out / "recipe.json")["seed"] == 1


def test_output_dir_of_the_same_recipe_with_a_relative_path_is_accepted(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(run_argv("out", overrides=EVALUATE_ONLY), capsys)
    assert code == 0, err
    code, _, err = cli(run_argv(tmp_path / "out", overrides=EVALUATE_ONLY), capsys)
    assert code == 0, err


def test_non_empty_output_dir_without_a_run_is_refused_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = cli(run_argv(out, overrides=EVALUATE_ONLY), capsys)
    assert code == 2
    assert "not empty" in err and "--overwrite" in err and str(out) in err
    assert os.listdir(out) == ["notes.txt"]

    code, _, err = cli(run_argv(out, "--overwrite", overrides=EVALUATE_ONLY), capsys)
    assert code == 0, err
    assert not (out / "notes.txt").exists()
    assert list(read_json(out / "state.json")["stages"]) == ["stage-0-base", "stage-1-evaluate"]


def test_empty_output_dir_is_used(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = cli(run_argv(out, overrides=EVALUATE_ONLY), capsys)
    assert code == 0, err
    assert (out / "report.json").is_file()


def test_runner_raises_recipe_error_for_a_different_recipe(tmp_path):
    out = tmp_path / "out"
    hf_slim.run_recipe(QUICKSTART, str(out), overrides=EVALUATE_ONLY)
    with pytest.raises(RecipeError, match="different recipe.*--overwrite"):
        hf_slim.run_recipe(QUICKSTART, str(out), overrides=[*EVALUATE_ONLY, "seed=1"])


# -- validation before any work ---------------------------------------------------------------------------------
@pytest.fixture
def bert_folder(tmp_path):
    """A local text model (only its config is read before the task check fails)."""
    path = tmp_path / "bert"
    BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37).save_pretrained(path)
    return path


@pytest.mark.parametrize(
    "overrides, path, fragment",
    [
        (["modle=vit"], "modle", "unknown key"),
        (["seed=abc"], "seed", "'abc' has the wrong type"),
        (["stages[0].finetune.learning_rate=fast"], "stages[0].finetune.learning_rate", "'fast' is not a valid"),
        (["stages[1].distill.temprature=4"], "stages[1].distill.temprature", "unknown option"),
        (["stages[3].quantize.mode=int4"], "stages[3].quantize.mode", "'int4' is not one of"),
        (["stages=[quantize, {prune: {method: post_training}}]"], "stages[1].prune", "needs a PyTorch model"),
        (["stages=[{distill: {student: {num_layers: 2}}}]"], "stages[0].distill", "needs a trained teacher"),
        (["dataset.label_column=missing"], "dataset.label_column", "'missing' is not in the train split"),
        (["dataset.image_column=pixels"], "dataset.image_column", "'pixels' is not in the train split"),
        (["dataset.eval_fraction=null"], "dataset.eval_split is null", "eval_fraction is not set"),
        (["model.config.model_type=bert"], "model.config.model_type", "cannot do image-classification"),
        (["model.config.model_type=gpt2"], "model.config.model_type", "gpt2"),
        (["stages[4].evaluate.split=test"], "stages[4].evaluate.split", "no test split"),
        (["stages[4]={push: {repo_id: me/quickstart-slim}}"], "stages[4].push", "no Hugging Face token"),
        (["model=/nonexistent/model"], "model", "cannot load '/nonexistent/model'"),
    ],
    ids=[
        "unknown-key",
        "bad-type",
        "bad-option-type",
        "unknown-stage-option",
        "bad-choice",
        "stage-order",
        "distill-without-teacher",
        "label-column-absent",
        "image-column-absent",
        "no-eval-split",
        "task-model-cannot-do",
        "unsupported-model",
        "evaluate-split-absent",
        "push-stage",
        "model-not-found",
    ],
)
def test_invalid_run_fails_before_any_work(overrides, path, fragment, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(RecipeRunner, "_build_base", lambda *a, **k: pytest.fail("work started"))
    monkeypatch.delenv("HF_TOKEN", raising=False)  # the push case needs "no token"
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    out = tmp_path / "out"
    code, stdout, err = cli(run_argv(out, overrides=[*REDUCED, *overrides]), capsys)
    assert code == 2
    assert err.startswith("hf-slim: error: ")
    assert path in err and fragment in err, err
    assert "Traceback" not in err and stdout == ""
    assert not out.exists()


def test_recipe_errors_name_the_recipe_file(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = cli(run_argv(out, overrides=["stages[0].finetune.num_train_epoch=3"]), capsys)
    assert code == 2
    assert f"{QUICKSTART}: stages[0].finetune.num_train_epoch: unknown option" in err
    assert "num_train_epochs" in err  # the suggestion
    assert not out.exists()


@pytest.mark.parametrize("key", ["model", "teacher"])
def test_model_folder_that_cannot_do_the_task_fails_before_any_work(key, bert_folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(RecipeRunner, "_build_base", lambda *a, **k: pytest.fail("work started"))
    out = tmp_path / "out"
    code, _, err = cli(run_argv(out, overrides=[*REDUCED, f"{key}={bert_folder}"]), capsys)
    assert code == 2
    assert f"{key}: a bert model is a text model and cannot do image-classification" in err
    assert not out.exists()


def test_invalid_run_leaves_an_existing_run_untouched(reduced_run, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(reduced_run["dir"], out)
    before = snapshot(out)
    code, _, err = cli(run_argv(out, "--overwrite", overrides=[*REDUCED, "dataset.label_column=missing"]), capsys)
    assert code == 2 and "dataset.label_column" in err
    assert snapshot(out) == before


def test_output_dir_that_is_a_file_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "out"
    out.write_text("mine")
    code, _, err = cli(run_argv(out, overrides=EVALUATE_ONLY), capsys)
    assert code == 2
    assert str(out) in err
    assert out.read_text() == "mine"


def test_bad_override_syntax_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = cli(run_argv(out, overrides=["seed"]), capsys)
    assert code == 2
    assert "--set 'seed': expected KEY.PATH=VALUE" in err
    assert not out.exists()


def test_missing_recipe_file(tmp_path, capsys):
    code, _, err = cli(["run", str(tmp_path / "nope.yaml"), "--output-dir", str(tmp_path / "out")], capsys)
    assert code == 2
    assert "nope.yaml: no such recipe file" in err
    assert not (tmp_path / "out").exists()


# -- one stage on a given model -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "command, source, expected, overrides",
    [
        ("distill", "stage-1-finetune", "stage-2-distill", ["stages[0].distill.num_train_epochs=1"]),
        ("prune", "stage-2-distill", "stage-3-prune", ["stages[0].prune.num_samples=64"]),
        ("quantize", "stage-3-prune", "stage-4-quantize", []),
        ("evaluate", "stage-3-prune", "stage-3-prune", []),
    ],
    ids=["distill", "prune", "quantize", "evaluate"],
)
def test_single_stage_command_on_a_model_of_the_run(
    command, source, expected, overrides, reduced_run, tmp_path, capsys
):
    """One stage applied to a model of the full run, with the recipe's data and options, gives the same numbers."""
    out = tmp_path / command
    argv = [command, str(reduced_run["dir"] / source), "--recipe", QUICKSTART, "--output-dir", str(out)]
    code, stdout, err = cli([*argv, *sets([*overrides, *REDUCED[3:]])], capsys)
    assert code == 0, err
    stage = f"stage-1-{command}"
    state = read_json(out / "state.json")
    assert list(state["stages"]) == ["stage-0-base", stage]
    recipe = read_json(out / "recipe.json")
    assert recipe["model"] == str(reduced_run["dir"] / source)
    assert [next(iter(s)) for s in recipe["stages"]] == [command]
    assert f"| {stage} |" in stdout
    assert (out / "report.json").is_file()
    full = measured(reduced_run["state"]["stages"])
    assert measured(state["stages"]) == {"stage-0-base": full[source], stage: full[expected]}
    if command == "quantize":
        assert (out / stage / "model_quantized.onnx").is_file()
        assert (out / stage / "quantization_report.json").is_file()
        assert recipe["stages"] == [{"quantize": {"mode": "dynamic", "max_accuracy_drop": 0.01}}]
    elif command == "evaluate":
        assert not (out / stage).exists()
    else:
        assert (out / stage / "model.safetensors").is_file()


def test_single_stage_command_rejects_a_changed_stage(reduced_run, tmp_path, capsys):
    out = tmp_path / "q"
    code, _, err = cli(
        [
            "quantize",
            str(reduced_run["dir"] / "stage-3-prune"),
            "--recipe",
            QUICKSTART,
            "--output-dir",
            str(out),
            "--set",
            "stages[0]=evaluate",
        ],
        capsys,
    )
    assert code == 2
    assert "expected quantize" in err
    assert not out.exists()


def test_single_stage_without_that_stage_in_the_recipe_uses_defaults(reduced_run, tmp_path, capsys):
    with open(QUICKSTART) as f:
        recipe = yaml.safe_load(f)
    recipe["stages"] = [s for s in recipe["stages"] if "quantize" not in s]
    path = tmp_path / "no-quantize.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "q"
    code, _, err = cli(
        [
            "quantize",
            str(reduced_run["dir"] / "stage-3-prune"),
            "--recipe",
            str(path),
            "--output-dir",
            str(out),
            *sets(REDUCED[3:]),
        ],
        capsys,
    )
    assert code == 0, err
    assert read_json(out / "recipe.json")["stages"] == [{"quantize": {}}]
    assert list(read_json(out / "state.json")["stages"]) == ["stage-0-base", "stage-1-quantize"]
