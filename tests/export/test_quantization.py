"""int8 quantization (hf_slim.export.quantize): dynamic and static int8 of every architecture, pruned or not, run
and agree with PyTorch; the accuracy check retries safer configurations in order and reports every attempt; bad
requests fail before anything is written; Wav2Vec2/HuBERT use their working operator list."""

import collections
import importlib
import json
import os
import platform
import sys

import onnx
import pytest
import torch
from datasets import Dataset
from tiny_models import MODEL_TYPES, build_model, make_dataset

import hf_slim.evaluation
from hf_slim import drop_layers, export_onnx, prune_ffn, prune_heads, quantize, size_on_disk
from hf_slim.errors import HfSlimError, MissingDependencyError
from hf_slim.evaluation import evaluate, predict_logits
from hf_slim.export import QuantizationReport, detect_isa
from hf_slim.export.quantize import REPORT_NAME, default_operators, sensitive_nodes

quantize_module = importlib.import_module("hf_slim.export.quantize")  # `hf_slim.export.quantize` is the function

TEXT = ("bert", "roberta", "distilbert")
ISAS = ("avx512_vnni", "avx512", "avx2", "arm64")
# Optimum's AutoQuantizationConfig default operators for dynamic quantization.
OPTIMUM_DYNAMIC_OPERATORS = ["Conv", "MatMul", "Attention", "LSTM", "Gather", "Transpose", "EmbedLayerNormalization"]
HEAD_SPEC = {0: [1], 1: [0, 2, 3], 2: [0, 1, 2, 3]}  # non-uniform heads, layer 2 without attention
FFN_SPEC = {0: [0, 5, 36], 3: list(range(10))}
MIN_AGREEMENT = 0.75


def _build(model_type, pruned=False):
    if pruned:
        model = build_model(model_type, num_layers=4).eval()
        prune_heads(model, HEAD_SPEC)
        prune_ffn(model, FFN_SPEC)
        drop_layers(model, [1])
    else:
        model = build_model(model_type, num_layers=2).eval()
    if model_type == "deit":
        # transformers leaves DeiT's cls/distillation tokens and position embeddings at zero when built from a
        # config, so the CLS token of a random DeiT carries almost no input-dependent signal, logits differ across
        # inputs by less than the int8 noise and static int8 flips most predictions (measured: 16-53 % agreement).
        # That is a property of these random weights, not of hf_slim (ONNX Runtime's quantize_static does the same);
        # ViT's initialisation (normal, std 0.02) gives the tokens a signal. Scaling the classifier would not help:
        # logit margins and the propagated int8 noise scale together.
        generator = torch.Generator().manual_seed(0)
        embeddings = model.deit.embeddings
        with torch.no_grad():
            for param in (embeddings.cls_token, embeddings.distillation_token, embeddings.position_embeddings):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """`get(model_type, pruned) -> (model, onnx_dir)`: each tiny model is built and exported once per module."""
    cache = {}

    def get(model_type, pruned=False):
        key = (model_type, pruned)
        if key not in cache:
            model = _build(model_type, pruned)
            path = tmp_path_factory.mktemp(f"{model_type}-{'pruned' if pruned else 'full'}") / "onnx"
            export_onnx(model, path)
            cache[key] = (model, str(path))
        return cache[key]

    return get


def _op_types(path):
    return collections.Counter(node.op_type for node in onnx.load(path).graph.node)


def _int8_initializers(path):
    return [i.name for i in onnx.load(path).graph.initializer if i.data_type == onnx.TensorProto.INT8]


def _read_json(path):
    with open(path) as f:
        return json.load(f)


