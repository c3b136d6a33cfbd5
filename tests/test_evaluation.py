"""Evaluation and latency (hf_slim.evaluation): a PyTorch model, its checkpoint, its ONNX export and its int8 export
are scored on the same rows with the same collation and metric code, so their numbers compare; padding is right;
the latency table has one row per model and batch size with ratios to the first model."""

import functools
import os
import shutil
import sys

import numpy as np
import pytest
import torch
from datasets import Dataset
from sklearn.metrics import accuracy_score, f1_score
from tiny_models import build_model, make_dataset, make_inputs

from hf_slim import benchmark_latency, evaluate, export_onnx, prune_ffn, prune_heads, quantize
from hf_slim.errors import HfSlimError, MissingDependencyError
from hf_slim.evaluation import PaddingCollator, format_latency_table, predict_logits

ROW_KEYS = {"name", "kind", "batch_size", "median_ms", "p90_ms", "speedup", "threads", "repeats"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """`get(model_type) -> (model, checkpoint_dir, onnx_dir, int8_dir)`, built once per module."""
    cache = {}

    def get(model_type):
        if model_type not in cache:
            model = build_model(model_type, num_layers=2).eval()
            if model_type == "bert":  # pruned, so the checkpoint path goes through hf_slim.from_pretrained
                prune_heads(model, {0: [1, 2]})
                prune_ffn(model, {1: list(range(7))})
            root = tmp_path_factory.mktemp(model_type)
            checkpoint = root / "checkpoint"
            model.save_pretrained(checkpoint)
            onnx_dir = export_onnx(model, root / "onnx")
            quantize(onnx_dir, root / "int8")
            cache[model_type] = (model, str(checkpoint), onnx_dir, str(root / "int8"))
        return cache[model_type]

    return get


def _by_hand(model, dataset):
    """Logits of `model` row by row, without padding or hf_slim code."""
    logits = []
    with torch.no_grad():
        for row in dataset:
            inputs = {k: torch.tensor([v]) for k, v in row.items() if k != "labels"}
            logits.append(model(**inputs).logits[0])
    return torch.stack(logits)


# -- the same numbers for every kind of model ------------------------------------------------------------------------
@pytest.mark.parametrize("model_type", ["bert", "roberta", "vit", "wav2vec2"])
def test_pytorch_checkpoint_and_onnx_score_the_same(folders, model_type):
    model, checkpoint, onnx_dir, int8_dir = folders(model_type)
    rows = make_dataset(model_type, num_rows=23, seed=4)
    expected_logits = _by_hand(model, rows)
    predictions = expected_logits.argmax(-1).numpy()
    accuracy = accuracy_score(rows["labels"], predictions)
    assert 0 < accuracy < 1  # not a constant predictor: the comparison below could fail

    results = {}
    for name, what in [("pytorch", model), ("checkpoint", checkpoint), ("onnx", onnx_dir), ("int8", int8_dir)]:
        results[name] = evaluate(what, rows, batch_size=5)  # 23 rows: the last batch is partial
        assert results[name]["num_samples"] == 23
    for name in ("pytorch", "checkpoint", "onnx"):
        assert results[name]["accuracy"] == pytest.approx(accuracy), name
    # int8 predictions differ on a few rows at most.
    assert abs(results["int8"]["accuracy"] - accuracy) <= 0.25

    logits, labels = predict_logits(onnx_dir, rows, batch_size=5)
    torch.testing.assert_close(logits, expected_logits, atol=1e-4, rtol=0)
    assert labels.tolist() == rows["labels"]


def test_several_metrics(folders):
    model, _, onnx_dir, _ = folders("vit")
    rows = make_dataset("vit", num_rows=24, seed=2)
    predictions = _by_hand(model, rows).argmax(-1).numpy()
    results = evaluate(onnx_dir, rows, metric=("accuracy", "f1"))
    assert set(results) == {"accuracy", "f1", "num_samples"}
    assert results["accuracy"] == pytest.approx(accuracy_score(rows["labels"], predictions))
    assert results["f1"] == pytest.approx(f1_score(rows["labels"], predictions, average="macro"))
    assert evaluate(model, rows, metric="f1") == {"f1": results["f1"], "num_samples": 24}


def test_custom_label_column_and_batch_size(folders):
    model, _, _, _ = folders("vit")
    rows = make_dataset("vit", num_rows=10).rename_column("labels", "target")
    assert evaluate(model, rows, label_column="target", batch_size=3)["num_samples"] == 10
    with pytest.raises(HfSlimError, match="no 'labels' column"):
        evaluate(model, rows)


def test_training_mode_is_restored(folders):
    model, _, _, _ = folders("vit")
    model.train()
    try:
        evaluate(model, make_dataset("vit", num_rows=4))
        assert model.training
    finally:
        model.eval()


# -- padding ---------------------------------------------------------------------------------------------------------
def test_padding_collator_pads_ragged_rows():
    rows = [
        {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "token_type_ids": [0, 1, 1], "labels": 2},
        {"input_ids": [8], "attention_mask": [1], "token_type_ids": [1], "labels": 0},
    ]
    batch = PaddingCollator(pad_token_id=1)(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 1, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [2, 0]
    assert batch["input_ids"].dtype == torch.long


def test_padding_collator_stacks_fixed_size_and_pads_audio():
    images = PaddingCollator()([{"pixel_values": np.ones((3, 4, 4))}, {"pixel_values": np.zeros((3, 4, 4))}])
    assert images["pixel_values"].shape == (2, 3, 4, 4)
    audio = PaddingCollator(pad_token_id=7)([{"input_values": [0.5, 0.25]}, {"input_values": [1.0]}])
    assert audio["input_values"].tolist() == [[0.5, 0.25], [1.0, 0.0]]  # audio is padded with 0, not pad_token_id
    with pytest.raises(HfSlimError, match="Cannot pad column 'pixel_values'"):
        PaddingCollator()([{"pixel_values": np.ones((3, 4, 4))}, {"pixel_values": np.ones((3, 2, 2))}])


@pytest.mark.parametrize("kind", ["pytorch", "onnx"])
def test_ragged_text_rows_score_like_unpadded_rows(folders, kind):
    """RoBERTa pads with id 1: rows of different lengths, batched, give each row's unpadded logits."""
    model, _, onnx_dir, _ = folders("roberta")
    generator = torch.Generator().manual_seed(1)
    lengths = [12, 3, 7, 1, 9, 12, 4]
    ids = [torch.randint(5, 99, (n,), generator=generator).tolist() for n in lengths]
    rows = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * n for n in lengths], "labels": [0] * 7})
    logits, _ = predict_logits(model if kind == "pytorch" else onnx_dir, rows, batch_size=4)
    torch.testing.assert_close(logits, _by_hand(model, rows), atol=1e-4, rtol=0)


