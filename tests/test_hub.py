"""`hf_slim.hub` and `hf-slim push`: the upload folder and its reload, the model card (parsed, validated, only measured
numbers), the token (resolved, never shown), refusals before any upload work, and the upload in one commit against
local stand-ins of the Hub: recorded `HfApi` methods, and a small HTTP server at `HF_ENDPOINT`. Nothing here reaches
huggingface.co: name resolution is refused for every host but 127.0.0.1."""

import base64
import contextlib
import importlib.metadata
import io
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import evaluate
import huggingface_hub
import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import CommitOperationAdd, EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.repocard_data import model_index_to_eval_results
from tiny_models import QUICKSTART_REDUCED, build_model, make_dataset
from transformers import AutoImageProcessor, AutoModelForImageClassification, ViTConfig, ViTImageProcessor

import hf_slim
import hf_slim.hub as hub
from hf_slim.cli import main
from hf_slim.errors import HfSlimError
from hf_slim.recipes.data import load_raw, preprocess
from hf_slim.recipes.runner import RecipeRunner
from hf_slim.recipes.schema import apply_overrides, load_recipe, read_recipe_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "recipes", "quickstart.yaml")
REDUCED = QUICKSTART_REDUCED
TOKEN = "hf_TESTTOKEN_do_not_print_123"
REPO = "me/quick-slim"
# What a quickstart run publishes: the pruned PyTorch model at the root, the int8 ONNX model under onnx/.
RUN_FILES = [
    "README.md",
    "config.json",
    "model.safetensors",
    "onnx/config.json",
    "onnx/model_quantized.onnx",
    "onnx/ort_config.json",
    "onnx/preprocessor_config.json",
    "onnx/quantization_report.json",
    "preprocessor_config.json",
]
RUN_TAGS = ["hf-slim", "distillation", "pruned", "onnx", "int8"]
# whoami-v2 of a user "me" (member of "my-org") with a write token.
WHOAMI = {
    "type": "user",
    "name": "me",
    "orgs": [{"type": "org", "name": "my-org", "roleInOrg": "write"}],
    "auth": {"type": "access_token", "accessToken": {"displayName": "ci", "role": "write"}},
}
ORT_SNIPPET = (
    f'ORTModelForImageClassification.from_pretrained("{REPO}", subfolder="onnx", file_name="model_quantized.onnx")'
)
CARD_KEYS = {"library_name", "pipeline_tag", "tags", "base_model", "datasets", "model-index", "license", "language"}


# -- helpers ----------------------------------------------------------------------------------------------------------
def read_json(path):
    with open(path) as f:
        return json.load(f)


def files_under(folder):
    """Every file under `folder`, as sorted repository paths."""
    found = []
    for parent, _, names in os.walk(folder):
        found += [os.path.relpath(os.path.join(parent, n), folder).replace(os.sep, "/") for n in names]
    return sorted(found)


def contents(folder):
    result = {}
    for name in files_under(folder):
        with open(os.path.join(folder, name), "rb") as f:
            result[name] = f.read()
    return result


def assert_token_absent(*texts, folder=None):
    for text in texts:
        assert TOKEN not in text
    if folder is not None:
        for name, data in contents(folder).items():
            assert TOKEN.encode() not in data, name


def cli(argv, capsys):
    """Run the CLI in-process; returns (exit code, stdout, stderr) whether it returns or exits."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(self.format(record))


@contextlib.contextmanager
def captured():
    """stdout, stderr and every log record at DEBUG, for module-scoped fixtures (no capsys/caplog there)."""
    result = types.SimpleNamespace(out="", err="", log="")
    out, err, handler = io.StringIO(), io.StringIO(), _ListHandler()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield result
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        result.out, result.err, result.log = out.getvalue(), err.getvalue(), "\n".join(handler.lines)


def hermetic(patch, tmp, token=None):
    """No token anywhere but where the test puts it, and no host but 127.0.0.1 can be resolved. `evaluate` is put
    offline too: `evaluate.load("accuracy")` (hf_slim.metrics) ignores HF_HUB_OFFLINE and asks huggingface.co."""
    patch.setenv("HF_EVALUATE_OFFLINE", "1")
    patch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)
    patch.delenv("HF_TOKEN", raising=False)
    patch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    patch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", os.path.join(str(tmp), "no-cached-login"))
    if token is not None:
        patch.setenv("HF_TOKEN", token)
    resolved = []
    real = socket.getaddrinfo

    def local_only(host, *args, **kwargs):
        resolved.append(host)
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise socket.gaierror(f"test_hub: no network, refused to resolve {host!r}")
        return real(host, *args, **kwargs)

    patch.setattr(socket, "getaddrinfo", local_only)
    return resolved


@pytest.fixture(autouse=True)
def no_hub(monkeypatch, tmp_path):
    resolved = hermetic(monkeypatch, tmp_path)
    yield
    assert not [host for host in resolved if "huggingface" in host]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The models are tiny: on 2 shared cores one intra-op thread is much faster than two contending ones.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def private_tmp(monkeypatch, tmp_path):
    """`tempfile` writes under this folder only, so a test can check what the upload left behind."""
    path = tmp_path / "tmpdir"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path


class RecordingHub:
    """Stands in for the Hub at the `huggingface_hub.HfApi` boundary: `whoami`, `create_repo` and `create_commit`
    are recorded (with the token the `HfApi` was built with and the bytes of every committed file); any other
    upload method fails the test."""

    def __init__(self, monkeypatch, whoami=WHOAMI, commit_error=None):
        self.calls = []
        self.commits = []
        recorder = self

        def whoami_(api, token=None):
            recorder.calls.append(("whoami", api.token))
            if isinstance(whoami, Exception):
                raise whoami
            return json.loads(json.dumps(whoami))

        def create_repo(api, repo_id, *, token=None, private=None, repo_type=None, exist_ok=False, **kwargs):
            recorder.calls.append(("create_repo", api.token, repo_id, {"private": private, "exist_ok": exist_ok}))
            return f"https://hub.invalid/{repo_id}"

        def create_commit(api, repo_id, operations, *, commit_message, **kwargs):
            recorder.calls.append(("create_commit", api.token, repo_id))
            files = {}
            for op in operations:
                assert isinstance(op, CommitOperationAdd), op
                with open(op.path_or_fileobj, "rb") as f:
                    files[op.path_in_repo] = f.read()
            recorder.commits.append({"repo_id": repo_id, "message": commit_message, "files": files, **kwargs})
            if commit_error is not None:
                raise commit_error
            return types.SimpleNamespace(repo_url=f"https://hub.invalid/{repo_id}", oid="0123456789abcdef")

        def forbidden(name):
            def method(api, *args, **kwargs):
                recorder.calls.append((name, api.token))
                raise AssertionError(f"HfApi.{name} must not be used")

            return method

        monkeypatch.setattr(HfApi, "whoami", whoami_)
        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "create_commit", create_commit)
        for name in ("upload_folder", "upload_file", "upload_large_folder", "preupload_lfs_files", "create_branch"):
            monkeypatch.setattr(HfApi, name, forbidden(name))

    def names(self):
        return [call[0] for call in self.calls]


def snippets(card_text):
    return re.findall(r"```python\n(.*?)```", card_text, re.S)


def run_snippet(code, repo_id, folder):
    """Execute a card's loading snippet with the repository id replaced by the local folder; returns `model`."""
    assert f'"{repo_id}"' in code
    namespace = {}
    exec(code.replace(f'"{repo_id}"', repr(str(folder))), namespace)
    return namespace["model"]