# -- every architecture, dynamic and static, pruned or not -----------------------------------------------------------
@pytest.mark.parametrize("mode", ["dynamic", "static"])
@pytest.mark.parametrize("pruned", [False, True], ids=["full", "pruned"])
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_int8_runs_and_agrees_with_pytorch(exported, tmp_path, model_type, pruned, mode):
    model, onnx_dir = exported(model_type, pruned)
    calibration = make_dataset(model_type, num_rows=16, seed=0)
    rows = make_dataset(model_type, num_rows=32, seed=1)  # not the calibration rows
    output = tmp_path / "int8"

    report = quantize(onnx_dir, output, mode=mode, calibration_dataset=calibration if mode == "static" else None)

    assert isinstance(report, QuantizationReport)
    assert report.output_dir == str(output)
    assert report.file_name == "model_quantized.onnx"
    assert report.isa == detect_isa()
    assert report.chosen.mode == mode and report.chosen.reason == "requested configuration"
    assert report.attempts == [report.chosen] and report.chosen.error is None
    assert report.met_bound is None and report.reference_accuracy is None
    assert "accuracy not checked" in report.message
    assert _read_json(output / REPORT_NAME) == report.to_dict()
    assert {"config.json", "model_quantized.onnx"} <= set(os.listdir(output))
    assert _read_json(output / "config.json")["architectures"] == [type(model).__name__]

    graph = str(output / report.file_name)
    ops = _op_types(graph)
    if mode == "dynamic":
        assert ops["MatMulInteger"] > 0 and ops["DynamicQuantizeLinear"] > 0
    else:
        assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    assert _int8_initializers(graph), "no int8 weights in the quantized graph"

    int8_logits, _ = predict_logits(str(output), rows)
    torch_logits, _ = predict_logits(model, rows)
    assert int8_logits.shape == torch_logits.shape == (32, 3)
    assert torch.isfinite(int8_logits).all()
    agreement = (int8_logits.argmax(-1) == torch_logits.argmax(-1)).float().mean().item()
    assert agreement >= MIN_AGREEMENT, f"int8 agrees with PyTorch on {agreement:.0%} of the rows"
    # int8 is an approximation: the logits moved, but by little.
    assert 0 < (int8_logits - torch_logits).abs().max() < 0.5


def test_static_calibration_adds_token_type_ids_bert_needs(exported, tmp_path, monkeypatch):
    _, onnx_dir = exported("bert")
    import onnxruntime

    session = onnxruntime.InferenceSession(os.path.join(onnx_dir, "model.onnx"), providers=["CPUExecutionProvider"])
    assert "token_type_ids" in [i.name for i in session.get_inputs()]
    calibration = make_dataset("bert", num_rows=12)
    assert "token_type_ids" not in calibration.column_names

    seen = []
    real = quantize_module._quantize_once

    def spy(onnx_dir, file_name, output, attempt, isa, calibration_dataset, *args):
        seen.append(calibration_dataset)
        return real(onnx_dir, file_name, output, attempt, isa, calibration_dataset, *args)

    monkeypatch.setattr(quantize_module, "_quantize_once", spy)
    quantize(onnx_dir, tmp_path / "int8", mode="static", calibration_dataset=calibration, num_calibration_samples=5)

    (used,) = seen
    # Only the graph's inputs (labels dropped), at most num_calibration_samples rows, token types all zero.
    assert sorted(used.column_names) == ["attention_mask", "input_ids", "token_type_ids"]
    assert len(used) == 5
    assert used["input_ids"] == calibration["input_ids"][:5]
    assert all(set(row) == {0} for row in used["token_type_ids"])
    assert "token_type_ids" not in calibration.column_names  # the caller's dataset is not modified


@pytest.mark.parametrize("method", ["percentile", "entropy"])
@pytest.mark.parametrize("model_type", ["vit", "wav2vec2"])
def test_other_calibration_methods(exported, tmp_path, model_type, method):
    _, onnx_dir = exported(model_type)
    report = quantize(
        onnx_dir,
        tmp_path / "int8",
        mode="static",
        calibration_dataset=make_dataset(model_type, num_rows=8),
        calibration_method=method,
    )
    assert report.chosen.error is None
    assert _op_types(str(tmp_path / "int8" / report.file_name))["QuantizeLinear"] > 0