# -- bad inputs ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind",
    [
        "pytorch",
        "onnx",
    ],
)
def test_dataset_without_model_inputs(folders, kind):
    model, _, onnx_dir, _ = folders("vit")
    rows = make_dataset("bert", num_rows=4)
    with pytest.raises(HfSlimError, match=r"None of the dataset columns .* is an input of the model"):
        evaluate(model if kind == "pytorch" else onnx_dir, rows)


def test_not_a_model():
    with pytest.raises(HfSlimError, match="Expected a model, a checkpoint folder or an ONNX folder, got int"):
        evaluate(42, make_dataset("vit", num_rows=2))


def test_folder_with_two_onnx_files_needs_file_name(folders, tmp_path):
    model, _, onnx_dir, int8_dir = folders("vit")
    folder = tmp_path / "both"
    shutil.copytree(onnx_dir, folder)
    os.replace(folder / "model.onnx", folder / "fp32.onnx")
    shutil.copy(os.path.join(int8_dir, "model_quantized.onnx"), folder / "int8.onnx")
    rows = make_dataset("vit", num_rows=24, seed=3)
    with pytest.raises(HfSlimError, match=r"several ONNX files \['fp32.onnx', 'int8.onnx'\]; pass file_name="):
        evaluate(str(folder), rows)
    fp32 = evaluate(str(folder), rows, file_name="fp32.onnx")
    assert fp32 == evaluate(model, rows)
    logits, _ = predict_logits(str(folder), rows, file_name="int8.onnx")
    torch.testing.assert_close(logits, predict_logits(int8_dir, rows)[0])
    with pytest.raises(HfSlimError, match="has no model.onnx"):
        evaluate(str(folder), rows, file_name="model.onnx")


def test_missing_extra_for_onnx_folders(folders, monkeypatch):
    model, _, onnx_dir, _ = folders("vit")
    rows = make_dataset("vit", num_rows=4)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingDependencyError, match=r'pip install "hf-slim\[onnx\]"'):
        evaluate(onnx_dir, rows)
    assert evaluate(model, rows)["num_samples"] == 4  # PyTorch models do not need the extra


# -- latency ---------------------------------------------------------------------------------------------------------
def _models(folders, model_type):
    model, _, onnx_dir, int8_dir = folders(model_type)
    return {"pytorch": model, "onnx": onnx_dir, "int8": int8_dir}


@pytest.mark.parametrize("model_type", ["roberta", "vit", "wav2vec2"])
def test_benchmark_latency_rows(folders, capsys, model_type):
    rows = benchmark_latency(
        _models(folders, model_type), make_inputs(model_type, batch_size=1), batch_sizes=(1, 4), warmup=1, repeats=3
    )
    assert [(r["name"], r["kind"], r["batch_size"]) for r in rows] == [
        ("pytorch", "pytorch", 1),
        ("onnx", "onnx", 1),
        ("int8", "onnx", 1),
        ("pytorch", "pytorch", 4),
        ("onnx", "onnx", 4),
        ("int8", "onnx", 4),
    ]
    threads = torch.get_num_threads()
    for row in rows:
        assert set(row) == ROW_KEYS
        assert row["threads"] == threads and row["repeats"] == 3
        assert 0 < row["median_ms"] <= row["p90_ms"]
        assert row["speedup"] > 0
    for first, *others in (rows[:3], rows[3:]):
        assert first["speedup"] == 1.0
        for row in others:  # ratio to the first model of the same batch size (from unrounded medians)
            assert row["speedup"] == pytest.approx(first["median_ms"] / row["median_ms"], rel=1e-2, abs=2e-3)

    printed = capsys.readouterr().out
    assert format_latency_table(rows) in printed
    lines = printed.strip().splitlines()
    assert lines[0] == "| model | runtime | batch | median ms | p90 ms | speed-up vs first |"
    assert len(lines) == 2 + 6
    assert lines[2].startswith("| pytorch | pytorch | 1 |") and lines[2].endswith("| 1.00x |")


