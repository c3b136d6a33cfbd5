"""int8 quantization with ONNX Runtime through Optimum's `ORTQuantizer`, with the accuracy measured, not assumed."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import shutil
import tempfile

from ..architectures import get_adapter
from ..errors import HfSlimError
from ..io import atomic_directory
from ._deps import require_onnx
from .onnx import PREPROCESSOR_FILES, onnx_files, pick_onnx_file

logger = logging.getLogger(__name__)

MODES = ("dynamic", "static")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
REPORT_NAME = "quantization_report.json"


def detect_isa() -> str:
    """The instruction set `AutoQuantizationConfig` should target: avx512_vnni, avx512, avx2 or arm64."""
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        return "arm64"
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags.update(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    if "avx512_vnni" in flags or "avx512vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    return "avx2"


@dataclasses.dataclass
class QuantizationAttempt:
    mode: str
    per_channel: bool
    operators: list[str] | None
    exclude_nodes: list[str]
    reason: str
    accuracy: float | None = None
    accuracy_drop: float | None = None
    error: str | None = None


@dataclasses.dataclass
class QuantizationReport:
    """What [`quantize`] did: the configuration kept, every attempt and why, and the measured accuracy."""

    output_dir: str
    file_name: str
    isa: str
    chosen: QuantizationAttempt
    attempts: list[QuantizationAttempt]
    reference_accuracy: float | None = None
    max_accuracy_drop: float | None = None
    met_bound: bool | None = None
    message: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _config_json(onnx_dir: str) -> dict:
    path = os.path.join(onnx_dir, "config.json")
    if not os.path.isfile(path):
        raise HfSlimError(f"{onnx_dir} has no config.json; export the model with hf_slim.export_onnx first.")
    with open(path) as f:
        return json.load(f)


def default_operators(onnx_dir: str) -> list[str] | None:
    """Operator types to quantize for the exported architecture (from the adapter registry), or None."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(onnx_dir)
    try:
        operators = get_adapter(config).quantize_operators
    except HfSlimError:
        return None
    return list(operators) if operators else None


def sensitive_nodes(onnx_path: str, num_layers: int | None, last_layers: int = 1) -> list[str]:
    """Names of the nodes most sensitive to int8: the classification head and the last `last_layers` layers."""
    import onnx

    graph = onnx.load(onnx_path, load_external_data=False).graph
    layer_markers = []
    if num_layers:
        for layer in range(max(0, num_layers - last_layers), num_layers):
            layer_markers += [f"/layer.{layer}/", f"/layers.{layer}/"]
    head_markers = ("/classifier", "/projector", "/pooler", "/pre_classifier")
    names = []
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm", "Conv", "Gather"):
            continue
        if any(m in node.name for m in head_markers) or any(m in node.name for m in layer_markers):
            names.append(node.name)
    return names


def _quantize_once(onnx_dir, file_name, output, attempt, isa, calibration_dataset, calibration_method, batch_size):
    optimum_ort, _, _, _ = require_onnx()
    from optimum.onnxruntime.configuration import AutoCalibrationConfig, AutoQuantizationConfig

    quantizer = optimum_ort.ORTQuantizer.from_pretrained(onnx_dir, file_name=file_name)
    kwargs = {"is_static": attempt.mode == "static", "per_channel": attempt.per_channel}
    if attempt.operators:
        kwargs["operators_to_quantize"] = list(attempt.operators)
    if attempt.exclude_nodes:
        excluded = list(attempt.exclude_nodes)
        if attempt.mode == "dynamic":
            # Dynamic quantization first rewrites every Gemm as MatMul + Add under new names.
            excluded += [f"{n}_{suffix}" for n in attempt.exclude_nodes if "Gemm" in n for suffix in ("MatMul", "Add")]
        kwargs["nodes_to_exclude"] = excluded
    qconfig = getattr(AutoQuantizationConfig, isa)(**kwargs)
    if attempt.mode == "static" and "Where" in qconfig.operators_to_quantize:
        # Calibrating `Where` sees the attention-mask fill value (float32 min): histogram calibration overflows and
        # min-max ranges become useless.
        qconfig.operators_to_quantize = [op for op in qconfig.operators_to_quantize if op != "Where"]
    ranges = None
    if attempt.mode == "static":
        if calibration_method == "minmax":
            calibration = AutoCalibrationConfig.minmax(calibration_dataset)
        elif calibration_method == "percentile":
            calibration = AutoCalibrationConfig.percentiles(calibration_dataset)
        else:
            calibration = AutoCalibrationConfig.entropy(calibration_dataset)
        with tempfile.TemporaryDirectory() as work:
            ranges = quantizer.fit(
                dataset=calibration_dataset,
                calibration_config=calibration,
                operators_to_quantize=qconfig.operators_to_quantize,
                onnx_augmented_model_name=os.path.join(work, "augmented_model.onnx"),
                batch_size=batch_size,
            )
    quantizer.quantize(quantization_config=qconfig, save_dir=output, calibration_tensors_range=ranges)