def section(text, heading):
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end != -1 else len(text)]


def _cells(line):
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def _shown(cell):
    """The number a table cell shows ('136,138', '0.55', '1.97x', '9.00%'), None for '–'."""
    if cell == "–":
        return None
    assert re.fullmatch(r"-?[\d,]+(\.\d+)?[x%]?", cell), cell
    return float(cell.rstrip("x%").replace(",", ""))


def assert_table_shows_report(card_text, report):
    """Every cell of the card's compression table is the report.json value it claims to show, rounded as
    displayed: no number in the table was not measured."""
    lines = [line for line in section(card_text, "## Compression report").splitlines() if line.startswith("|")]
    header, rows = _cells(lines[0]), [_cells(line) for line in lines[2:]]
    batches = report["batch_sizes"]
    expected_header = ["stage", "model", "parameters", "size MB", "smaller"]
    for batch in batches:
        expected_header += [f"batch-{batch} ms", "speed-up"]
    expected_header += [report["metric_name"], "retention", "time s"]
    assert header == expected_header
    assert [row[0] for row in rows] == [row["stage"] for row in report["rows"]]
    for cells, row in zip(rows, report["rows"], strict=True):
        values = dict(zip(header[2:5], cells[2:5], strict=True))
        assert cells[1] == f"{row['kind']} `{row['path']}`"
        checks = [
            (values["parameters"], row["parameters"], 0),
            (values["size MB"], None if row["size_bytes"] is None else row["size_bytes"] / 1e6, 2),
            (values["smaller"], row["smaller"], 2),
        ]
        for i, batch in enumerate(batches):
            checks += [(cells[5 + 2 * i], row["latency_ms"].get(batch), 2)]
            checks += [(cells[6 + 2 * i], row["speedup"].get(batch), 2)]
        metric, retention, seconds = cells[-3:]
        checks += [
            (metric, None if row["metric"] is None else 100 * row["metric"], 2),
            (retention, None if row["retention"] is None else 100 * row["retention"], 1),
            (seconds, row["seconds"], 1),
        ]
        for cell, measured, decimals in checks:
            shown = _shown(cell)
            where = f"{row['stage']}: {cell!r} vs report.json {measured!r}"
            if measured is None:
                assert shown is None, where
            else:
                assert shown is not None and abs(shown - measured) <= 0.5 * 10**-decimals + 1e-9, where


def numbers_in(value):
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers_in(v)]
    if isinstance(value, list):
        return [n for v in value for n in numbers_in(v)]
    return []


def published_row(report):
    """The last PyTorch row with a metric: the model published at the root of the repository."""
    return [row for row in report["rows"] if row["kind"] == "pytorch" and row["metric"] is not None][-1]