def test_benchmark_latency_with_synthetic_inputs_and_threads(folders, capsys):
    before = torch.get_num_threads()
    spec = {"input_ids": ((12,), torch.long), "attention_mask": ((12,), "int64")}
    rows = benchmark_latency(
        _models(folders, "roberta"), spec, batch_sizes=(2,), warmup=0, repeats=2, num_threads=1, verbose=False
    )
    assert len(rows) == 3 and {r["threads"] for r in rows} == {1} and {r["repeats"] for r in rows} == {2}
    assert torch.get_num_threads() == before
    assert capsys.readouterr().out == ""

    image_spec = {"pixel_values": ((3, 16, 16), torch.float32)}
    (row,) = benchmark_latency(folders("vit")[2], image_spec, batch_sizes=(3,), warmup=0, repeats=1, verbose=False)
    assert (row["name"], row["kind"], row["batch_size"], row["speedup"]) == ("model", "onnx", 3, 1.0)


def test_benchmark_latency_of_bert_with_token_type_ids(folders):
    inputs = make_inputs("bert", batch_size=1)
    inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
    rows = benchmark_latency(_models(folders, "bert"), inputs, batch_sizes=(1,), warmup=0, repeats=1, verbose=False)
    assert [r["name"] for r in rows] == ["pytorch", "onnx", "int8"]


def test_benchmark_latency_of_bert_without_token_type_ids(folders):
    rows = benchmark_latency(
        _models(folders, "bert"), make_inputs("bert", batch_size=1), batch_sizes=(1,), warmup=0, repeats=1
    )
    assert len(rows) == 3


def test_benchmark_latency_checkpoint_folder_and_file_names(folders, tmp_path):
    _, checkpoint, onnx_dir, int8_dir = folders("vit")
    folder = tmp_path / "both"
    shutil.copytree(onnx_dir, folder)
    shutil.copy(os.path.join(int8_dir, "model_quantized.onnx"), folder / "int8.onnx")
    os.replace(folder / "model.onnx", folder / "fp32.onnx")
    models = {"checkpoint": checkpoint, "fp32": str(folder), "int8": str(folder)}
    rows = benchmark_latency(
        models,
        make_inputs("vit", batch_size=2),
        batch_sizes=(1,),
        warmup=0,
        repeats=1,
        file_names={"fp32": "fp32.onnx", "int8": "int8.onnx"},
        verbose=False,
    )
    assert [(r["name"], r["kind"]) for r in rows] == [("checkpoint", "pytorch"), ("fp32", "onnx"), ("int8", "onnx")]
    with pytest.raises(HfSlimError, match="several ONNX files"):
        benchmark_latency({"both": str(folder)}, make_inputs("vit", 1), batch_sizes=(1,), warmup=0, repeats=1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"repeats": 0}, "repeats >= 1"),
        ({"warmup": -1}, "warmup must be >= 0"),
        ({"models": {}}, "at least one model"),
        ({"inputs_spec": {"pixel_values": torch.tensor(1.0)}}, "must have a batch dimension"),
    ],
)
def test_benchmark_latency_bad_arguments(folders, kwargs, match):
    arguments = {
        "models": {"pytorch": folders("vit")[0]},
        "inputs_spec": make_inputs("vit", batch_size=1),
        "batch_sizes": (1,),
        "warmup": 0,
        "repeats": 1,
        "verbose": False,
        **kwargs,
    }
    before = torch.get_num_threads()
    with pytest.raises(HfSlimError, match=match):
        benchmark_latency(**arguments)
    assert torch.get_num_threads() == before


def test_example_inputs_are_repeated_to_each_batch_size(folders, monkeypatch):
    """An example batch of 2 rows becomes batches of 1 and 5 built from those rows, in order."""
    model = folders("vit")[0]
    seen = []
    original = model.forward

    @functools.wraps(original)  # benchmark_latency reads the input names from the signature
    def spy(**kwargs):
        seen.append(kwargs["pixel_values"].clone())
        return original(**kwargs)

    monkeypatch.setattr(model, "forward", spy)
    example = make_inputs("vit", batch_size=2)
    benchmark_latency({"m": model}, example, batch_sizes=(1, 5), warmup=0, repeats=1, verbose=False)
    small, large = seen
    assert torch.equal(small, example["pixel_values"][:1])
    assert torch.equal(large, example["pixel_values"][[0, 1, 0, 1, 0]])
