"""ONNX export (hf_slim.export.onnx): for every architecture, pruned or not, the exported graph computes what the
PyTorch model computes, loads with the stock `ORTModelFor*` class, keeps the pruning record, is written atomically,
and a missing ONNX extra fails with the install hint before anything is written."""

import json
import os
import sys

import numpy as np
import optimum.onnxruntime
import pytest
import torch
from tiny_models import MODEL_TYPES, VOCAB_SIZE, build_model, make_inputs
from transformers import BertTokenizerFast

from hf_slim import drop_layers, export_onnx, prune_ffn, prune_heads
from hf_slim.errors import HfSlimError, MissingDependencyError
from hf_slim.export import load_ort_model
from hf_slim.export._deps import INSTALL_HINT, require_onnx
from hf_slim.export.onnx import pick_onnx_file

ATOL = 1e-4
MODALITY = {
    "bert": "text",
    "roberta": "text",
    "distilbert": "text",
    "vit": "image",
    "deit": "image",
    "wav2vec2": "audio",
    "hubert": "audio",
}
ORT_CLASS = {
    "text": optimum.onnxruntime.ORTModelForSequenceClassification,
    "image": optimum.onnxruntime.ORTModelForImageClassification,
    "audio": optimum.onnxruntime.ORTModelForAudioClassification,
}
# Built with 4 layers: layer 0 loses one head, layer 1 three, layer 2 every head (an attention-less layer); layer 0
# and layer 3 lose FFN neurons; then layer 1 is dropped. Result: 3 layers with 3, 0 and 4 heads, FFN 34, 37, 27.
HEAD_SPEC = {0: [1], 1: [0, 2, 3], 2: [0, 1, 2, 3]}
FFN_SPEC = {0: [0, 5, 36], 3: list(range(10))}
DROP = [1]
ONNX_MODULES = ("optimum.onnxruntime", "optimum.exporters.onnx", "onnxruntime", "onnx")


def _build(model_type, pruned):
    if not pruned:
        return build_model(model_type, num_layers=2).eval()
    model = build_model(model_type, num_layers=4).eval()
    prune_heads(model, HEAD_SPEC)
    prune_ffn(model, FFN_SPEC)
    drop_layers(model, DROP)
    return model


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def _ort_logits(ort_model, inputs):
    return torch.as_tensor(np.asarray(ort_model(**inputs).logits))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """`get(model_type, pruned) -> (model, onnx_dir)`: each tiny model is built and exported once per module."""
    cache = {}

    def get(model_type, pruned=False):
        key = (model_type, pruned)
        if key not in cache:
            model = _build(model_type, pruned)
            path = tmp_path_factory.mktemp(f"{model_type}-{'pruned' if pruned else 'full'}") / "onnx"
            assert export_onnx(model, path) == str(path)
            cache[key] = (model, str(path))
        return cache[key]

    return get


@pytest.fixture
def vocab_file(tmp_path):
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(VOCAB_SIZE - 5)]
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(words) + "\n", encoding="utf-8")
    return str(path)


# -- ONNX Runtime computes what PyTorch computes ---------------------------------------------------------------------
@pytest.mark.parametrize("pruned", [False, True], ids=["full", "pruned"])
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_ort_logits_match_pytorch(exported, model_type, pruned):
    model, path = exported(model_type, pruned)
    # Text batches have right padding on some rows, so the exported attention masking is checked too.
    inputs = make_inputs(model_type, batch_size=4, seed=3)
    expected = _logits(model, inputs)

    via_hf_slim = load_ort_model(path)
    assert isinstance(via_hf_slim, ORT_CLASS[MODALITY[model_type]])
    torch.testing.assert_close(_ort_logits(via_hf_slim, inputs), expected, atol=ATOL, rtol=0)

    # The folder is a standard Optimum folder: the stock class loads it without hf_slim.
    stock = ORT_CLASS[MODALITY[model_type]].from_pretrained(path)
    torch.testing.assert_close(_ort_logits(stock, inputs), expected, atol=ATOL, rtol=0)
    # Not a coincidence of tiny outputs: the rows differ from each other by more than the tolerance.
    assert (expected - expected[0]).abs().max() > 10 * ATOL


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_ort_logits_match_pytorch_at_another_batch_size(exported, model_type):
    """The batch dimension (and, for text and audio, the sequence length) is dynamic in the exported graph."""
    model, path = exported(model_type, True)
    inputs = make_inputs(model_type, batch_size=3, seed=5)
    if MODALITY[model_type] == "text":
        inputs = {k: v[:, :9] for k, v in inputs.items()}
    elif MODALITY[model_type] == "audio":
        inputs = {"input_values": inputs["input_values"][:, :320]}
    torch.testing.assert_close(_ort_logits(load_ort_model(path), inputs), _logits(model, inputs), atol=ATOL, rtol=0)


