"""Score and time PyTorch, ONNX and quantized ONNX models on the same data, so their numbers are comparable."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .errors import HfSlimError
from .metrics import classification_metrics

PAD_VALUES = {"attention_mask": 0, "token_type_ids": 0}


class PaddingCollator:
    """Stack a list of rows into tensors, right-padding variable-length 1-D features.

    `input_ids` are padded with `pad_token_id`, masks and token types with 0, audio `input_values` with 0 (give the
    dataset an `attention_mask` column for models that use one). Fixed-size features (e.g. `pixel_values`) are
    stacked.
    """

    def __init__(self, pad_token_id: int = 0):
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[Mapping]) -> dict[str, torch.Tensor]:
        batch = {}
        for key in rows[0]:
            values = [torch.as_tensor(row[key]) for row in rows]
            if values[0].dim() >= 1 and len({v.shape for v in values}) > 1:
                if values[0].dim() != 1:
                    raise HfSlimError(
                        f"Cannot pad column {key!r} with shapes {sorted({tuple(v.shape) for v in values})}."
                    )
                pad = self.pad_token_id if key == "input_ids" else PAD_VALUES.get(key, 0)
                batch[key] = nn.utils.rnn.pad_sequence(values, batch_first=True, padding_value=pad)
            else:
                batch[key] = torch.stack(values)
        return batch


def _resolve(model_or_dir, file_name=None):
    """`(callable on a batch dict -> logits, kind, config)` for a PyTorch model, a checkpoint or an ONNX folder."""
    from .export.onnx import is_onnx_dir, load_ort_model
    from .modeling import from_pretrained

    if isinstance(model_or_dir, nn.Module):
        model = model_or_dir
        kind = "pytorch"
    elif is_onnx_dir(model_or_dir):
        model = load_ort_model(str(model_or_dir), file_name=file_name)
        kind = "onnx"
    elif isinstance(model_or_dir, (str, os.PathLike)):
        model = from_pretrained(str(model_or_dir))
        kind = "pytorch"
    else:
        raise HfSlimError(
            f"Expected a model, a checkpoint folder or an ONNX folder, got {type(model_or_dir).__name__}."
        )
    return model, kind


def _input_names(model, kind) -> set[str] | None:
    if kind == "onnx":
        return set(model.input_names)
    import inspect

    return set(inspect.signature(model.forward).parameters)


def predict_logits(
    model_or_dir,
    dataset,
    batch_size: int = 32,
    data_collator: Callable | None = None,
    label_column: str = "labels",
    file_name: str | None = None,
    desc: str = "Evaluating",
):
    """Logits and labels of a model (PyTorch or ONNX) over a preprocessed dataset. Returns `(logits, labels)`."""
    model, kind = _resolve(model_or_dir, file_name)
    config = model.config
    collator = data_collator or PaddingCollator(pad_token_id=getattr(config, "pad_token_id", None) or 0)
    names = _input_names(model, kind) - {label_column, "labels", "label"}
    columns = [c for c in dataset.column_names if c in names]
    if not columns:
        raise HfSlimError(
            f"None of the dataset columns {dataset.column_names} is an input of the model ({sorted(names)}); "
            "preprocess the dataset first (tokenizer / image processor / feature extractor)."
        )
    if label_column not in dataset.column_names:
        raise HfSlimError(f"The dataset has no {label_column!r} column (columns: {dataset.column_names}).")
    if kind == "pytorch":
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
    all_logits, all_labels = [], []
    try:
        for start in tqdm(range(0, len(dataset), batch_size), desc=desc, leave=False):
            rows = dataset[start : start + batch_size]
            count = len(rows[label_column])
            batch = collator([{c: rows[c][i] for c in columns} for i in range(count)])
            if kind == "pytorch":
                with torch.inference_mode():
                    logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
            else:
                logits = model(**batch).logits
            all_logits.append(torch.as_tensor(logits).float().cpu())
            all_labels.append(torch.as_tensor(rows[label_column]))
    finally:
        if kind == "pytorch":
            model.train(was_training)
    return torch.cat(all_logits), torch.cat(all_labels)


def evaluate(
    model_or_dir,
    dataset,
    metric: str | tuple[str, ...] = "accuracy",
    batch_size: int = 32,
    data_collator: Callable | None = None,
    label_column: str = "labels",
    file_name: str | None = None,
) -> dict[str, float]:
    """Score a PyTorch model, an hf_slim/transformers checkpoint, an ONNX folder or a quantized ONNX folder.

    Every kind of model sees the same rows, collated the same way, and is scored by the same metric code
    ([`classification_metrics`]: `evaluate` when the metric loads, scikit-learn otherwise), so the numbers compare.

    Args:
        model_or_dir: A `PreTrainedModel`, a checkpoint folder, or a folder with `.onnx` files (from
            [`export_onnx`] or [`quantize`]).
        dataset (`datasets.Dataset`): Preprocessed rows: model input columns and `label_column`.
        metric (`str` or tuple): `accuracy`, `f1`, `precision`, `recall`, `matthews_correlation`.
        batch_size (`int`, defaults to 32): Rows per forward pass.
        data_collator (*optional*): Defaults to [`PaddingCollator`] with the model's `pad_token_id`.
        label_column (`str`, defaults to `"labels"`): Column of class ids.
        file_name (`str`, *optional*): Which `.onnx` file of the folder (default: the only one, or `model.onnx`).

    Returns:
        `dict`: the metrics, plus `num_samples`.
    """
    logits, labels = predict_logits(model_or_dir, dataset, batch_size, data_collator, label_column, file_name)
    metrics = (metric,) if isinstance(metric, str) else tuple(metric)
    results = classification_metrics(logits.argmax(-1).numpy(), labels.numpy(), metrics=metrics)
    results["num_samples"] = int(len(labels))
    return results


# -- latency -------------------------------------------------------------------------------------------------------
def _batch_inputs(inputs_spec: Mapping, batch_size: int) -> dict[str, torch.Tensor]:
    batch = {}
    for name, spec in inputs_spec.items():
        if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], (tuple, list)):
            shape, dtype = spec
            if dtype in (torch.long, torch.int64, "int64"):
                batch[name] = torch.ones((batch_size, *shape), dtype=torch.long)
            else:
                batch[name] = torch.randn((batch_size, *shape), generator=torch.Generator().manual_seed(0))
        else:
            example = torch.as_tensor(spec)
            if example.dim() == 0:
                raise HfSlimError(f"inputs_spec[{name!r}] must have a batch dimension.")
            reps = -(-batch_size // example.shape[0])
            batch[name] = example.repeat(reps, *([1] * (example.dim() - 1)))[:batch_size].contiguous()
    return batch


def _runner(model_or_dir, file_name, num_threads):
    from .export.onnx import is_onnx_dir, pick_onnx_file

    if is_onnx_dir(model_or_dir):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        path = os.path.join(str(model_or_dir), pick_onnx_file(str(model_or_dir), file_name))
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        names = {i.name for i in session.get_inputs()}

        def run(batch):
            feed = {k: v.numpy() for k, v in batch.items() if k in names}
            if "token_type_ids" in names and "token_type_ids" not in feed and "input_ids" in feed:
                feed["token_type_ids"] = np.zeros_like(feed["input_ids"])  # what PyTorch and ORTModel default to
            session.run(None, feed)

        return run, "onnx", names
    model, _ = _resolve(model_or_dir)
    model.eval()
    import inspect

    names = set(inspect.signature(model.forward).parameters)

    def run(batch):
        with torch.inference_mode():
            model(**{k: v for k, v in batch.items() if k in names})

    return run, "pytorch", names


def benchmark_latency(
    models,
    inputs_spec: Mapping,
    batch_sizes: tuple[int, ...] = (1, 32),
    warmup: int = 5,
    repeats: int = 30,
    num_threads: int | None = None,
    file_names: Mapping[str, str] | None = None,
    verbose: bool = True,
) -> list[dict]:
    """Median and p90 latency of several models on the same inputs, in one process, with ratios to the first.

    Args:
        models: A model / folder, or a dict `{name: model or checkpoint folder or ONNX folder}` (e.g. PyTorch fp32,
            ONNX fp32, ONNX int8). The first is the reference for the ratios.
        inputs_spec (`Mapping`): Per model input, either an example tensor with a batch dimension (repeated to each
            batch size) or `(shape_without_batch, dtype)` for synthetic inputs.
        batch_sizes (`tuple[int]`, defaults to `(1, 32)`).
        warmup (`int`, defaults to 5), repeats (`int`, defaults to 30): untimed and timed runs per model and size.
        num_threads (`int`, *optional*): Threads for PyTorch and ONNX Runtime (default: `torch.get_num_threads()`).
        file_names (`Mapping`, *optional*): `.onnx` file per model name for folders with several.
        verbose (`bool`, defaults to `True`): Print the table.

    Returns:
        `list[dict]`: one row per model and batch size: `name`, `kind`, `batch_size`, `median_ms`, `p90_ms`,
        `speedup` (reference median / this median), `threads`, `repeats`.
    """
    if not isinstance(models, Mapping):
        models = {"model": models}
    if not models:
        raise HfSlimError("benchmark_latency needs at least one model.")
    if warmup < 0 or repeats < 1:
        raise HfSlimError(f"warmup must be >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}.")
    threads = num_threads or torch.get_num_threads()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    rows = []
    try:
        runners = {name: _runner(m, (file_names or {}).get(name), threads) for name, m in models.items()}
        for batch_size in batch_sizes:
            batch = _batch_inputs(inputs_spec, batch_size)
            reference = None
            for name, (run, kind, _) in runners.items():
                for _ in range(warmup):
                    run(batch)
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    run(batch)
                    times.append((time.perf_counter() - start) * 1000)
                median = statistics.median(times)
                reference = reference or median
                rows.append(
                    {
                        "name": name,
                        "kind": kind,
                        "batch_size": batch_size,
                        "median_ms": round(median, 4),
                        "p90_ms": round(float(np.percentile(times, 90)), 4),
                        "speedup": round(reference / median, 3),
                        "threads": threads,
                        "repeats": repeats,
                    }
                )
    finally:
        torch.set_num_threads(previous_threads)
    if verbose:
        print(format_latency_table(rows))
    return rows


def format_latency_table(rows: list[dict]) -> str:
    lines = [
        "| model | runtime | batch | median ms | p90 ms | speed-up vs first |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['name']} | {row['kind']} | {row['batch_size']} | {row['median_ms']:.2f} | {row['p90_ms']:.2f} "
            f"| {row['speedup']:.2f}x |"
        )
    return "\n".join(lines)