def installed_versions():
    versions = {}
    for package in ("hf-slim", "transformers", "torch", "optimum", "onnxruntime"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    return versions


def tiny_vit(seed=0):
    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=8,
        patch_size=2,
        num_channels=1,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        num_labels=10,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return AutoModelForImageClassification.from_config(config).eval()


def tiny_processor():
    return ViTImageProcessor(size={"height": 8, "width": 8}, image_mean=[0.5], image_std=[0.5])


def accuracy(logits, labels):
    return (logits.argmax(-1) == labels).sum().item() / len(labels)


def logits_of(model, pixel_values):
    with torch.no_grad():
        return torch.cat([model(pixel_values=batch).logits for batch in pixel_values.split(32)])


# -- shared runs ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A reduced quickstart run with a dry-run push stage appended (stage-6-push), made with HF_TOKEN set."""
    tmp = tmp_path_factory.mktemp("run")
    raw = apply_overrides(read_recipe_file(QUICKSTART), REDUCED)
    raw["stages"].append({"push": {"repo_id": REPO, "dry_run": True}})
    recipe = tmp / "quickstart-push.yaml"
    recipe.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = tmp / "out"
    with pytest.MonkeyPatch.context() as patch:
        resolved = hermetic(patch, tmp, token=TOKEN)
        with captured() as output:
            code = main(["run", str(recipe), "--output-dir", str(out)])
    return types.SimpleNamespace(
        code=code,
        dir=out,
        output=output,
        resolved=resolved,
        state=read_json(out / "state.json"),
        report=read_json(out / "report.json"),
        recipe=read_json(out / "recipe.json"),
    )


@pytest.fixture(scope="module")
def dry_run(run, tmp_path_factory):
    """`hf-slim push RUN --repo-id me/quick-slim --dry-run --folder DIR`, with HF_TOKEN set."""
    tmp = tmp_path_factory.mktemp("dry-run")
    folder = tmp / "upload"
    with pytest.MonkeyPatch.context() as patch:
        hermetic(patch, tmp, token=TOKEN)
        with captured() as output:
            code = main(["push", str(run.dir), "--repo-id", REPO, "--dry-run", "--folder", str(folder)])
    card_text = (folder / "README.md").read_text() if (folder / "README.md").is_file() else ""
    return types.SimpleNamespace(code=code, folder=folder, output=output, card_text=card_text)


@pytest.fixture(scope="module")
def eval_data(run, dry_run):
    """The run's eval split (the rows its report measured), preprocessed with the uploaded image processor."""
    recipe = load_recipe(run.recipe)
    raw = load_raw(recipe.dataset, seed=recipe.seed)
    processor = AutoImageProcessor.from_pretrained(dry_run.folder)
    data = preprocess(raw, recipe.dataset, recipe.task, processor, num_channels=1)["eval"]
    pixel_values = torch.as_tensor(np.asarray(data["pixel_values"], dtype=np.float32))
    labels = torch.as_tensor(np.asarray(data["labels"]))
    assert pixel_values.shape == (100, 1, 8, 8)
    return pixel_values, labels


# -- the dry run ----------------------------------------------------------------------------------------------------
def test_cli_dry_run_writes_exactly_the_files_it_lists(run, dry_run):
    assert run.code == 0, run.output.err
    assert dry_run.code == 0, dry_run.output.err
    folder = dry_run.folder
    assert files_under(folder) == RUN_FILES
    lines = dry_run.output.out.splitlines()
    assert lines[0] == f"Dry run: would commit {len(RUN_FILES)} files to {REPO} (private=False):"
    assert lines[1:-1] == [f"  {name}  ({os.path.getsize(folder / name):,} bytes)" for name in RUN_FILES]
    assert lines[-1] == f"Upload folder: {folder}"
    # The last PyTorch stage (pruned) at the root, the int8 ONNX stage under onnx/, both byte for byte; no pickles.
    for name in ("model.safetensors", "config.json", "preprocessor_config.json"):
        assert (folder / name).read_bytes() == (run.dir / "stage-3-prune" / name).read_bytes(), name
    for name in RUN_FILES[3:8]:
        source = run.dir / "stage-4-quantize" / name.removeprefix("onnx/")
        assert (folder / name).read_bytes() == source.read_bytes(), name
    assert not [name for name in files_under(folder) if name.endswith((".bin", ".pt", ".pkl", ".pth"))]
    assert_token_absent(dry_run.output.out, dry_run.output.err, dry_run.output.log, folder=folder)


def test_dry_run_without_a_folder_keeps_a_temporary_one(run, private_tmp, capsys):
    code, out, err = cli(["push", str(run.dir), "--repo-id", REPO, "--dry-run", "--private"], capsys)
    assert code == 0, err
    assert f"would commit {len(RUN_FILES)} files to {REPO} (private=True):" in out
    folder = out.strip().splitlines()[-1].removeprefix("Upload folder: ")
    assert os.path.dirname(folder) == str(private_tmp)
    assert files_under(folder) == RUN_FILES


def test_dry_run_needs_no_token_and_sends_nothing(run, tmp_path, monkeypatch, capsys):
    recorder = RecordingHub(monkeypatch)
    manifest = hub.push_to_hub(str(run.dir), REPO, dry_run=True, folder=str(tmp_path / "up"))
    assert recorder.calls == []
    assert manifest["files"] == RUN_FILES == files_under(tmp_path / "up")
    assert "url" not in manifest and "commit" not in manifest
    assert manifest["card"] == (tmp_path / "up" / "README.md").read_text()
    assert capsys.readouterr().out.startswith(f"Dry run: would commit {len(RUN_FILES)} files to {REPO}")


def test_dry_run_into_a_used_folder_is_exactly_the_new_upload(run, tmp_path):
    folder = tmp_path / "up"
    hub.push_to_hub(str(run.dir), REPO, dry_run=True, folder=str(folder))
    try:
        manifest = hub.push_to_hub(str(run.dir / "stage-2-distill"), REPO, dry_run=True, folder=str(folder))
    except HfSlimError as err:  # refusing a non-empty folder is as good
        assert str(folder) in str(err)
        return
    assert files_under(folder) == manifest["files"]


# -- reload: the dry-run folder with the documented loaders -----------------------------------------------------------
def test_dry_run_folder_reloads_with_the_card_loaders_and_predicts_as_the_run(run, dry_run, eval_data):
    pixel_values, labels = eval_data
    rows = {row["stage"]: row for row in run.report["rows"]}
    python, onnx = snippets(dry_run.card_text)
    # The pruned model cannot be rebuilt by the stock loader; the card says so and shows hf_slim.from_pretrained.
    assert f'hf_slim.from_pretrained("{REPO}")' in python and "AutoModelFor" not in python
    with pytest.raises((RuntimeError, ValueError, OSError)):
        AutoModelForImageClassification.from_pretrained(dry_run.folder)
    model = run_snippet(python, REPO, dry_run.folder).eval()
    local = hf_slim.from_pretrained(str(run.dir / "stage-3-prune")).eval()
    logits = logits_of(model, pixel_values)
    torch.testing.assert_close(logits, logits_of(local, pixel_values), rtol=0, atol=0)
    assert accuracy(logits, labels) == pytest.approx(rows["stage-3-prune"]["metric"], abs=1e-9)

    assert ORT_SNIPPET in onnx
    ort = run_snippet(onnx, REPO, dry_run.folder)
    from optimum.onnxruntime import ORTModelForImageClassification

    local_ort = ORTModelForImageClassification.from_pretrained(
        run.dir / "stage-4-quantize", file_name="model_quantized.onnx"
    )
    ort_logits = logits_of(ort, pixel_values)
    torch.testing.assert_close(ort_logits, logits_of(local_ort, pixel_values), rtol=0, atol=0)
    assert accuracy(ort_logits, labels) == pytest.approx(rows["stage-4-quantize"]["metric"], abs=1e-9)


def test_stock_loadable_folder_gets_the_auto_class_and_reloads(run, eval_data, tmp_path):
    source = run.dir / "stage-2-distill"  # distilled, not pruned: transformers loads it
    manifest = hub.push_to_hub(str(source), REPO, dry_run=True, folder=str(tmp_path / "up"))
    assert manifest["files"] == ["README.md", "config.json", "model.safetensors", "preprocessor_config.json"]
    (code,) = snippets(manifest["card"])
    assert f'AutoModelForImageClassification.from_pretrained("{REPO}")' in code
    model = run_snippet(code, REPO, tmp_path / "up").eval()
    assert type(model).__name__ == "ViTForImageClassification"
    expected = AutoModelForImageClassification.from_pretrained(source).eval()
    pixel_values, _ = eval_data
    torch.testing.assert_close(logits_of(model, pixel_values), logits_of(expected, pixel_values), rtol=0, atol=0)
    assert f'hf_slim.from_pretrained("{REPO}")' in manifest["card"]


# -- the model card ---------------------------------------------------------------------------------------------------
def test_card_parses_and_its_metadata_validates(run, dry_run):
    card = ModelCard.load(dry_run.folder / "README.md")
    data = card.data.to_dict()
    assert set(data) <= CARD_KEYS
    assert data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "image-classification" == run.recipe["task"]
    assert data["tags"] == RUN_TAGS
    # Built from a config and trained on a local data set: no base model and no Hub data set to name.
    assert "base_model" not in data and "datasets" not in data
    # model-index parses into one EvalResult for the published (pruned PyTorch) model, measured on the eval split.
    name, results = model_index_to_eval_results(data["model-index"])
    assert name == card.data.model_name == "quick-slim"
    assert results == card.data.eval_results
    (result,) = results
    assert isinstance(result, EvalResult)
    assert result.task_type == "image-classification"
    assert (result.dataset_type, result.dataset_name, result.dataset_split) == ("sklearn-digits",) * 2 + (
        "validation",
    )
    assert result.metric_type == "accuracy"
    assert result.metric_value == pytest.approx(published_row(run.report)["metric"], abs=1e-6)
    assert published_row(run.report)["stage"] == "stage-3-prune"
    # The metadata rebuilds into the same ModelCardData (which checks eval_results against model_name).
    fields = {key: value for key, value in data.items() if key != "model-index"}
    rebuilt = ModelCardData(**fields, model_name=name, eval_results=results)
    assert rebuilt.to_dict() == data


def test_every_number_in_the_card_was_measured(run, dry_run):
    text = dry_run.card_text
    report = run.report
    assert_table_shows_report(text, report)
    front = yaml.safe_load(text.split("---\n")[1])
    assert numbers_in(front) == [pytest.approx(published_row(report)["metric"], abs=1e-6)]
    # Outside the table, the recipe and the versions (checked below), only the measuring machine has digits, and it
    # is the one report.json names.
    body = text.split("---\n", 2)[2]
    meta = report["meta"]
    measured_on = "Measured on: " + ", ".join(str(meta[k]) for k in ("platform", "cpu", "cpu_count")) + "."
    assert measured_on in body
    rest = "\n".join(line for line in body.replace(measured_on, "").splitlines() if not line.startswith("|"))
    rest = rest.replace(section(rest, "## Recipe"), "").replace(section(rest, "## Versions"), "")
    assert not re.findall(r"\d", re.sub(r"\bint8\b", "", rest)), rest


def test_card_body_has_report_recipe_loading_and_versions(run, dry_run):
    text = dry_run.card_text
    assert text.split("---\n", 2)[2].startswith("\n# quick-slim\n")
    table = section(text, "## Compression report")
    assert table.count("\n| stage-") == len(run.report["rows"])
    (recipe_block,) = re.findall(r"```yaml\n(.*?)```", section(text, "## Recipe"), re.S)
    assert yaml.safe_load(recipe_block) == run.recipe
    loading = section(text, "## How to load")
    assert f'model = hf_slim.from_pretrained("{REPO}")' in loading and ORT_SNIPPET in loading
    versions = section(text, "## Versions").strip().splitlines()[2:]
    assert versions == [f"- {name} {version}" for name, version in installed_versions().items()]
    assert {"hf-slim", "transformers", "torch", "optimum", "onnxruntime"} <= set(installed_versions())
    # The versions that measured the report are the ones listed.
    measured = run.report["meta"]["versions"]
    assert measured["transformers"] == installed_versions()["transformers"]
    assert measured["hf_slim"] == installed_versions()["hf-slim"]


# -- the recipe push stage -------------------------------------------------------------------------------------------
def test_recipe_push_stage_dry_run_writes_the_upload_folder(run, dry_run):
    assert run.code == 0, run.output.err
    record = run.state["stages"]["stage-6-push"]
    assert record["kind"] == "push" and record["dry_run"] is True and record["url"] is None
    assert record["repo_id"] == REPO and record["path"] is None
    assert record["files"] == RUN_FILES == files_under(run.dir / "stage-6-push")
    assert f"[hf-slim] stage-6-push: would commit {len(RUN_FILES)} files to {REPO}" in run.output.out
    assert f"Dry run: would commit {len(RUN_FILES)} files to {REPO} (private=False):" in run.output.out
    # The report does not count the push as a model; the upload folder holds the same models as the CLI dry run.
    assert [row["stage"] for row in run.report["rows"]][-1] == "stage-5-evaluate"
    for name in RUN_FILES[1:]:
        assert (run.dir / "stage-6-push" / name).read_bytes() == (dry_run.folder / name).read_bytes(), name
    assert not [name for name in os.listdir(run.dir) if name.startswith(".") and name != ".work"]


def test_recipe_run_never_shows_or_writes_the_token(run):
    assert_token_absent(run.output.out, run.output.err, run.output.log, folder=run.dir)
    assert not [host for host in run.resolved if host not in ("127.0.0.1", "localhost", "::1")]


def test_recipe_push_stage_card_numbers_are_those_of_report_json(run):
    card = (run.dir / "stage-6-push" / "README.md").read_text()
    assert_table_shows_report(card, run.report)


def test_recipe_push_without_token_fails_before_any_work(tmp_path, monkeypatch, capsys):
    recorder = RecordingHub(monkeypatch)
    monkeypatch.setattr(RecipeRunner, "_build_base", lambda *a, **k: pytest.fail("work started"))
    out = tmp_path / "out"
    argv = ["run", QUICKSTART, "--output-dir", str(out)]
    for item in [*REDUCED, f"stages[4]={{push: {{repo_id: {REPO}}}}}"]:
        argv += ["--set", item]
    code, stdout, err = cli(argv, capsys)
    assert code == 2
    assert err.startswith("hf-slim: error: ") and "Traceback" not in err
    assert "stages[4].push: no Hugging Face token" in err and "dry_run: true" in err and "HF_TOKEN" in err
    assert stdout == ""
    assert not out.exists()
    assert recorder.calls == []


# A recipe that runs in a few seconds: the base model evaluated, then pushed.
PUSH_RECIPE = ["stages=[evaluate, {push: {repo_id: my-org/quick-slim, private: true}}]", *REDUCED[3:]]
BASE_FILES = ["README.md", "config.json", "model.safetensors", "preprocessor_config.json"]


def test_recipe_push_stage_uploads_in_one_commit_once(tmp_path, monkeypatch, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    recorder = RecordingHub(monkeypatch)
    out = tmp_path / "out"
    argv = ["run", QUICKSTART, "--output-dir", str(out)]
    for item in PUSH_RECIPE:
        argv += ["--set", item]
    code, stdout, err = cli(argv, capsys)
    assert code == 0, err
    assert recorder.names() == ["whoami", "create_repo", "create_commit"]
    assert {call[1] for call in recorder.calls} == {TOKEN}
    assert recorder.calls[1][2:] == ("my-org/quick-slim", {"private": True, "exist_ok": True})
    (commit,) = recorder.commits
    assert sorted(commit["files"]) == BASE_FILES
    # What was committed is the stage folder, which is the base model plus the card.
    assert commit["files"] == contents(out / "stage-2-push")
    assert commit["files"]["model.safetensors"] == (out / "stage-0-base" / "model.safetensors").read_bytes()
    card = ModelCard(commit["files"]["README.md"].decode())
    assert card.data.tags == ["hf-slim"]
    (result,) = card.data.eval_results
    rows = {row["stage"]: row for row in read_json(out / "report.json")["rows"]}
    assert result.metric_value == pytest.approx(rows["stage-1-evaluate"]["metric"], abs=1e-6)
    record = read_json(out / "state.json")["stages"]["stage-2-push"]
    assert record["url"] == "https://hub.invalid/my-org/quick-slim" and record["dry_run"] is False
    assert record["files"] == BASE_FILES
    assert f"[hf-slim] stage-2-push: committed {len(BASE_FILES)} files to my-org/quick-slim" in stdout
    assert_token_absent(stdout, err, caplog.text, folder=out)

    # The finished run is not pushed again.
    code, _, err = cli(argv, capsys)
    assert code == 0, err
    assert recorder.names() == ["whoami", "create_repo", "create_commit"]


# -- upload against the recorded HfApi -------------------------------------------------------------------------------
@pytest.mark.parametrize("namespace", ["me", "my-org"])
def test_upload_is_one_commit_of_the_dry_run_folder(namespace, run, dry_run, private_tmp, monkeypatch, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    recorder = RecordingHub(monkeypatch)
    repo_id = f"{namespace}/quick-slim"
    manifest = hub.push_to_hub(str(run.dir), repo_id, token=TOKEN, commit_message="slim")
    assert recorder.names() == ["whoami", "create_repo", "create_commit"]
    assert {call[1] for call in recorder.calls} == {TOKEN}
    assert recorder.calls[1][2:] == (repo_id, {"private": False, "exist_ok": True})
    (commit,) = recorder.commits
    assert commit["repo_id"] == repo_id and commit["message"] == "slim"
    assert sorted(commit["files"]) == RUN_FILES == manifest["files"]
    expected = contents(dry_run.folder)
    if namespace != "me":  # the card names the repository
        expected["README.md"] = expected["README.md"].replace(f'"{REPO}"'.encode(), f'"{repo_id}"'.encode())
    assert commit["files"] == expected
    assert manifest["url"] == f"https://hub.invalid/{repo_id}" and manifest["commit"] == "0123456789abcdef"
    assert os.listdir(private_tmp) == []  # the temporary upload folder is gone
    out, err = capsys.readouterr()
    assert out == f"Pushed {len(RUN_FILES)} files to {repo_id}\n"
    assert_token_absent(out, err, caplog.text, manifest["card"])


def test_cli_push_uses_hf_token_and_creates_a_private_repo(run, private_tmp, monkeypatch, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    recorder = RecordingHub(monkeypatch)
    code, out, err = cli(["push", str(run.dir), "--repo-id", REPO, "--private"], capsys)
    assert code == 0, err
    assert recorder.names() == ["whoami", "create_repo", "create_commit"]
    assert recorder.calls[1] == ("create_repo", TOKEN, REPO, {"private": True, "exist_ok": True})
    assert sorted(recorder.commits[0]["files"]) == RUN_FILES
    assert out == f"Pushed {len(RUN_FILES)} files to {REPO}\n"
    assert os.listdir(private_tmp) == []
    assert_token_absent(out, err, caplog.text)


@pytest.mark.parametrize(
    "argument, env, cached, expected",
    [
        ("hf_argument", "hf_env", "hf_cached", "hf_argument"),
        (None, "hf_env", "hf_cached", "hf_env"),
        (None, None, "hf_cached", "hf_cached"),
        (None, None, None, None),
    ],
    ids=["argument", "hf-token", "cached-login", "none"],
)
def test_token_comes_from_the_argument_then_hf_token_then_the_cached_login(
    argument, env, cached, expected, private_tmp, tmp_path, monkeypatch
):
    if env:
        monkeypatch.setenv("HF_TOKEN", env)
    if cached:
        path = tmp_path / "token"
        path.write_text(cached + "\n")
        monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(path))
    assert hub.resolve_token(argument) == expected
    if expected:
        recorder = RecordingHub(monkeypatch)
        hub.push_to_hub(build_model("bert", num_layers=1), REPO, token=argument, folder=str(tmp_path / "up"))
        assert {call[1] for call in recorder.calls} == {expected}


# -- refusals before any upload work ----------------------------------------------------------------------------------
REFUSALS = [
    ("no-token", None, WHOAMI, REPO, ["No Hugging Face token", "HF_TOKEN", "huggingface-cli login"]),
    (
        "read-only-token",
        TOKEN,
        {**WHOAMI, "auth": {"type": "access_token", "accessToken": {"role": "read"}}},
        REPO,
        ["read-only", "write access"],
    ),
    ("foreign-namespace", TOKEN, WHOAMI, "someone-else/quick-slim", ["'me'", "'someone-else'", "['me', 'my-org']"]),
    (
        "invalid-token",
        TOKEN,
        OSError(f"401 Client Error: Unauthorized, token {TOKEN} is invalid"),
        REPO,
        ["Could not authenticate", "***"],
    ),
]


@pytest.mark.parametrize("how", ["api", "cli"])
@pytest.mark.parametrize("token, whoami, repo_id, fragments", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refused_before_any_upload_work(
    how, token, whoami, repo_id, fragments, run, private_tmp, tmp_path, monkeypatch, capsys, caplog
):
    caplog.set_level(logging.DEBUG)
    recorder = RecordingHub(monkeypatch, whoami=whoami)
    prepared = []
    monkeypatch.setattr(hub, "prepare_upload", lambda *a, **k: prepared.append(a) or pytest.fail("upload work"))
    folder = tmp_path / "up"
    if how == "api":
        with pytest.raises(HfSlimError) as info:
            hub.push_to_hub(str(run.dir), repo_id, token=token, folder=str(folder))
        message = str(info.value)
        out, err = capsys.readouterr()
    else:
        if token:
            monkeypatch.setenv("HF_TOKEN", token)
        code, out, err = cli(["push", str(run.dir), "--repo-id", repo_id, "--folder", str(folder)], capsys)
        assert code == 2 and "Traceback" not in err
        assert err.startswith("hf-slim: error: ")
        message = err
    for fragment in fragments:
        assert fragment in message, message
    assert "create_repo" not in recorder.names() and "create_commit" not in recorder.names()
    assert recorder.names() == ([] if token is None else ["whoami"])
    assert prepared == [] and not folder.exists() and os.listdir(private_tmp) == []
    assert_token_absent(message, out, err, caplog.text)


def test_upload_error_is_reported_without_the_token(run, private_tmp, monkeypatch, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    recorder = RecordingHub(monkeypatch, commit_error=RuntimeError(f"403 Forbidden for Bearer {TOKEN}"))
    with pytest.raises(HfSlimError, match=r"Upload to me/quick-slim failed: 403 Forbidden for Bearer \*\*\*") as info:
        hub.push_to_hub(str(run.dir), REPO, token=TOKEN)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert len(recorder.commits) == 1
    assert os.listdir(private_tmp) == []
    out, err = capsys.readouterr()
    assert_token_absent(str(info.value), out, err, caplog.text)


@pytest.mark.parametrize("dry_run_", [True, False], ids=["dry-run", "upload"])
@pytest.mark.parametrize("repo_id", ["quick-slim", "me/x/y", "", "me/", "/x", "me/x y", "-me/x", None, 123])
def test_invalid_repo_id_is_refused_first(repo_id, dry_run_, run, tmp_path, monkeypatch):
    recorder = RecordingHub(monkeypatch)
    folder = tmp_path / "up"
    with pytest.raises(HfSlimError, match="is not a Hub repository id; use 'namespace/name'"):
        hub.push_to_hub(str(run.dir), repo_id, token=TOKEN, dry_run=dry_run_, folder=str(folder))
    assert recorder.calls == [] and not folder.exists()


@pytest.mark.parametrize(
    "repo_id", ["me/quick--slim", "me/quick..slim", "me/quick-", "me/quick.git", "me/" + "q" * 97]
)
def test_repo_id_the_hub_rejects_is_refused_first(repo_id, run, tmp_path):
    folder = tmp_path / "up"
    with pytest.raises(HfSlimError, match=re.escape(repr(repo_id))):
        hub.push_to_hub(str(run.dir), repo_id, dry_run=True, folder=str(folder))
    assert not folder.exists()


# -- sources: a model in memory, a saved folder, an ONNX folder ------------------------------------------------------
def test_model_in_memory_with_its_processor(private_tmp, tmp_path):
    model, processor = tiny_vit(), tiny_processor()
    manifest = hub.prepare_upload(model, str(tmp_path / "up"), REPO, processor=processor, base_model="me/vit-base")
    assert manifest["files"] == files_under(tmp_path / "up") == BASE_FILES
    card = ModelCard.load(tmp_path / "up" / "README.md")
    assert card.data.tags == ["hf-slim"] and card.data.base_model == "me/vit-base"
    assert card.data.pipeline_tag == "image-classification" and card.data.eval_results is None
    assert "No compression report was found, so this card reports no metrics." in manifest["card"]
    assert "## Compression report" not in manifest["card"] and "model-index" not in manifest["card"]
    (code,) = snippets(manifest["card"])
    reloaded = run_snippet(code, REPO, tmp_path / "up").eval()
    pixel_values = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(logits_of(reloaded, pixel_values), logits_of(model, pixel_values), rtol=0, atol=0)
    assert AutoImageProcessor.from_pretrained(tmp_path / "up").to_dict() == processor.to_dict()


def test_pruned_model_in_memory_needs_hf_slim_in_the_card(run, private_tmp, tmp_path):
    model = hf_slim.from_pretrained(str(run.dir / "stage-3-prune")).eval()
    manifest = hub.prepare_upload(model, str(tmp_path / "up"), REPO)
    assert manifest["files"] == ["README.md", "config.json", "model.safetensors"]
    assert ModelCard.load(tmp_path / "up" / "README.md").data.tags == ["hf-slim", "pruned"]
    (code,) = snippets(manifest["card"])
    assert "AutoModelFor" not in code
    reloaded = run_snippet(code, REPO, tmp_path / "up").eval()
    pixel_values = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(logits_of(reloaded, pixel_values), logits_of(model, pixel_values), rtol=0, atol=0)


@pytest.mark.parametrize("dry_run_", [True, False], ids=["dry-run", "upload"])
def test_model_in_memory_leaves_no_temporary_copy(dry_run_, private_tmp, tmp_path, monkeypatch):
    RecordingHub(monkeypatch)
    hub.push_to_hub(tiny_vit(), REPO, token=TOKEN, dry_run=dry_run_, folder=str(tmp_path / "up"))
    assert os.listdir(private_tmp) == []


def test_saved_folder_with_an_onnx_subfolder(run, eval_data, tmp_path):
    source = tmp_path / "model"
    shutil.copytree(run.dir / "stage-3-prune", source)
    shutil.copytree(run.dir / "stage-4-quantize", source / "onnx")
    torch.save({"lr": 1}, source / "training_args.bin")  # pickles are never published
    (source / "pytorch_model.bin").write_bytes(b"pickle")
    manifest = hub.push_to_hub(str(source), REPO, dry_run=True, folder=str(tmp_path / "up"))
    assert manifest["files"] == files_under(tmp_path / "up") == RUN_FILES
    card = ModelCard.load(tmp_path / "up" / "README.md")
    # The structure record of the config says pruned; the folder holds the int8 model; no report, no metrics.
    assert card.data.tags == ["hf-slim", "pruned", "onnx", "int8"]
    assert card.data.eval_results is None
    python, onnx = snippets(manifest["card"])
    assert ORT_SNIPPET in onnx
    pixel_values, _ = eval_data
    expected = logits_of(hf_slim.from_pretrained(str(source)).eval(), pixel_values)
    torch.testing.assert_close(logits_of(run_snippet(python, REPO, tmp_path / "up"), pixel_values), expected)
    from optimum.onnxruntime import ORTModelForImageClassification

    local = ORTModelForImageClassification.from_pretrained(source / "onnx", file_name="model_quantized.onnx")
    ort = run_snippet(onnx, REPO, tmp_path / "up")
    torch.testing.assert_close(logits_of(ort, pixel_values), logits_of(local, pixel_values), rtol=0, atol=0)


def test_onnx_only_folder_is_published_at_the_root(run, eval_data, tmp_path):
    source = run.dir / "stage-4-quantize"
    manifest = hub.push_to_hub(str(source), REPO, dry_run=True, folder=str(tmp_path / "up"))
    expected = ["README.md", *sorted(os.listdir(source))]
    assert manifest["files"] == files_under(tmp_path / "up") == sorted(expected)
    assert ModelCard.load(tmp_path / "up" / "README.md").data.tags == ["hf-slim", "pruned", "onnx", "int8"]
    (code,) = snippets(manifest["card"])
    assert f'ORTModelForImageClassification.from_pretrained("{REPO}", file_name="model_quantized.onnx")' in code
    from optimum.onnxruntime import ORTModelForImageClassification

    pixel_values, _ = eval_data
    local = ORTModelForImageClassification.from_pretrained(source, file_name="model_quantized.onnx")
    torch.testing.assert_close(
        logits_of(run_snippet(code, REPO, tmp_path / "up"), pixel_values), logits_of(local, pixel_values)
    )


@pytest.mark.parametrize(
    "files, fragment",
    [
        ({"config.json": "{}", "pytorch_model.bin": "pickle"}, "holds no safetensors model and no ONNX model"),
        ({"notes.txt": "mine"}, "holds no safetensors model and no ONNX model"),
        (None, "is neither a model, a model folder nor an hf-slim run folder"),
    ],
    ids=["pickle-only", "no-model", "missing"],
)
def test_source_without_a_publishable_model_is_refused(files, fragment, tmp_path, monkeypatch, capsys):
    recorder = RecordingHub(monkeypatch)
    source = tmp_path / "model"
    if files is not None:
        source.mkdir()
        for name, text in files.items():
            (source / name).write_text(text)
    with pytest.raises(HfSlimError, match=fragment):
        hub.push_to_hub(str(source), REPO, dry_run=True, folder=str(tmp_path / "up"))
    assert not (tmp_path / "up").exists()
    code, _, err = cli(["push", str(source), "--repo-id", REPO, "--dry-run", "--folder", str(tmp_path / "up")], capsys)
    assert code == 2 and fragment in err and "Traceback" not in err
    assert recorder.calls == [] and not (tmp_path / "up").exists()


# -- the trainers' own push_to_hub ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "trainer_name, alpha_kd, tags",
    [
        ("DistillationTrainer", 0.5, {"hf-slim", "distillation"}),
        ("DistillationTrainer", 0.0, {"hf-slim"}),
        ("PruningTrainer", 0.5, {"hf-slim", "distillation", "pruned"}),
        ("PruningTrainer", 0.0, {"hf-slim", "pruned"}),
    ],
    ids=["distill", "finetune", "prune-with-kd", "prune"],
)
def test_trainers_tag_the_model_and_their_push_to_hub_card(trainer_name, alpha_kd, tags, tmp_path, monkeypatch):
    import transformers.trainer

    from hf_slim.distill import DistillationConfig, DistillationTrainer
    from hf_slim.prune import PruningConfig, PruningTrainer

    calls = []

    def create_repo(repo_id, token=None, private=None, exist_ok=False, **kwargs):
        calls.append(("create_repo", repo_id, token))
        return types.SimpleNamespace(repo_id=repo_id)

    def upload_folder(*, repo_id, folder_path, token=None, **kwargs):
        calls.append(("upload_folder", repo_id, token, files_under(folder_path)))
        return "https://hub.invalid/commit"

    monkeypatch.setattr(transformers.trainer, "create_repo", create_repo)
    monkeypatch.setattr(transformers.trainer, "upload_folder", upload_folder)
    common = dict(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        max_steps=2,
        per_device_train_batch_size=4,
        hub_model_id=REPO,
        alpha_kd=alpha_kd,
        seed=0,
    )
    teacher = build_model("bert", num_layers=2, seed=1) if alpha_kd else None
    if trainer_name == "PruningTrainer":
        args = PruningConfig(**common, target_heads=0.5, pruning_end_step=1, pruning_frequency=1)
        cls = PruningTrainer
    else:
        args, cls = DistillationConfig(**common), DistillationTrainer
    trainer = cls(model=build_model("bert", num_layers=2), args=args, teacher_model=teacher,
                  train_dataset=make_dataset("bert"))  # fmt: skip
    assert set(trainer.model.model_tags) == tags
    trainer.train()
    trainer.push_to_hub(token=TOKEN)
    assert [call[:3] for call in calls] == [("create_repo", REPO, TOKEN), ("upload_folder", REPO, TOKEN)]
    assert "README.md" in calls[1][3]
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert tags <= set(card.data.tags)
    assert ("distillation" in card.data.tags) == ("distillation" in tags)
    assert_token_absent(folder=tmp_path / "out")


def test_card_of_a_distilled_model_in_memory_is_tagged_distillation(private_tmp, tmp_path):
    from hf_slim.distill import DistillationConfig, DistillationTrainer

    args = DistillationConfig(output_dir=str(tmp_path / "out"), use_cpu=True, report_to=[], alpha_kd=0.5)
    trainer = DistillationTrainer(
        model=build_model("bert", num_layers=1), args=args, teacher_model=build_model("bert", num_layers=2)
    )
    assert "distillation" in trainer.model.model_tags
    hub.prepare_upload(trainer.model, str(tmp_path / "up"), REPO)
    assert "distillation" in ModelCard.load(tmp_path / "up" / "README.md").data.tags


# -- upload at the HTTP boundary: a local stand-in of the Hub at HF_ENDPOINT ------------------------------------------
class _StandInHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def log_message(self, *args):
        pass

    def _handle(self, method):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = urlsplit(self.path).path
        hub_ = self.server
        headers = {key.lower(): value for key, value in self.headers.items()}
        hub_.requests.append(types.SimpleNamespace(method=method, path=path, headers=headers, body=body))
        status, payload = hub_.respond(method, path, self.headers.get("Authorization"), body)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class StandInHub(ThreadingHTTPServer):
    """The few Hub endpoints an upload uses: whoami-v2, repos/create, preupload (every file 'regular'),
    validate-yaml (the card's metadata checked offline) and commit (ndjson); it records every request."""

    daemon_threads = True
    OID = "feedc0de" * 5

    def __init__(self, commit_status=200):
        super().__init__(("127.0.0.1", 0), _StandInHandler)
        self.requests = []
        self.commit_status = commit_status
        self.validated = []

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def respond(self, method, path, authorization, body):
        if authorization != f"Bearer {TOKEN}":
            return 401, {"error": "Invalid credentials in Authorization header"}
        if (method, path) == ("GET", "/api/whoami-v2"):
            return 200, WHOAMI
        if (method, path) == ("POST", "/api/repos/create"):
            data = json.loads(body)
            return 200, {"url": f"{self.endpoint}/{data['organization']}/{data['name']}"}
        if (method, path) == ("POST", "/api/validate-yaml"):
            return self._validate(json.loads(body)["content"])
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit)/main", path)
        if method == "POST" and match and match[2] == "preupload":
            files = json.loads(body)["files"]
            return 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
        if method == "POST" and match:
            if self.commit_status != 200:  # an error that echoes the credentials it was sent
                return self.commit_status, {"error": f"commit refused for {authorization}"}
            return 200, {"commitUrl": f"{self.endpoint}/{match[1]}/commit/{self.OID}", "commitOid": self.OID}
        return 404, {"error": f"stand-in: no route {method} {path}"}

    def _validate(self, content):
        try:
            card = ModelCard(content)
            data = card.data.to_dict()
            assert set(data) <= CARD_KEYS, sorted(data)
            assert all(isinstance(tag, str) for tag in data.get("tags", []))
            if "model-index" in data:
                name, results = model_index_to_eval_results(data["model-index"])
                assert name and results
        except Exception as err:  # noqa: BLE001 - reported to the client as the Hub does
            return 400, {"errors": [{"message": repr(err)}]}
        self.validated.append(content)
        return 200, {"errors": [], "warnings": []}

    def commits(self):
        """The files of every commit request: {path_in_repo: bytes}, and the commit header."""
        result = []
        for request in self.requests:
            if request.path.endswith("/commit/main"):
                items = [json.loads(line) for line in request.body.splitlines() if line.strip()]
                files = {i["value"]["path"]: base64.b64decode(i["value"]["content"]) for i in items[1:]}
                assert {i["key"] for i in items[1:]} == {"file"}
                result.append((items[0], files))
        return result


@pytest.fixture
def stand_in():
    """The stand-in serving on 127.0.0.1 in a thread, with huggingface_hub pointed at it (and online) meanwhile."""
    server = StandInHub()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("HF_ENDPOINT", server.endpoint)
            patch.setenv("NO_PROXY", "127.0.0.1,localhost")
            for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
                patch.delenv(name, raising=False)
            patch.setattr(huggingface_hub.constants, "ENDPOINT", server.endpoint)
            patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
            huggingface_hub.utils.reset_sessions()
            yield server
    finally:
        huggingface_hub.utils.reset_sessions()  # back to offline sessions
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_upload_through_the_http_boundary_is_one_commit(run, dry_run, stand_in, private_tmp, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    manifest = hub.push_to_hub(str(run.dir), REPO, token=TOKEN)
    routes = [(r.method, r.path) for r in stand_in.requests]
    assert routes == [
        ("GET", "/api/whoami-v2"),
        ("POST", "/api/repos/create"),
        ("POST", "/api/validate-yaml"),
        ("POST", f"/api/models/{REPO}/preupload/main"),
        ("POST", f"/api/models/{REPO}/commit/main"),
    ]
    create = json.loads(stand_in.requests[1].body)
    assert (create["organization"], create["name"], create["private"]) == ("me", "quick-slim", False)
    (header, files), = stand_in.commits()  # fmt: skip
    assert header["value"]["summary"] == "Upload model compressed with hf_slim"
    assert sorted(files) == RUN_FILES == manifest["files"]
    assert files == contents(dry_run.folder)
    assert stand_in.validated == [files["README.md"].decode()]
    assert manifest["url"] == f"{stand_in.endpoint}/{REPO}" and manifest["commit"] == StandInHub.OID
    # The token went in the Authorization header of each request, and nowhere else.
    for request in stand_in.requests:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert TOKEN.encode() not in request.body and TOKEN not in request.path
        assert [key for key, value in request.headers.items() if TOKEN in value] == ["authorization"]
    assert os.listdir(private_tmp) == []
    out, err = capsys.readouterr()
    assert out == f"Pushed {len(RUN_FILES)} files to {REPO}\n"
    assert_token_absent(out, err, caplog.text)


def test_http_error_of_the_commit_is_reported_without_the_token(
    run, stand_in, private_tmp, monkeypatch, capsys, caplog
):
    caplog.set_level(logging.DEBUG)
    stand_in.commit_status = 500
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    code, out, err = cli(["push", str(run.dir), "--repo-id", REPO], capsys)
    assert code == 2
    assert err.startswith(f"hf-slim: error: Upload to {REPO} failed: ") and "commit refused for Bearer ***" in err
    assert [r.path for r in stand_in.requests].count(f"/api/models/{REPO}/commit/main") == 1
    assert os.listdir(private_tmp) == []
    assert_token_absent(out, err, caplog.text)