@pytest.mark.parametrize("pruned", [False, True], ids=["full", "pruned"])
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_exported_folder_has_config_with_architecture_and_pruning_record(exported, model_type, pruned):
    model, path = exported(model_type, pruned)
    assert "model.onnx" in os.listdir(path)
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    # Built from a config, the model has no `architectures`; the export adds it so loaders know the task.
    assert model.config.architectures is None
    assert config["architectures"] == [type(model).__name__]
    if pruned:
        record = config["hf_slim"]
        assert record["num_heads"] == [3, 0, 4]
        assert record["intermediate_sizes"] == [34, 37, 27]
        assert record["source_layers"] == [0, 2, 3]
    else:
        assert "hf_slim" not in config


def test_pruned_structure_really_is_in_the_graph(exported):
    """The graph of the pruned BERT has the sliced projections (not the original shapes masked)."""
    import onnx

    _, path = exported("bert", True)
    graph = onnx.load(os.path.join(path, "model.onnx")).graph
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    matmuls = {n.name: n for n in graph.node if n.op_type == "MatMul"}
    # Layer 0 keeps 3 heads of size 8: its query projection maps 32 -> 24.
    query = matmuls["/bert/encoder/layer.0/attention/self/query/MatMul"]
    assert shapes[query.input[1]] == [32, 24]
    # Layer 1 (originally layer 2) has no heads: no query/key/value projection is left in it.
    assert not [name for name in matmuls if "/layer.1/attention/self/" in name]
    intermediate = matmuls["/bert/encoder/layer.2/intermediate/dense/MatMul"]
    assert shapes[intermediate.input[1]] == [32, 27]
    assert not [name for name in matmuls if "/layer.3/" in name]


# -- inputs: a saved folder, a preprocessor, the task ----------------------------------------------------------------
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_export_from_saved_pruned_checkpoint(exported, model_type, tmp_path):
    model, _ = exported(model_type, True)
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    path = export_onnx(str(checkpoint), tmp_path / "onnx")
    inputs = make_inputs(model_type, batch_size=2, seed=7)
    torch.testing.assert_close(_ort_logits(load_ort_model(path), inputs), _logits(model, inputs), atol=ATOL, rtol=0)


def test_given_preprocessor_is_saved_next_to_the_model(vocab_file, tmp_path):
    tokenizer = BertTokenizerFast(vocab_file=vocab_file, model_max_length=64)
    path = export_onnx(_build("bert", pruned=False), tmp_path / "onnx", preprocessor=tokenizer)
    assert {"tokenizer.json", "tokenizer_config.json", "vocab.txt"} <= set(os.listdir(path))


def test_preprocessor_files_of_a_folder_are_copied(vocab_file, tmp_path):
    tokenizer = BertTokenizerFast(vocab_file=vocab_file, model_max_length=64)
    model = _build("bert", pruned=False)
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    path = export_onnx(str(checkpoint), tmp_path / "onnx")
    assert {"tokenizer.json", "tokenizer_config.json", "vocab.txt"} <= set(os.listdir(path))
    with open(os.path.join(path, "vocab.txt")) as f, open(vocab_file) as g:
        assert f.read() == g.read()
    # The exported folder works end to end with the tokenizer saved in it.
    encoded = BertTokenizerFast.from_pretrained(path)(["w1 w2 w3", "w4"], padding=True, return_tensors="pt")
    inputs = {k: encoded[k] for k in ("input_ids", "attention_mask")}
    assert inputs["attention_mask"][1].tolist() == [1, 1, 1, 0, 0]
    torch.testing.assert_close(_ort_logits(load_ort_model(path), inputs), _logits(model, inputs), atol=ATOL, rtol=0)


def test_explicit_task_and_opset(tmp_path):
    import onnx

    model = _build("vit", pruned=False)
    path = export_onnx(model, tmp_path / "onnx", task="image-classification", opset=17)
    assert onnx.load(os.path.join(path, "model.onnx")).opset_import[0].version == 17


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"task": "image-classification"}, "does not match"),
        ({"task": "translation"}, "is not one of"),
    ],
)
def test_wrong_task_fails_before_writing(tmp_path, kwargs, match):
    model = _build("bert", pruned=False)
    with pytest.raises(HfSlimError, match=match):
        export_onnx(model, tmp_path / "onnx", **kwargs)
    assert os.listdir(tmp_path) == []


def test_not_a_model_fails_before_writing(tmp_path):
    with pytest.raises(HfSlimError, match="expects a model or a path"):
        export_onnx(42, tmp_path / "onnx")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("training", [True, False])