@pytest.mark.parametrize("method", ["percentile", "entropy"])
@pytest.mark.parametrize("model_type", TEXT)
def test_other_calibration_methods_on_text_models(exported, tmp_path, model_type, method):
    _, onnx_dir = exported(model_type)
    report = quantize(
        onnx_dir,
        tmp_path / "int8",
        mode="static",
        calibration_dataset=make_dataset(model_type, num_rows=8),
        calibration_method=method,
    )
    assert report.chosen.error is None


def test_int8_folder_is_smaller_than_fp32(tmp_path):
    # Big enough that the weights, not the graph structure and config files, dominate the folder size.
    model = build_model("bert", num_layers=2, hidden=64, intermediate=256).eval()
    fp32 = export_onnx(model, tmp_path / "fp32")
    quantize(fp32, tmp_path / "int8")
    assert size_on_disk(tmp_path / "int8") < 0.6 * size_on_disk(fp32)


def test_existing_output_folder_is_replaced(exported, tmp_path):
    _, onnx_dir = exported("vit")
    output = tmp_path / "int8"
    output.mkdir()
    (output / "stale.onnx").write_text("stale")
    report = quantize(onnx_dir, output)
    assert "stale.onnx" not in os.listdir(output)
    assert report.file_name in os.listdir(output)
    assert os.listdir(tmp_path) == ["int8"]  # no attempt or temporary folders left behind


def test_output_folder_parents_are_created(exported, tmp_path):
    _, onnx_dir = exported("vit")
    output = tmp_path / "new" / "nested" / "int8"
    report = quantize(onnx_dir, output)
    assert report.file_name in os.listdir(output)


# -- operators per architecture ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "model_type, expected",
    [
        ("bert", None),
        ("roberta", None),
        ("distilbert", None),
        ("vit", ["MatMul", "Attention", "Gather", "Transpose"]),
        ("deit", ["MatMul", "Attention", "Gather", "Transpose"]),
        ("wav2vec2", ["MatMul"]),
        ("hubert", ["MatMul"]),
    ],
)
def test_default_operators(exported, model_type, expected):
    _, onnx_dir = exported(model_type)
    assert default_operators(onnx_dir) == expected


@pytest.mark.parametrize("model_type", ["wav2vec2", "hubert"])
def test_audio_models_quantize_matmul_only_by_default(exported, tmp_path, model_type):
    _, onnx_dir = exported(model_type)
    report = quantize(onnx_dir, tmp_path / "int8", operators=None)
    assert report.chosen.operators == ["MatMul"]
    assert _read_json(tmp_path / "int8" / "ort_config.json")["quantization"]["operators_to_quantize"] == ["MatMul"]
    ops = _op_types(str(tmp_path / "int8" / report.file_name))
    assert ops["MatMulInteger"] > 0 and ops["ConvInteger"] == 0


@pytest.mark.parametrize("model_type", ["wav2vec2", "hubert"])
def test_audio_models_fail_with_optimums_default_operators(exported, tmp_path, model_type):
    """Why the default is MatMul only: the weight-normed positional convolution's weight is computed in the graph."""
    _, onnx_dir = exported(model_type)
    with pytest.raises(HfSlimError, match="could not quantize") as info:
        quantize(onnx_dir, tmp_path / "int8", operators=OPTIMUM_DYNAMIC_OPERATORS)
    message = str(info.value)
    assert "requested configuration: ValueError" in message
    assert f"/{model_type}/encoder/pos_conv_embed/conv/weight" in message and "to be an initializer" in message
    assert os.listdir(tmp_path) == []


def test_vision_int8_leaves_the_patch_convolution_in_float(exported, tmp_path):
    _, onnx_dir = exported("vit")
    report = quantize(onnx_dir, tmp_path / "int8")
    ops = _op_types(str(tmp_path / "int8" / report.file_name))
    assert ops["Conv"] == 1 and ops["ConvInteger"] == 0 and ops["MatMulInteger"] > 0