def quantize(
    onnx_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    mode: str = "dynamic",
    calibration_dataset=None,
    per_channel: bool = True,
    operators: list[str] | None = None,
    exclude_nodes: list[str] | None = None,
    eval_dataset=None,
    max_accuracy_drop: float | None = None,
    metric: str = "accuracy",
    calibration_method: str = "minmax",
    num_calibration_samples: int = 256,
    file_name: str | None = None,
    strict: bool = False,
) -> QuantizationReport:
    """Quantize an exported ONNX model to int8 with ONNX Runtime, optionally checking the accuracy it keeps.

    The configuration is Optimum's `AutoQuantizationConfig` for this machine's instruction set ([`detect_isa`]:
    avx512_vnni, avx512, avx2 or arm64). Operators default per architecture (adapter registry): Wav2Vec2/HuBERT
    quantize only `MatMul` (the weight-normed positional convolution breaks the default config), ViT/DeiT leave
    `Conv` in float (int8 Conv becomes ConvInteger).

    With `eval_dataset` and `max_accuracy_drop`, the quantized model is evaluated against the fp32 ONNX model on
    the same data. If the drop exceeds the bound, safer configurations are tried in turn (per-channel weights,
    excluding the classification head and the last layer, dynamic instead of static) and the first within the bound
    is kept; every attempt and the reason for it is in the returned report and in `quantization_report.json`. If
    none meets the bound, the most accurate is kept and the report says so plainly (or, with `strict=True`, an
    [`HfSlimError`] is raised and nothing is written).

    Args:
        onnx_dir (`str`): Folder from [`export_onnx`].
        output_dir (`str`): Where the quantized model (`model_quantized.onnx`), `config.json` and the preprocessor
            files are written (atomically).
        mode (`str`, defaults to `"dynamic"`): `"dynamic"` (activations quantized at run time) or `"static"`
            (calibrated ranges; needs `calibration_dataset`).
        calibration_dataset (`datasets.Dataset`, *optional*): Preprocessed rows for static calibration (model input
            columns; other columns are dropped). At most `num_calibration_samples` rows are used.
        per_channel (`bool`, defaults to `True`): Per-channel weight scales.
        operators (`list[str]`, *optional*): ONNX operator types to quantize (default: per architecture).
        exclude_nodes (`list[str]`, *optional*): Node names kept in float.
        eval_dataset (`datasets.Dataset`, *optional*): Preprocessed rows with labels, to measure the accuracy.
        max_accuracy_drop (`float`, *optional*): Largest allowed drop of `metric` (absolute, e.g. 0.01 = 1 point).
        metric (`str`, defaults to `"accuracy"`): Metric for the check.
        calibration_method (`str`, defaults to `"minmax"`): `"minmax"`, `"percentile"` or `"entropy"`.
        file_name (`str`, *optional*): The `.onnx` file in `onnx_dir` (default: the only one / `model.onnx`).
        strict (`bool`, defaults to `False`): Raise instead of keeping the best attempt when none meets the bound.
    """
    require_onnx()
    onnx_dir = str(onnx_dir)
    if not os.path.isdir(onnx_dir) or not onnx_files(onnx_dir):
        raise HfSlimError(f"{onnx_dir} holds no .onnx model; export one with hf_slim.export_onnx(model, dir) first.")
    config = _config_json(onnx_dir)
    file_name = pick_onnx_file(onnx_dir, file_name)
    if mode not in MODES:
        raise HfSlimError(f"mode={mode!r} is not one of {', '.join(MODES)}.")
    if calibration_method not in CALIBRATION_METHODS:
        raise HfSlimError(f"calibration_method={calibration_method!r} is not one of {', '.join(CALIBRATION_METHODS)}.")
    if mode == "static" and calibration_dataset is None:
        raise HfSlimError("mode='static' needs calibration_dataset= (preprocessed rows of model inputs).")
    if max_accuracy_drop is not None:
        if eval_dataset is None:
            raise HfSlimError("max_accuracy_drop needs eval_dataset= to measure the quantized model's accuracy.")
        if not isinstance(max_accuracy_drop, (int, float)) or max_accuracy_drop < 0:
            raise HfSlimError(f"max_accuracy_drop must be a number >= 0, got {max_accuracy_drop!r}.")

    import onnxruntime

    os.makedirs(os.path.dirname(os.path.abspath(output_dir)), exist_ok=True)
    session = onnxruntime.InferenceSession(os.path.join(onnx_dir, file_name), providers=["CPUExecutionProvider"])
    input_names = [i.name for i in session.get_inputs()]
    del session
    if calibration_dataset is not None:
        if "token_type_ids" in input_names and "token_type_ids" not in calibration_dataset.column_names:
            # Tokenizers of single-sentence tasks often omit them; the exported BERT graph still takes them.
            calibration_dataset = calibration_dataset.map(
                lambda row: {"token_type_ids": [0] * len(row["input_ids"])}, desc="Adding token_type_ids"
            )
        missing = [n for n in input_names if n not in calibration_dataset.column_names]
        if missing:
            raise HfSlimError(
                f"calibration_dataset lacks the model inputs {missing} (columns: {calibration_dataset.column_names})."
            )
        calibration_dataset = calibration_dataset.select_columns(input_names)
        calibration_dataset = calibration_dataset.select(range(min(num_calibration_samples, len(calibration_dataset))))

    isa = detect_isa()
    operators = list(operators) if operators else default_operators(onnx_dir)
    requested = QuantizationAttempt(mode, per_channel, operators, list(exclude_nodes or []), "requested configuration")
    candidates = [requested]
    if max_accuracy_drop is not None:
        num_layers = config.get("num_hidden_layers", config.get("n_layers"))
        sensitive = sensitive_nodes(os.path.join(onnx_dir, file_name), num_layers)
        excluded = sorted(set(requested.exclude_nodes) | set(sensitive))
        if not per_channel:
            candidates.append(
                QuantizationAttempt(mode, True, operators, requested.exclude_nodes, "per-channel weights")
            )
        candidates.append(
            QuantizationAttempt(mode, True, operators, excluded, "classifier and last layer kept in float")
        )
        if mode == "static":
            candidates.append(QuantizationAttempt("dynamic", True, operators, excluded, "dynamic instead of static"))

    reference = None
    if max_accuracy_drop is not None:
        from ..evaluation import evaluate

        reference = evaluate(onnx_dir, eval_dataset, metric=metric, file_name=file_name)[metric]

    attempts: list[QuantizationAttempt] = []
    best = None
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(output_dir)) or None) as work:
        for index, attempt in enumerate(candidates):
            out = os.path.join(work, f"attempt-{index}")
            try:
                _quantize_once(onnx_dir, file_name, out, attempt, isa, calibration_dataset, calibration_method, 1)
            except Exception as err:  # e.g. an operator ONNX Runtime cannot quantize in this graph
                attempt.error = f"{type(err).__name__}: {err}"
                attempts.append(attempt)
                logger.warning("Quantization attempt %r failed: %s", attempt.reason, attempt.error)
                continue
            for name in ("config.json", *PREPROCESSOR_FILES):
                if os.path.isfile(os.path.join(onnx_dir, name)) and not os.path.exists(os.path.join(out, name)):
                    shutil.copy2(os.path.join(onnx_dir, name), out)
            attempts.append(attempt)
            if max_accuracy_drop is None:
                best = (attempt, out)
                break
            from ..evaluation import evaluate

            attempt.accuracy = evaluate(out, eval_dataset, metric=metric)[metric]
            attempt.accuracy_drop = round(reference - attempt.accuracy, 6)
            if best is None or attempt.accuracy > best[0].accuracy:
                best = (attempt, out)
            if attempt.accuracy_drop <= max_accuracy_drop:
                best = (attempt, out)
                break
        if best is None:
            errors = "; ".join(f"{a.reason}: {a.error}" for a in attempts)
            raise HfSlimError(f"ONNX Runtime could not quantize {onnx_dir}: {errors}")
        chosen, out = best
        met = None if max_accuracy_drop is None else chosen.accuracy_drop <= max_accuracy_drop
        if max_accuracy_drop is None:
            message = f"{chosen.mode} int8 ({isa}); accuracy not checked (pass eval_dataset and max_accuracy_drop)."
        elif met:
            message = (
                f"{chosen.mode} int8 ({isa}), {chosen.reason}: {metric} {chosen.accuracy:.4f} vs {reference:.4f} "
                f"fp32 (drop {chosen.accuracy_drop:.4f} <= {max_accuracy_drop})."
            )
        else:
            message = (
                f"No configuration kept the {metric} drop within {max_accuracy_drop}: the best ({chosen.reason}) "
                f"scores {chosen.accuracy:.4f} vs {reference:.4f} fp32 (drop {chosen.accuracy_drop:.4f})."
            )
            if strict:
                raise HfSlimError(message + " Nothing was written (strict=True).")
            logger.warning(message)
        quantized = onnx_files(out)[0]
        report = QuantizationReport(
            output_dir=str(output_dir),
            file_name=quantized,
            isa=isa,
            chosen=chosen,
            attempts=attempts,
            reference_accuracy=reference,
            max_accuracy_drop=max_accuracy_drop,
            met_bound=met,
            message=message,
        )
        with open(os.path.join(out, REPORT_NAME), "w") as f:
            json.dump(report.to_dict(), f, indent=2)
        with atomic_directory(output_dir) as tmp:
            for name in os.listdir(out):
                shutil.move(os.path.join(out, name), os.path.join(tmp, name))
    logger.info(message)
    return report