def test_training_mode_is_restored(tmp_path, training):
    model = _build("distilbert", pruned=False)
    model.train(training)
    export_onnx(model, tmp_path / "onnx")
    assert model.training is training
    assert all(m.training is training for m in model.modules())


# -- atomic output ---------------------------------------------------------------------------------------------------
def test_existing_folder_is_replaced_and_parents_are_created(tmp_path):
    target = tmp_path / "old"
    target.mkdir()
    (target / "stale.onnx").write_text("stale")
    export_onnx(_build("vit", pruned=False), target)
    assert "stale.onnx" not in os.listdir(target)
    assert "model.onnx" in os.listdir(target)

    nested = tmp_path / "a" / "b" / "onnx"
    export_onnx(_build("vit", pruned=False), nested)
    assert "model.onnx" in os.listdir(nested)
    assert sorted(os.listdir(tmp_path)) == ["a", "old"]  # no temporary folders left behind


def test_failed_export_leaves_the_folder_as_it_was(tmp_path, monkeypatch):
    import optimum.exporters.onnx

    target = tmp_path / "onnx"
    target.mkdir()
    (target / "keep.txt").write_text("previous export")

    def broken_export(model, output, **kwargs):
        with open(os.path.join(output, "model.onnx"), "w") as f:
            f.write("half written")
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(optimum.exporters.onnx, "onnx_export_from_model", broken_export)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        export_onnx(_build("vit", pruned=False), target)
    assert os.listdir(target) == ["keep.txt"]
    assert (target / "keep.txt").read_text() == "previous export"
    assert os.listdir(tmp_path) == ["onnx"]


# -- loading ---------------------------------------------------------------------------------------------------------
def _touch(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")
    return str(folder)


def test_pick_onnx_file(tmp_path):
    assert pick_onnx_file(_touch(tmp_path / "one", "model_quantized.onnx", "config.json")) == "model_quantized.onnx"
    # Calibration leftovers are not candidates.
    assert pick_onnx_file(_touch(tmp_path / "aug", "model.onnx", "augmented_model.onnx")) == "model.onnx"
    assert pick_onnx_file(_touch(tmp_path / "both", "model.onnx", "model_quantized.onnx")) == "model.onnx"
    two = _touch(tmp_path / "two", "a.onnx", "b.onnx")
    with pytest.raises(HfSlimError, match=r"several ONNX files \['a.onnx', 'b.onnx'\]; pass file_name="):
        pick_onnx_file(two)
    assert pick_onnx_file(two, "b.onnx") == "b.onnx"
    with pytest.raises(HfSlimError, match="has no c.onnx"):
        pick_onnx_file(two, "c.onnx")


def test_load_ort_model_picks_the_named_file(exported, tmp_path):
    import shutil

    model, path = exported("roberta", False)
    folder = tmp_path / "two"
    shutil.copytree(path, folder)
    os.replace(folder / "model.onnx", folder / "b.onnx")
    shutil.copy(folder / "b.onnx", folder / "a.onnx")
    with pytest.raises(HfSlimError, match="several ONNX files"):
        load_ort_model(str(folder))
    inputs = make_inputs("roberta", batch_size=2)
    torch.testing.assert_close(
        _ort_logits(load_ort_model(str(folder), file_name="b.onnx"), inputs), _logits(model, inputs), atol=ATOL, rtol=0
    )


def test_load_ort_model_rejects_a_non_classification_config(exported, tmp_path):
    import shutil

    _, path = exported("bert", False)
    folder = tmp_path / "masked-lm"
    shutil.copytree(path, folder)
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["BertForMaskedLM"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(HfSlimError, match=r"BertForMaskedLM.*not a supported classification model"):
        load_ort_model(str(folder))


# -- missing extra ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("module", ONNX_MODULES)
def test_missing_extra_names_the_package_and_the_install_command(monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # what `import` sees when the package is not installed
    with pytest.raises(MissingDependencyError) as info:
        require_onnx()
    message = str(info.value)
    assert 'pip install "hf-slim[onnx]"' in message
    assert INSTALL_HINT in message
    assert repr(module.split(".")[0]) in message
    assert isinstance(info.value, ImportError) and not isinstance(info.value, HfSlimError)
    assert isinstance(info.value.__cause__, ImportError)


def test_missing_extra_fails_export_before_writing(monkeypatch, tmp_path):
    model = _build("bert", pruned=False)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingDependencyError, match=r'pip install "hf-slim\[onnx\]"'):
        export_onnx(model, tmp_path / "onnx")
    assert os.listdir(tmp_path) == []


def test_missing_extra_fails_loading(monkeypatch, exported):
    _, path = exported("vit", False)
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(MissingDependencyError, match="'onnx', which is not installed"):
        load_ort_model(path)