def _kept_in_float(graph_path, node_name):
    """Whether the graph still has `node_name` as a float MatMul/Gemm whose weight is a float initializer."""
    graph = onnx.load(graph_path).graph
    floats = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    # Dynamic quantization rewrites a Gemm as `<name>_MatMul` + `<name>_Add` first; the MatMul then holds the weight.
    names = (node_name, f"{node_name}_MatMul") if node_name.endswith("Gemm") else (node_name,)
    node = next((n for n in graph.node if n.name in names), None)
    return node is not None and node.op_type in ("MatMul", "Gemm") and node.input[1] in floats


def test_explicit_operators_and_excluded_nodes_are_applied(exported, tmp_path):
    _, onnx_dir = exported("bert")
    excluded = ["/bert/encoder/layer.1/output/dense/MatMul", "/bert/encoder/layer.0/attention/self/query/MatMul"]
    report = quantize(onnx_dir, tmp_path / "int8", operators=["MatMul"], exclude_nodes=excluded, per_channel=False)
    assert report.chosen.operators == ["MatMul"] and report.chosen.exclude_nodes == excluded
    config = _read_json(tmp_path / "int8" / "ort_config.json")["quantization"]
    assert config["nodes_to_exclude"] == excluded and config["per_channel"] is False
    assert config["operators_to_quantize"] == ["MatMul"]
    graph = str(tmp_path / "int8" / report.file_name)
    assert all(_kept_in_float(graph, name) for name in excluded)
    assert not _kept_in_float(graph, "/bert/encoder/layer.1/intermediate/dense/MatMul")
    assert _op_types(graph)["MatMulInteger"] > 0


@pytest.mark.parametrize(
    "mode",
    [
        "dynamic",
        "static",
    ],
)
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_excluded_sensitive_nodes_stay_in_float(exported, tmp_path, model_type, mode):
    """What the fallback 'classifier and last layer kept in float' promises, for every family."""
    _, onnx_dir = exported(model_type)
    sensitive = sensitive_nodes(os.path.join(onnx_dir, "model.onnx"), 2)
    head = [n for n in sensitive if n.endswith("Gemm")]
    assert head, "every family's classification head has a Gemm"
    report = quantize(
        onnx_dir,
        tmp_path / "int8",
        mode=mode,
        calibration_dataset=make_dataset(model_type, 8) if mode == "static" else None,
        exclude_nodes=sensitive,
    )
    # Every excluded node with a weight (projections, FFN, head) is still a float node with its float weight.
    weighted = [n for n in sensitive if _kept_in_float(os.path.join(onnx_dir, "model.onnx"), n)]
    assert set(head) <= set(weighted) and len(weighted) >= len(head) + 6  # q, k, v, out, FFN in and out
    graph = str(tmp_path / "int8" / report.file_name)
    assert [n for n in weighted if not _kept_in_float(graph, n)] == []


# -- detect_isa and sensitive_nodes ----------------------------------------------------------------------------------
def test_detect_isa_on_this_machine():
    isa = detect_isa()
    assert isa in ISAS
    if platform.machine().lower() in ("x86_64", "amd64") and os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
        vnni = "avx512_vnni" in flags or "avx512vnni" in flags
        expected = "avx512_vnni" if vnni else "avx512" if "avx512f" in flags else "avx2"
        assert isa == expected


@pytest.mark.parametrize("machine", ["aarch64", "arm64", "ARM64"])
def test_detect_isa_on_arm(monkeypatch, machine):
    monkeypatch.setattr(platform, "machine", lambda: machine)
    assert detect_isa() == "arm64"


@pytest.mark.parametrize(
    "flags, expected",
    [
        ("fpu sse2 avx2 avx512f avx512_vnni", "avx512_vnni"),
        ("fpu avx2 avx512f avx512vnni", "avx512_vnni"),
        ("fpu avx2 avx512f avx512bw", "avx512"),
        ("fpu sse2 avx avx2", "avx2"),
        (None, "avx2"),  # no /proc/cpuinfo
    ],
)
def test_detect_isa_from_cpu_flags(monkeypatch, tmp_path, flags, expected):
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    cpuinfo = tmp_path / "cpuinfo"
    if flags is not None:
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\nbugs\t\t: avx512_vnni_fake\n")

    def fake_open(path, *args, **kwargs):
        assert path == "/proc/cpuinfo"
        return open(cpuinfo, *args, **kwargs)

    monkeypatch.setattr(quantize_module, "open", fake_open, raising=False)
    assert detect_isa() == expected


