"""Publish compressed models to the Hugging Face Hub with a model card that reports only measured numbers."""

from __future__ import annotations

import glob
import importlib.metadata as metadata
import json
import os
import re
import shutil
import tempfile

from torch import nn

from .errors import HfSlimError
from .export.onnx import PREPROCESSOR_FILES

SAFE_MODEL_FILES = ("config.json", "generation_config.json")
ONNX_FILES = ("config.json", "ort_config.json", "quantization_report.json", *PREPROCESSOR_FILES)
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
ORT_CLASSES = {
    "text-classification": ("AutoModelForSequenceClassification", "ORTModelForSequenceClassification"),
    "image-classification": ("AutoModelForImageClassification", "ORTModelForImageClassification"),
    "audio-classification": ("AutoModelForAudioClassification", "ORTModelForAudioClassification"),
}
LOCAL_DATASETS = ("csv", "json", "parquet", "imagefolder", "audiofolder", "sklearn-digits", "text", "arrow")


def resolve_token(token: str | None = None) -> str | None:
    """The token to use: the argument, else `HF_TOKEN`, else the cached login. Never printed or logged."""
    if token:
        return token
    if os.environ.get("HF_TOKEN"):
        return os.environ["HF_TOKEN"]
    from huggingface_hub import get_token

    return get_token()


def _redact(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


# -- what to upload -----------------------------------------------------------------------------------------------
def _latest_stages(run_dir: str) -> tuple[str | None, str | None, dict | None, dict | None]:
    """The last PyTorch and the last int8 ONNX stage folders of an `hf-slim run` output, its report and recipe."""
    with open(os.path.join(run_dir, "state.json")) as f:
        state = json.load(f)
    pytorch = onnx = None
    for record in state["stages"].values():
        if record.get("path") and record["kind"] == "pytorch":
            pytorch = os.path.join(run_dir, record["path"])
        elif record.get("path") and record["kind"].startswith("onnx"):
            onnx = os.path.join(run_dir, record["path"])
    report = recipe = None
    if os.path.isfile(os.path.join(run_dir, "report.json")):
        with open(os.path.join(run_dir, "report.json")) as f:
            report = json.load(f)
    if os.path.isfile(os.path.join(run_dir, "recipe.json")):
        with open(os.path.join(run_dir, "recipe.json")) as f:
            recipe = json.load(f)
    return pytorch, onnx, report, recipe


def _copy(source: str, destination: str, names) -> list[str]:
    copied = []
    os.makedirs(destination, exist_ok=True)
    for name in names:
        path = os.path.join(source, name)
        if os.path.isfile(path):
            shutil.copy2(path, destination)
            copied.append(name)
    return copied


def prepare_upload(
    source: str | nn.Module,
    folder: str,
    repo_id: str,
    processor=None,
    base_model: str | None = None,
    datasets: list[str] | None = None,
) -> dict:
    """Write the exact folder that [`push_to_hub`] uploads; returns a manifest `{files, card}`.

    `source` is an `hf-slim run` output folder (its last PyTorch stage, its int8 ONNX stage under `onnx/`, its report
    and recipe), a saved model folder (with an `onnx/` subfolder if present), or a model in memory. Only
    safetensors weights and JSON/text files are copied (no pickles such as `training_args.bin`).
    """
    if os.path.isdir(folder) and os.listdir(folder):
        raise HfSlimError(f"The upload folder {folder} is not empty; give an empty or new folder.")
    if isinstance(source, nn.Module):
        with tempfile.TemporaryDirectory() as model_dir:
            source.save_pretrained(model_dir, safe_serialization=True)
            if processor is not None:
                processor.save_pretrained(model_dir)
            tags = list(getattr(source, "model_tags", None) or [])
            return _prepare(model_dir, None, None, None, folder, repo_id, base_model, datasets, tags)
    if os.path.isfile(os.path.join(str(source), "state.json")):
        pytorch, onnx, report, recipe = _latest_stages(str(source))
    elif os.path.isdir(str(source)):
        source = str(source)
        has_weights = bool(glob.glob(os.path.join(source, "*.safetensors")))
        has_onnx = bool(glob.glob(os.path.join(source, "*.onnx")))
        pytorch = source if has_weights else None
        onnx = source if has_onnx and not has_weights else None
        if os.path.isdir(os.path.join(source, "onnx")):
            onnx = os.path.join(source, "onnx")
        report = recipe = None
    else:
        raise HfSlimError(f"push_to_hub: {source!r} is neither a model, a model folder nor an hf-slim run folder.")
    return _prepare(pytorch, onnx, report, recipe, folder, repo_id, base_model, datasets, [], source)


def _prepare(pytorch, onnx, report, recipe, folder, repo_id, base_model, datasets, tags, source=None) -> dict:
    if pytorch is None and onnx is None:
        raise HfSlimError(f"push_to_hub: {source} holds no safetensors model and no ONNX model to publish.")
    if pytorch is not None and not glob.glob(os.path.join(pytorch, "*.safetensors")):
        raise HfSlimError(f"push_to_hub: {pytorch} has no safetensors weights; hf_slim publishes safetensors only.")

    os.makedirs(folder, exist_ok=True)
    files = []
    config = {}
    if pytorch is not None:
        weights = [os.path.basename(p) for p in glob.glob(os.path.join(pytorch, "*.safetensors"))]
        index = [os.path.basename(p) for p in glob.glob(os.path.join(pytorch, "*.safetensors.index.json"))]
        files += _copy(pytorch, folder, [*weights, *index, *SAFE_MODEL_FILES, *PREPROCESSOR_FILES])
        with open(os.path.join(pytorch, "config.json")) as f:
            config = json.load(f)
    onnx_file = None
    if onnx is not None:
        onnx_names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(onnx, "*.onnx")))
        target = os.path.join(folder, "onnx") if pytorch is not None else folder
        prefix = "onnx/" if pytorch is not None else ""
        files += [prefix + n for n in _copy(onnx, target, [*onnx_names, *ONNX_FILES])]
        onnx_file = next((n for n in onnx_names if "quantized" in n), onnx_names[0] if onnx_names else None)
        if not config:
            with open(os.path.join(onnx, "config.json")) as f:
                config = json.load(f)
    card = build_model_card(
        repo_id, config, report=report, recipe=recipe, has_pytorch=pytorch is not None, onnx_file=onnx_file,
        onnx_in_subfolder=pytorch is not None, base_model=base_model, datasets=datasets, extra_tags=tags,
    )  # fmt: skip
    card.save(os.path.join(folder, "README.md"))
    files.append("README.md")
    return {"folder": folder, "files": sorted(files), "card": str(card)}