def test_sensitive_nodes_of_bert(exported):
    _, onnx_dir = exported("bert")
    path = os.path.join(onnx_dir, "model.onnx")
    nodes = sensitive_nodes(path, num_layers=2)
    assert "/classifier/Gemm" in nodes and "/bert/pooler/dense/Gemm" in nodes
    assert "/bert/encoder/layer.1/intermediate/dense/MatMul" in nodes
    assert "/bert/encoder/layer.1/attention/self/query/MatMul" in nodes
    assert not [n for n in nodes if "/layer.0/" in n or "/embeddings/" in n]
    graph_ops = {n.name: n.op_type for n in onnx.load(path).graph.node}
    assert {graph_ops[n] for n in nodes} <= {"MatMul", "Gemm", "Conv", "Gather"}

    assert sorted(sensitive_nodes(path, num_layers=None)) == sorted(
        n for n in nodes if "/classifier" in n or "/pooler" in n
    )
    two_layers = sensitive_nodes(path, num_layers=2, last_layers=2)
    assert set(nodes) < set(two_layers)
    assert "/bert/encoder/layer.0/output/dense/MatMul" in two_layers


@pytest.mark.parametrize(
    "model_type, markers",
    [("distilbert", ["/pre_classifier/", "/classifier/", "/layer.1/"]), ("wav2vec2", ["/projector/", "/layers.1/"])],
)
def test_sensitive_nodes_of_other_families(exported, model_type, markers):
    _, onnx_dir = exported(model_type)
    nodes = sensitive_nodes(os.path.join(onnx_dir, "model.onnx"), num_layers=2)
    for marker in markers:
        assert [n for n in nodes if marker in n], marker
    assert not [n for n in nodes if "/layer.0/" in n or "/layers.0/" in n]


# -- the accuracy check and its fallbacks ----------------------------------------------------------------------------
def _fake_evaluate(monkeypatch, onnx_dir, reference, scores):
    """Replace hf_slim.evaluation.evaluate (quantize imports it when called): the fp32 model scores `reference`,
    quantized attempts score `scores` in turn. Records each call and the configuration of the model evaluated."""
    calls = []

    def fake(model_or_dir, dataset, metric="accuracy", file_name=None, **kwargs):
        path = str(model_or_dir)
        call = {"path": path, "metric": metric, "file_name": file_name, "rows": len(dataset)}
        if path == onnx_dir:
            value = reference
        else:
            quantization = _read_json(os.path.join(path, "ort_config.json"))["quantization"]
            call.update({k: quantization[k] for k in ("is_static", "per_channel", "nodes_to_exclude")})
            value = scores[sum(c["path"] != onnx_dir for c in calls)]
        calls.append(call)
        return {metric: value, "num_samples": len(dataset)}

    monkeypatch.setattr(hf_slim.evaluation, "evaluate", fake)
    return calls


def _dynamic_exclusions(nodes):
    """nodes_to_exclude as quantize passes it in dynamic mode: each Gemm also under its rewritten MatMul/Add names."""
    return list(nodes) + [f"{n}_{suffix}" for n in nodes if "Gemm" in n for suffix in ("MatMul", "Add")]


def test_fallback_keeps_the_first_configuration_within_the_bound(exported, tmp_path, monkeypatch):
    _, onnx_dir = exported("bert")
    rows = make_dataset("bert", num_rows=20, seed=1)
    calls = _fake_evaluate(monkeypatch, onnx_dir, reference=0.9, scores=[0.5, 0.89, 0.0])
    output = tmp_path / "int8"

    report = quantize(onnx_dir, output, eval_dataset=rows, max_accuracy_drop=0.05)

    sensitive = sorted(sensitive_nodes(os.path.join(onnx_dir, "model.onnx"), 2))
    assert [a.reason for a in report.attempts] == [
        "requested configuration",
        "classifier and last layer kept in float",
    ]
    assert [a.accuracy for a in report.attempts] == [0.5, 0.89]
    assert [a.accuracy_drop for a in report.attempts] == [0.4, 0.01]
    assert report.chosen == report.attempts[1]
    assert report.chosen.exclude_nodes == sensitive
    assert report.met_bound is True
    assert report.reference_accuracy == 0.9 and report.max_accuracy_drop == 0.05
    assert report.message.startswith("dynamic int8")
    assert "classifier and last layer kept in float" in report.message and "drop 0.0100 <= 0.05" in report.message
    assert _read_json(output / REPORT_NAME) == report.to_dict()

    # The reference is the fp32 ONNX model, then each attempt's quantized model, on the same rows.
    assert calls[0] == {"path": onnx_dir, "metric": "accuracy", "file_name": "model.onnx", "rows": 20}
    assert [c["nodes_to_exclude"] for c in calls[1:]] == [[], _dynamic_exclusions(sensitive)]
    assert len(calls) == 3  # stopped at the first attempt within the bound
    # What was written is the second attempt: the sensitive nodes are still float there.
    written = _read_json(output / "ort_config.json")["quantization"]["nodes_to_exclude"]
    assert written == _dynamic_exclusions(sensitive)
    nodes = {n.name: n.op_type for n in onnx.load(str(output / report.file_name)).graph.node}
    assert nodes["/bert/encoder/layer.1/intermediate/dense/MatMul"] == "MatMul"
    assert nodes["/bert/encoder/layer.1/attention/output/dense/MatMul"] == "MatMul"
    assert _op_types(str(output / report.file_name))["MatMulInteger"] > 0  # layer 0 is quantized
    assert sorted(os.listdir(tmp_path)) == ["int8"]


def test_fallback_order_for_static_without_per_channel(exported, tmp_path, monkeypatch):
    _, onnx_dir = exported("vit")
    calls = _fake_evaluate(monkeypatch, onnx_dir, reference=0.8, scores=[0.1, 0.2, 0.3, 0.8])

    report = quantize(
        onnx_dir,
        tmp_path / "int8",
        mode="static",
        per_channel=False,
        calibration_dataset=make_dataset("vit", num_rows=8),
        eval_dataset=make_dataset("vit", num_rows=8, seed=1),
        max_accuracy_drop=0.0,
        metric="f1",
    )

    sensitive = sorted(sensitive_nodes(os.path.join(onnx_dir, "model.onnx"), 2))
    assert [(a.reason, a.mode, a.per_channel) for a in report.attempts] == [
        ("requested configuration", "static", False),
        ("per-channel weights", "static", True),
        ("classifier and last layer kept in float", "static", True),
        ("dynamic instead of static", "dynamic", True),
    ]
    assert [a.exclude_nodes for a in report.attempts] == [[], [], sensitive, sensitive]
    assert report.chosen == report.attempts[-1] and report.chosen.accuracy_drop == 0.0
    assert report.met_bound is True and report.message.startswith("dynamic int8")
    assert "f1 0.8000 vs 0.8000" in report.message
    # Each attempt's model really had its configuration.
    assert [(c["is_static"], c["per_channel"], c["nodes_to_exclude"]) for c in calls[1:]] == [
        (True, False, []),
        (True, True, []),
        (True, True, sensitive),
        (False, True, _dynamic_exclusions(sensitive)),
    ]
    assert {c["metric"] for c in calls} == {"f1"}
    assert _read_json(tmp_path / "int8" / "ort_config.json")["quantization"]["is_static"] is False