# -- the model card ------------------------------------------------------------------------------------------------
def _versions() -> dict[str, str]:
    versions = {}
    for package in ("hf-slim", "transformers", "torch", "optimum", "onnxruntime"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _task_of_config(config: dict) -> str | None:
    from .modeling import TASK_AUTO_CLASSES

    name = (config.get("architectures") or [None])[0]
    for task, (_, mapping) in TASK_AUTO_CLASSES.items():
        for value in mapping.values():
            if name in ((value,) if isinstance(value, str) else tuple(value)):
                return task
    return None


def build_model_card(
    repo_id: str,
    config: dict,
    report: dict | None = None,
    recipe: dict | None = None,
    has_pytorch: bool = True,
    onnx_file: str | None = None,
    onnx_in_subfolder: bool = True,
    base_model: str | None = None,
    datasets: list[str] | None = None,
    extra_tags: list[str] | None = None,
):
    """A `huggingface_hub.ModelCard` whose numbers all come from `report` (measured by hf_slim), none invented."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    task = (recipe or {}).get("task") or _task_of_config(config)
    record = config.get("hf_slim") or {}
    history_ops = {entry.get("op") for entry in record.get("history", [])}
    stage_kinds = [next(iter(s)) if isinstance(s, dict) else s for s in (recipe or {}).get("stages", [])]
    tags = ["hf-slim"]
    if "distill" in stage_kinds:
        tags.append("distillation")
    if "prune" in stage_kinds or history_ops & {"prune_heads", "prune_ffn", "drop_layers", "prune_to_target"}:
        tags.append("pruned")
    for tag in extra_tags or []:  # e.g. the model_tags DistillationTrainer / PruningTrainer set
        if tag not in tags:
            tags.append(tag)
    if onnx_file:
        tags.append("onnx")
        if "quantized" in onnx_file:
            tags.append("int8")
    model = (recipe or {}).get("model")
    if base_model is None and isinstance(model, str) and not os.path.exists(model):
        base_model = model
    dataset_spec = (recipe or {}).get("dataset") or {}
    if datasets is None and dataset_spec.get("name") and dataset_spec["name"] not in LOCAL_DATASETS:
        datasets = [dataset_spec["name"]]

    rows = (report or {}).get("rows", [])
    published = None
    for row in rows:  # the row of the model published as PyTorch (or the ONNX one when only ONNX is published)
        if (row["kind"] == "pytorch") == has_pytorch and row.get("metric") is not None:
            published = row
    eval_results = None
    if published is not None and task:
        dataset_name = (datasets or [dataset_spec.get("name") or "custom"])[0]
        split = "test" if "test" in (published.get("notes") or "") else "validation"
        eval_results = [
            EvalResult(
                task_type=task,
                dataset_type=dataset_name,
                dataset_name=dataset_name,
                dataset_config=dataset_spec.get("config"),
                dataset_split=split,
                metric_type=published["metric_name"],
                metric_value=round(float(published["metric"]), 6),
            )
        ]
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag=task,
        tags=tags,
        base_model=base_model,
        datasets=datasets,
        model_name=repo_id.split("/")[-1],
        eval_results=eval_results,
    )
    body = [f"# {repo_id.split('/')[-1]}", ""]
    body.append(
        "Compressed with [hf_slim](https://github.com/hf-slim/hf-slim)"
        + (f" from `{base_model}`" if base_model else "")
        + ". Every number below was measured by hf_slim on the run that produced this model."
    )
    if report:
        from .recipes.report import format_markdown_table

        body += ["", "## Compression report", "", format_markdown_table(report), ""]
        meta = report.get("meta") or {}
        hardware = ", ".join(str(meta[k]) for k in ("platform", "cpu", "cpu_count") if meta.get(k))
        if hardware:
            body.append(f"Measured on: {hardware}. Latency is the median after warm-up; ratios are to the first row.")
    else:
        body += ["", "No compression report was found, so this card reports no metrics."]
    body += ["", "## How to load", ""]
    if has_pytorch:
        auto = ORT_CLASSES.get(task, ("AutoModelForSequenceClassification",))[0]
        if record and not record.get("stock_loadable", True):
            body += [
                "This model's structure (per-layer heads / FFN widths) needs hf_slim to load:",
                "",
                "```python",
                "import hf_slim",
                "",
                f'model = hf_slim.from_pretrained("{repo_id}")',
                "```",
            ]
        else:
            body += [
                "```python",
                f"from transformers import {auto}",
                "",
                f'model = {auto}.from_pretrained("{repo_id}")',
                "```",
                "",
                f'`hf_slim.from_pretrained("{repo_id}")` loads it too.',
            ]
    if onnx_file:
        ort = ORT_CLASSES.get(task, (None, "ORTModelForSequenceClassification"))[1]
        subfolder = ', subfolder="onnx"' if onnx_in_subfolder else ""
        body += [
            "",
            "ONNX Runtime" + (" (int8)" if "quantized" in onnx_file else "") + ":",
            "",
            "```python",
            f"from optimum.onnxruntime import {ort}",
            "",
            f'model = {ort}.from_pretrained("{repo_id}"{subfolder}, file_name="{onnx_file}")',
            "```",
        ]
    if recipe:
        import yaml

        body += ["", "## Recipe", "", "```yaml", yaml.safe_dump(recipe, sort_keys=False).rstrip(), "```"]
    body += ["", "## Versions", ""]
    body += [f"- {name} {version}" for name, version in _versions().items()]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n")


# -- upload --------------------------------------------------------------------------------------------------------
def push_to_hub(
    source: str | nn.Module,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    dry_run: bool = False,
    folder: str | None = None,
    commit_message: str = "Upload model compressed with hf_slim",
    processor=None,
    base_model: str | None = None,
    datasets: list[str] | None = None,
) -> dict:
    """Publish a compressed model (PyTorch safetensors + config + preprocessor, and the int8 ONNX model under
    `onnx/` when there is one) with a generated model card, in one commit.

    Args:
        source: An `hf-slim run` output folder, a saved model folder, or a model in memory.
        repo_id (`str`): `namespace/name` on the Hub.
        private (`bool`, defaults to `False`): Create the repository private.
        token (`str`, *optional*): Defaults to `HF_TOKEN`, then the cached login. It is never printed, logged or
            written to the card.
        dry_run (`bool`, defaults to `False`): Only write the folder that would be uploaded (to `folder`) and list
            what would be committed; nothing is sent.
        folder (`str`, *optional*): Where to build the upload folder (required to keep it with `dry_run`).
        processor (*optional*): Tokenizer / image processor / feature extractor, for a model in memory.

    Returns:
        `dict`: `folder`, `files` (paths in the repository), `card`, and `url` / `commit` when uploaded.
    """
    if not isinstance(repo_id, str) or not REPO_ID.match(repo_id):
        raise HfSlimError(f"repo_id={repo_id!r} is not a Hub repository id; use 'namespace/name'.")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise HfSlimError(f"repo_id={repo_id!r} is not a valid Hub repository id: {err}") from None
    token = resolve_token(token)
    api = None
    if not dry_run:
        if not token:
            raise HfSlimError(
                "No Hugging Face token: pass token=, set HF_TOKEN, or log in with `huggingface-cli login`."
            )
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        try:
            whoami = api.whoami()
        except Exception as err:  # invalid token, no network
            raise HfSlimError(f"Could not authenticate with the Hub: {_redact(str(err), token)}") from None
        namespace = repo_id.split("/")[0]
        names = {whoami.get("name")} | {org.get("name") for org in whoami.get("orgs", [])}
        role = ((whoami.get("auth") or {}).get("accessToken") or {}).get("role")
        if role == "read":
            raise HfSlimError("The Hugging Face token is read-only; use a token with write access to push.")
        if namespace not in names:
            raise HfSlimError(
                f"The token's account {whoami.get('name')!r} cannot write to namespace {namespace!r} (it belongs to "
                f"{sorted(n for n in names if n)}); choose a repo_id under one of them."
            )
    keep = folder is not None
    folder = folder or tempfile.mkdtemp(prefix="hf-slim-upload-")
    try:
        manifest = prepare_upload(
            source, folder, repo_id, processor=processor, base_model=base_model, datasets=datasets
        )
        if dry_run:
            print(f"Dry run: would commit {len(manifest['files'])} files to {repo_id} (private={private}):")
            for name in manifest["files"]:
                print(f"  {name}  ({os.path.getsize(os.path.join(folder, name)):,} bytes)")
            return manifest
        from huggingface_hub import CommitOperationAdd

        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            operations = [
                CommitOperationAdd(path_in_repo=name, path_or_fileobj=os.path.join(folder, name))
                for name in manifest["files"]
            ]
            info = api.create_commit(repo_id, operations=operations, commit_message=commit_message)
        except Exception as err:
            raise HfSlimError(f"Upload to {repo_id} failed: {_redact(str(err), token)}") from None
        manifest["url"] = getattr(info, "repo_url", None) and str(info.repo_url)
        manifest["commit"] = getattr(info, "oid", None)
        print(f"Pushed {len(manifest['files'])} files to {repo_id}")
        return manifest
    finally:
        if not keep and not dry_run:
            shutil.rmtree(folder, ignore_errors=True)