def test_when_nothing_meets_the_bound_the_best_attempt_is_kept(exported, tmp_path, monkeypatch):
    _, onnx_dir = exported("distilbert")
    _fake_evaluate(monkeypatch, onnx_dir, reference=0.9, scores=[0.5, 0.7, 0.6])

    report = quantize(
        onnx_dir,
        tmp_path / "int8",
        per_channel=False,
        eval_dataset=make_dataset("distilbert", num_rows=8),
        max_accuracy_drop=0.05,
    )

    assert [a.reason for a in report.attempts] == [
        "requested configuration",
        "per-channel weights",
        "classifier and last layer kept in float",
    ]
    assert report.chosen == report.attempts[1]
    assert report.met_bound is False
    assert report.message == (
        "No configuration kept the accuracy drop within 0.05: the best (per-channel weights) scores 0.7000 vs "
        "0.9000 fp32 (drop 0.2000)."
    )
    written = _read_json(tmp_path / "int8" / REPORT_NAME)
    assert written == report.to_dict() and written["met_bound"] is False
    quantization = _read_json(tmp_path / "int8" / "ort_config.json")["quantization"]
    assert quantization["per_channel"] is True and quantization["nodes_to_exclude"] == []


def test_strict_raises_and_writes_nothing(exported, tmp_path, monkeypatch):
    _, onnx_dir = exported("distilbert")
    _fake_evaluate(monkeypatch, onnx_dir, reference=0.9, scores=[0.5, 0.7])
    output = tmp_path / "int8"
    with pytest.raises(HfSlimError, match=r"No configuration kept the accuracy drop within 0.01.*strict=True"):
        quantize(onnx_dir, output, eval_dataset=make_dataset("distilbert", 8), max_accuracy_drop=0.01, strict=True)
    assert os.listdir(tmp_path) == []

    # An earlier result in output_dir survives a strict failure.
    output.mkdir()
    (output / "model_quantized.onnx").write_text("previous")
    _fake_evaluate(monkeypatch, onnx_dir, reference=0.9, scores=[0.5, 0.7])
    with pytest.raises(HfSlimError, match="Nothing was written"):
        quantize(onnx_dir, output, eval_dataset=make_dataset("distilbert", 8), max_accuracy_drop=0.01, strict=True)
    assert os.listdir(tmp_path) == ["int8"]
    assert os.listdir(output) == ["model_quantized.onnx"]
    assert (output / "model_quantized.onnx").read_text() == "previous"


def test_accuracy_check_with_the_real_evaluation(exported, tmp_path):
    _, onnx_dir = exported("roberta")
    rows = make_dataset("roberta", num_rows=24, seed=2)
    report = quantize(onnx_dir, tmp_path / "int8", eval_dataset=rows, max_accuracy_drop=1.0)
    assert len(report.attempts) == 1 and report.met_bound is True
    assert report.reference_accuracy == evaluate(onnx_dir, rows)["accuracy"]
    assert report.chosen.accuracy == evaluate(str(tmp_path / "int8"), rows)["accuracy"]
    assert report.chosen.accuracy_drop == round(report.reference_accuracy - report.chosen.accuracy, 6)
    assert report.message.startswith(f"dynamic int8 ({report.isa}), requested configuration: accuracy ")


def test_a_failed_attempt_is_recorded_and_the_next_one_kept(exported, tmp_path, monkeypatch):
    _, onnx_dir = exported("vit")
    real = quantize_module._quantize_once

    def first_fails(onnx_dir, file_name, output, attempt, *args):
        if attempt.reason == "requested configuration":
            raise RuntimeError("operator not supported")
        return real(onnx_dir, file_name, output, attempt, *args)

    monkeypatch.setattr(quantize_module, "_quantize_once", first_fails)
    report = quantize(onnx_dir, tmp_path / "int8", eval_dataset=make_dataset("vit", 8), max_accuracy_drop=1.0)
    failed, kept = report.attempts
    assert failed.error == "RuntimeError: operator not supported" and failed.accuracy is None
    assert kept.error is None and kept.reason == "classifier and last layer kept in float"
    assert report.chosen == kept and report.met_bound is True
    assert _read_json(tmp_path / "int8" / REPORT_NAME)["attempts"][0]["error"] == failed.error


def test_every_attempt_failing_raises(exported, tmp_path):
    _, onnx_dir = exported("hubert")
    with pytest.raises(HfSlimError, match="could not quantize") as info:
        quantize(
            onnx_dir,
            tmp_path / "int8",
            operators=OPTIMUM_DYNAMIC_OPERATORS,
            eval_dataset=make_dataset("hubert", 8),
            max_accuracy_drop=0.5,
        )
    assert "requested configuration: ValueError" in str(info.value)
    assert "classifier and last layer kept in float: ValueError" in str(info.value)
    assert os.listdir(tmp_path) == []


# -- bad requests fail before anything is written --------------------------------------------------------------------
def _calibration_without(column):
    return make_dataset("bert", num_rows=8).remove_columns(column)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": "fp16"}, "mode='fp16' is not one of dynamic, static"),
        ({"mode": "static"}, "needs calibration_dataset="),
        (
            {"mode": "static", "calibration_dataset": "calibration", "calibration_method": "kl"},
            "calibration_method='kl' is not one of minmax, percentile, entropy",
        ),
        ({"max_accuracy_drop": 0.01}, "max_accuracy_drop needs eval_dataset="),
        ({"max_accuracy_drop": -0.1, "eval_dataset": "rows"}, "max_accuracy_drop must be a number >= 0"),
        ({"max_accuracy_drop": "1%", "eval_dataset": "rows"}, "max_accuracy_drop must be a number >= 0"),
        ({"mode": "static", "calibration_dataset": "no-mask"}, r"lacks the model inputs \['attention_mask'\]"),
        ({"file_name": "other.onnx"}, "has no other.onnx"),
    ],
)
def test_bad_arguments_fail_before_writing(exported, tmp_path, kwargs, match):
    _, onnx_dir = exported("bert")
    datasets = {
        "calibration": make_dataset("bert", num_rows=8),
        "rows": make_dataset("bert", num_rows=8),
        "no-mask": _calibration_without("attention_mask"),
    }
    kwargs = {k: datasets.get(v, v) if isinstance(v, str) and k.endswith("dataset") else v for k, v in kwargs.items()}
    with pytest.raises(HfSlimError, match=match):
        quantize(onnx_dir, tmp_path / "int8", **kwargs)
    assert os.listdir(tmp_path) == []


def test_folder_without_onnx_model(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    for folder in (empty, tmp_path / "missing"):
        with pytest.raises(HfSlimError, match="holds no .onnx model; export one with hf_slim.export_onnx"):
            quantize(folder, tmp_path / "int8")
    assert sorted(os.listdir(tmp_path)) == ["empty"]


def test_folder_without_config(exported, tmp_path):
    import shutil

    _, onnx_dir = exported("vit")
    folder = tmp_path / "no-config"
    folder.mkdir()
    shutil.copy(os.path.join(onnx_dir, "model.onnx"), folder)
    with pytest.raises(HfSlimError, match="has no config.json"):
        quantize(folder, tmp_path / "int8")
    assert os.listdir(tmp_path) == ["no-config"]


def test_calibration_dataset_of_another_modality(exported, tmp_path):
    _, onnx_dir = exported("vit")
    with pytest.raises(HfSlimError, match=r"lacks the model inputs \['pixel_values'\]"):
        quantize(onnx_dir, tmp_path / "int8", mode="static", calibration_dataset=make_dataset("bert", 4))
    assert os.listdir(tmp_path) == []


def test_missing_extra(exported, tmp_path, monkeypatch):
    _, onnx_dir = exported("vit")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingDependencyError, match=r'pip install "hf-slim\[onnx\]"'):
        quantize(onnx_dir, tmp_path / "int8")
    assert os.listdir(tmp_path) == []


def test_calibration_rows_only_need_the_graph_inputs(exported, tmp_path):
    """Extra columns (labels, ids) are dropped, not fed to the graph."""
    _, onnx_dir = exported("wav2vec2")
    rows = make_dataset("wav2vec2", num_rows=6)
    rows = rows.add_column("id", [f"clip-{i}" for i in range(6)])
    assert isinstance(rows, Dataset)
    report = quantize(onnx_dir, tmp_path / "int8", mode="static", calibration_dataset=rows)
    assert report.chosen.error is None
