"""The compression report of a recipe run: one row per stage, as `report.json`, `report.md` and `tradeoff.png`.

`hf-slim run RECIPE` builds a [`StageRow`] for every model it produces (the base model, then one per stage), turns
them into a report with [`build_report`] (ratios to the first row, retention relative to the teacher/base) and writes
it with [`write_report`]. `report.json` is the source of truth: [`render_report`] (`hf-slim report DIR`) re-renders
the markdown table and the plot from it without touching any model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib.metadata
import json
import logging
import math
import numbers
import os
import platform
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import HfSlimError

logger = logging.getLogger(__name__)

REPORT_FORMAT_VERSION = 1
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
TRADEOFF_PNG = "tradeoff.png"
PLOT_INSTALL_HINT = 'pip install "hf-slim[plot]"'
# Stage names that mark the model the others are compared with, when no `reference` is given.
REFERENCE_STAGES = ("teacher", "base")
DEFAULT_BATCH_SIZES = ("1", "32")
# Metrics bounded in [0, 1] that read best as percentages.
FRACTION_METRICS = ("accuracy", "f1", "precision", "recall")
MISSING = "–"
# mkstemp creates files readable by their owner only; reports are meant to be shared.
FILE_MODE = 0o644
KIND_COLORS = {"pytorch": "tab:blue", "onnx": "tab:orange", "onnx-int8": "tab:green"}


@dataclass
class StageRow:
    """What one stage of a recipe run produced, as measured on the evaluation split.

    Args:
        stage (`str`):
            Name of the row, unique within a report, e.g. `"base"`, `"stage-1-finetune"`, `"stage-2-distill"`.
        kind (`str`):
            Runtime of the model: `"pytorch"`, `"onnx"` or `"onnx-int8"`.
        path (`str`):
            Model folder, relative to the run's output dir.
        parameters (`int`, *optional*):
            Number of parameters.
        size_bytes (`int`, *optional*):
            Size on disk of the model folder (see [`~hf_slim.size_on_disk`]).
        latency_ms (`dict[str, float]`):
            Median latency in milliseconds per batch size, keyed by the batch size as a string (`{"1": 4.2, "32":
            61.0}`); may be empty. [`latency_from_benchmark`] builds it from [`~hf_slim.benchmark_latency`] rows.
        metric_name (`str`):
            Name of the task metric, e.g. `"accuracy"`.
        metric (`float`, *optional*):
            Value of the task metric on the evaluation split.
        seconds (`float`, *optional*):
            Wall-clock time of the stage.
        notes (`str`, *optional*, defaults to `""`):
            Free text shown under the markdown table.
    """

    stage: str
    kind: str
    path: str
    parameters: int | None
    size_bytes: int | None
    latency_ms: dict[str, float]
    metric_name: str
    metric: float | None
    seconds: float | None
    notes: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StageRow:
        """Build a row from a dict, e.g. a row of `report.json` (the computed keys `speedup`, `smaller` and
        `retention` are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        missing = sorted(required - set(data))
        if missing:
            raise HfSlimError(f"A report row needs the keys {sorted(required)}; {dict(data)!r} lacks {missing}.")
        return cls(**{k: v for k, v in data.items() if k in names})


def latency_from_benchmark(rows: Iterable[Mapping[str, Any]], name: str | None = None) -> dict[str, float]:
    """The `latency_ms` of a [`StageRow`] from the rows returned by [`~hf_slim.benchmark_latency`].

    Args:
        rows (`Iterable[Mapping]`):
            Rows with `name`, `batch_size` and `median_ms`.
        name (`str`, *optional*):
            Keep only the rows of this model; needed when the rows describe several models.

    Returns:
        `dict[str, float]`: `{str(batch_size): median_ms}`.
    """
    rows = [row for row in rows if name is None or row["name"] == name]
    names = {row["name"] for row in rows}
    if len(names) > 1:
        raise HfSlimError(f"The benchmark rows describe several models {sorted(names)}; pass name= to pick one.")
    return {str(row["batch_size"]): float(row["median_ms"]) for row in rows}


def environment_info(threads: int | None = None) -> dict[str, Any]:
    """Where and with what a report was measured: platform, CPU, thread count and library versions.

    Args:
        threads (`int`, *optional*):
            Threads used for the latency measurements (default: `torch.get_num_threads()`).

    Returns:
        `dict`: `created` (UTC, ISO 8601), `platform`, `cpu`, `cpu_count`, `threads`, `python` and `versions`
        (`hf_slim`, `torch`, `transformers`, `onnxruntime`, `optimum`; `None` for what is not installed).
    """
    from .. import __version__

    if threads is None:
        try:
            import torch

            threads = torch.get_num_threads()
        except ImportError:
            threads = None
    versions = {"hf_slim": __version__}
    for package in ("torch", "transformers", "onnxruntime", "optimum"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "versions": versions,
    }


def _cpu_name() -> str | None:
    # platform.processor() is empty on most Linux systems; /proc/cpuinfo has the model name.
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or None


def build_report(
    rows: list[StageRow], reference: str | None = None, title: str = "", meta: dict | None = None
) -> dict[str, Any]:
    """Turn the measured rows of a run into a JSON-serialisable report with ratios and retention.

    Every ratio compares a row with the FIRST row (the model the run started from): `smaller` is the first row's size
    divided by this row's size, and `speedup[b]` the first row's latency at batch size `b` divided by this row's.
    `retention` is this row's metric divided by the reference row's metric. A ratio is `None` when a value it needs is
    missing (or would be divided by zero), when the metrics differ in name, or when the reference metric is not
    positive.

    Args:
        rows (`list[StageRow]`):
            One row per model, in the order of the run (dicts with the same keys are accepted too).
        reference (`str`, *optional*):
            Stage name of the row retention is relative to. Defaults to the first row whose stage is `"teacher"` or
            `"base"`, and otherwise to the first row.
        title (`str`, *optional*, defaults to `""`):
            Title of the markdown report and of the plot.
        meta (`dict`, *optional*):
            Extra information, e.g. `{"recipe": "distil-sst2", "threads": 2}`; its keys override those collected by
            [`environment_info`] (platform, CPU, threads, versions).

    Returns:
        `dict`: `format_version`, `title`, `reference` (stage name), `baseline` (stage name of the first row),
        `metric_name`, `batch_sizes` (`list[str]`, numerically sorted union of the rows' latency keys), `meta` and
        `rows`: each [`StageRow`] as a dict plus `speedup` (`dict[str, float | None]`), `smaller` and `retention`.
    """
    if isinstance(rows, (StageRow, Mapping)) or not isinstance(rows, Iterable):
        raise HfSlimError(f"build_report: rows must be a list of StageRow, got {type(rows).__name__}.")
    rows = [_normalise_row(row, i) for i, row in enumerate(rows)]
    if not rows:
        raise HfSlimError("build_report: rows is empty; a report needs at least the base model.")
    stages = [row.stage for row in rows]
    duplicates = sorted({s for s in stages if stages.count(s) > 1})
    if duplicates:
        raise HfSlimError(f"build_report: stage names must be unique, but {duplicates} appear more than once.")
    if reference is None:
        reference = next((s for s in stages if s in REFERENCE_STAGES), stages[0])
    elif reference not in stages:
        raise HfSlimError(f"build_report: reference={reference!r} is not a stage of the report; choose from {stages}.")
    if meta is not None and not isinstance(meta, Mapping):
        raise HfSlimError(f"build_report: meta must be a dict, got {type(meta).__name__}.")

    first = rows[0]
    ref = rows[stages.index(reference)]
    batch_sizes = sorted({b for row in rows for b in row.latency_ms}, key=int) or list(DEFAULT_BATCH_SIZES)
    out_rows = []
    for row in rows:
        data = dataclasses.asdict(row)
        data["speedup"] = {b: _ratio(first.latency_ms.get(b), row.latency_ms.get(b), 4) for b in batch_sizes}
        data["smaller"] = _ratio(first.size_bytes, row.size_bytes, 4)
        data["retention"] = None
        if row.metric_name == ref.metric_name and ref.metric is not None and ref.metric > 0:
            data["retention"] = _ratio(row.metric, ref.metric, 6)
        out_rows.append(data)
    metric_names = list(dict.fromkeys(row.metric_name for row in rows))
    return {
        "format_version": REPORT_FORMAT_VERSION,
        "title": str(title or ""),
        "reference": reference,
        "baseline": first.stage,
        "metric_name": metric_names[0] if len(metric_names) == 1 else None,
        "batch_sizes": batch_sizes,
        "meta": {**environment_info(), **dict(meta or {})},
        "rows": out_rows,
    }


def _normalise_row(row, index: int) -> StageRow:
    if isinstance(row, Mapping):
        row = StageRow.from_dict(row)
    if not isinstance(row, StageRow):
        raise HfSlimError(f"build_report: row {index} must be a StageRow, got {type(row).__name__}.")
    where = f"build_report: row {index} ({row.stage!r})"
    for name in ("stage", "kind", "path", "metric_name", "notes"):
        if not isinstance(getattr(row, name), str):
            raise HfSlimError(f"{where}: {name} must be a string, got {getattr(row, name)!r}.")
    if not row.stage:
        raise HfSlimError(f"build_report: row {index} has an empty stage name; name every stage.")
    latency = row.latency_ms if row.latency_ms is not None else {}
    if not isinstance(latency, Mapping):
        raise HfSlimError(f"{where}: latency_ms must be a dict such as {{'1': 4.2, '32': 61.0}}, got {latency!r}.")
    clean_latency = {}
    for key, value in latency.items():
        try:
            batch = int(key)
        except (TypeError, ValueError):
            batch = 0
        if batch < 1 or (isinstance(key, float) and key != batch):
            raise HfSlimError(f"{where}: latency_ms keys must be batch sizes such as '1' or '32', got {key!r}.")
        value = _number(value, f"{where}: latency_ms[{key!r}]")
        if value is not None:
            clean_latency[str(batch)] = float(value)
    parameters = _number(row.parameters, f"{where}: parameters")
    size = _number(row.size_bytes, f"{where}: size_bytes")
    seconds = _number(row.seconds, f"{where}: seconds")
    return dataclasses.replace(
        row,
        parameters=None if parameters is None else int(parameters),
        size_bytes=None if size is None else int(size),
        latency_ms=clean_latency,
        metric=_number(row.metric, f"{where}: metric", allow_negative=True),
        seconds=seconds,
    )


def _number(value, where: str, allow_negative: bool = False) -> float | int | None:
    """`value` as a plain number, `None` for missing or non-finite values (NaN is not valid JSON)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise HfSlimError(f"{where} must be a number or None, got {value!r}.")
    if not math.isfinite(value):
        return None
    if value < 0 and not allow_negative:
        raise HfSlimError(f"{where} must not be negative, got {value!r}.")
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def _ratio(numerator, denominator, digits: int) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return round(numerator / denominator, digits)


# Markdown


def format_markdown_table(report: Mapping[str, Any]) -> str:
    """The report's table in markdown, one row per stage; missing values are shown as `–`.

    Columns: stage | model (runtime and folder) | parameters | size MB | smaller | for each batch size, its median
    latency in ms and the speed-up | metric | retention | time s.

    Args:
        report (`dict`): A report from [`build_report`] or read from `report.json`.

    Returns:
        `str`: The table, without a trailing newline; paste it into a README as is.
    """
    _check_report(report)
    metric_name = report.get("metric_name")
    header = ["stage", "model", "parameters", "size MB", "smaller"]
    align = ["---", "---", "---:", "---:", "---:"]
    for batch in report["batch_sizes"]:
        header += [f"batch-{batch} ms", "speed-up"]
        align += ["---:", "---:"]
    header += [metric_name or "metric", "retention", "time s"]
    align += ["---:", "---:", "---:"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for row in report["rows"]:
        latency = row.get("latency_ms") or {}
        speedup = row.get("speedup") or {}
        metric = _format_metric(row.get("metric"), row.get("metric_name"))
        if metric_name is None and row.get("metric") is not None:
            metric += f" ({row.get('metric_name')})"
        cells = [
            _escape(row["stage"]),
            f"{_escape(row.get('kind') or MISSING)} `{row.get('path') or '.'}`",
            _fmt(row.get("parameters"), "{:,}"),
            _fmt(None if row.get("size_bytes") is None else row["size_bytes"] / 1e6, "{:.2f}"),
            _fmt(row.get("smaller"), "{:.2f}x"),
        ]
        for batch in report["batch_sizes"]:
            cells += [_fmt(latency.get(batch), "{:.2f}"), _fmt(speedup.get(batch), "{:.2f}x")]
        cells += [
            metric,
            _fmt(None if row.get("retention") is None else 100 * row["retention"], "{:.1f}%"),
            _fmt(row.get("seconds"), "{:.1f}"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_markdown(report: Mapping[str, Any]) -> str:
    """The whole `report.md`: title, run information, the table, how to read it, and the rows' notes."""
    _check_report(report)
    meta = dict(report.get("meta") or {})
    lines = [f"# {report.get('title') or 'Compression report'}", ""]
    info = []
    if meta.get("recipe") is not None:
        info.append(f"- **Recipe:** {_scalar(meta.pop('recipe'))}")
    hardware = [meta.pop(k, None) for k in ("platform", "cpu")]
    cpu_count, threads = meta.pop("cpu_count", None), meta.pop("threads", None)
    hardware += [f"{cpu_count} CPUs" if cpu_count is not None else None]
    hardware += [f"{threads} threads" if threads is not None else None]
    if any(h is not None for h in hardware):
        info.append("- **Hardware:** " + ", ".join(_scalar(h) for h in hardware if h is not None))
    versions = meta.pop("versions", None)
    python = meta.pop("python", None)
    if isinstance(versions, Mapping) or python is not None:
        parts = [f"{k} {v}" for k, v in (versions or {}).items() if v is not None]
        parts += [f"python {python}"] if python is not None else []
        info.append("- **Versions:** " + ", ".join(parts))
    elif versions is not None:
        info.append(f"- **Versions:** {_scalar(versions)}")
    created = meta.pop("created", None)
    for key, value in meta.items():
        info.append(f"- **{_escape(str(key))}:** {_scalar(value)}")
    if created is not None:
        info.append(f"- **Created:** {_scalar(created)}")
    if info:
        lines += info + [""]
    lines += [format_markdown_table(report), ""]

    baseline, reference = report["rows"][0]["stage"], report.get("reference")
    metric = report.get("metric_name") or "metric"
    lines.append(
        f"*smaller* and *speed-up* are relative to the first row (`{baseline}`): its size on disk, or its latency at "
        f"the same batch size, divided by the row's. *Retention* is the row's {metric} divided by that of "
        f"`{reference}`. Latencies are medians in milliseconds; size MB is bytes on disk / 10^6; "
        f"{MISSING} means not measured."
    )
    notes = [(row["stage"], row.get("notes")) for row in report["rows"] if row.get("notes")]
    if notes:
        lines += ["", "**Notes**", ""]
        lines += [f"- `{stage}`: {_escape(note)}" for stage, note in notes]
    return "\n".join(lines) + "\n"


def _fmt(value, spec: str) -> str:
    return MISSING if value is None else spec.format(value)


def _format_metric(value, name) -> str:
    if value is None:
        return MISSING
    if name in FRACTION_METRICS and 0 <= value <= 1:
        return f"{100 * value:.2f}%"
    return f"{value:.4f}"


def _escape(text: str) -> str:
    # A `|` would end the table cell, a newline the row.
    return str(text).replace("|", "\\|").replace("\n", " ")


def _scalar(value) -> str:
    if isinstance(value, (Mapping, list, tuple)):
        return _escape(json.dumps(value, default=str))
    return _escape(str(value))


def _check_report(report) -> None:
    if not isinstance(report, Mapping) or not isinstance(report.get("rows"), list) or not report["rows"]:
        raise HfSlimError(
            "Expected a report from build_report (a dict with a non-empty 'rows' list), got "
            f"{type(report).__name__}{' without rows' if isinstance(report, Mapping) else ''}."
        )
    if not isinstance(report.get("batch_sizes"), list):
        raise HfSlimError("The report has no 'batch_sizes' list; rebuild it with build_report.")


# Writing


def write_report(report: Mapping[str, Any], output_dir: str | os.PathLike) -> dict[str, str]:
    """Write `report.json`, `report.md` and `tradeoff.png` into `output_dir`, each atomically.

    Every file is written to a temporary sibling and renamed into place, so a reader never sees a half-written
    file. The plot needs matplotlib (`pip install "hf-slim[plot]"`); without it the plot is skipped with a warning.

    Args:
        report (`dict`): A report from [`build_report`].
        output_dir (`str` or `os.PathLike`): The run's output dir (created if needed).

    Returns:
        `dict[str, str]`: Paths of the files written, under the keys `json`, `markdown` and `plot` (absent when the
        plot was skipped).
    """
    from ..io import write_json_atomic

    _check_report(report)
    try:
        text = json.dumps(report, indent=2, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise HfSlimError(f"The report is not JSON-serialisable ({err}); build it with build_report.") from err
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    json_path = os.path.join(output_dir, REPORT_JSON)
    write_json_atomic(json_path, json.loads(text))
    os.chmod(json_path, FILE_MODE)
    return {"json": json_path, **_render(report, output_dir)}


def read_report(output_dir: str | os.PathLike) -> dict[str, Any]:
    """Read `report.json` from a run's output dir.

    Raises:
        [`HfSlimError`]: If there is no readable `report.json` in `output_dir`.
    """
    output_dir = os.fspath(output_dir)
    path = os.path.join(output_dir, REPORT_JSON)
    if not os.path.isfile(path):
        raise HfSlimError(f"no {REPORT_JSON} in {output_dir}; run `hf-slim run` first.")
    try:
        with open(path) as f:
            report = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise HfSlimError(f"Cannot read {path} ({err}); run `hf-slim run` again to rewrite it.") from err
    try:
        _check_report(report)
    except HfSlimError as err:
        raise HfSlimError(f"{path} is not an hf_slim report: {err}") from None
    return report


def render_report(output_dir: str | os.PathLike) -> dict[str, str]:
    """Re-render `report.md` and `tradeoff.png` from the `report.json` of a run (`hf-slim report DIR`).

    Args:
        output_dir (`str` or `os.PathLike`): The output dir of `hf-slim run`.

    Returns:
        `dict[str, str]`: Paths under the keys `json` (read, not rewritten), `markdown` and `plot` (absent when
        matplotlib is missing).

    Raises:
        [`HfSlimError`]: If `output_dir` has no `report.json`.
    """
    report = read_report(output_dir)
    output_dir = os.fspath(output_dir)
    return {"json": os.path.join(output_dir, REPORT_JSON), **_render(report, output_dir)}


def _render(report: Mapping[str, Any], output_dir: str) -> dict[str, str]:
    md_path = os.path.join(output_dir, REPORT_MD)
    _write_text_atomic(md_path, format_markdown(report))
    paths = {"markdown": md_path}
    png_path = os.path.join(output_dir, TRADEOFF_PNG)
    if plot_tradeoff(report, png_path):
        paths["plot"] = png_path
    return paths


def _write_text_atomic(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


# Plot


def plot_tradeoff(report: Mapping[str, Any], path: str | os.PathLike) -> bool:
    """Plot the metric against batch-1 latency, one labelled point per stage, and save it as a PNG atomically.

    Marker area is proportional to size on disk (hollow markers: size not measured), colour gives the runtime, and a
    dashed line marks the reference row's metric. The latency axis is logarithmic when latencies span more than 10x.
    Stages without a latency or a metric are listed under the plot instead. Uses matplotlib's Agg canvas directly,
    so the pyplot backend of the calling process is left alone.

    Args:
        report (`dict`): A report from [`build_report`].
        path (`str` or `os.PathLike`): Where to write the PNG.

    Returns:
        `bool`: `True` if the plot was written, `False` if matplotlib is not installed (a warning says how to install
        it).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.ticker import FuncFormatter, PercentFormatter
    except ImportError:
        logger.warning("matplotlib is not installed; skipping %s. Install it with: %s", path, PLOT_INSTALL_HINT)
        return False
    _check_report(report)
    path = os.fspath(path)
    rows = report["rows"]
    batch_sizes = report["batch_sizes"]
    # Batch 1 when measured: it is the latency a single request sees.
    batch = "1" if "1" in batch_sizes else batch_sizes[0]
    metric_name = report.get("metric_name") or "metric"
    points = [
        row for row in rows if (row.get("latency_ms") or {}).get(batch) is not None and row.get("metric") is not None
    ]
    skipped = [row["stage"] for row in rows if row not in points]

    fig = Figure(figsize=(8, 5.2), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(report.get("title") or f"{metric_name} vs latency")
    ax.set_xlabel(f"latency at batch size {batch} (ms, median; lower is better)")
    ax.set_ylabel(f"{metric_name} (higher is better)")
    ax.grid(True, alpha=0.3, which="both")
    if metric_name in FRACTION_METRICS:
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))

    max_area, min_area = 1200.0, 25.0
    sizes = [row["size_bytes"] for row in points if row.get("size_bytes")]
    largest = max(sizes) if sizes else None
    areas = []
    for row in points:
        size = row.get("size_bytes")
        # Proportional to size; the floor keeps a model 50x smaller than the largest visible.
        area = max(min_area, max_area * size / largest) if size and largest else 200.0
        areas.append(area)
        color = KIND_COLORS.get(row.get("kind"), "tab:purple")
        ax.scatter(
            [row["latency_ms"][batch]],
            [row["metric"]],
            s=area,
            color=color if size else "none",
            edgecolors=color,
            linewidths=1.5,
            alpha=0.75 if size else 1.0,
            zorder=3,
        )

    reference = next((row for row in rows if row["stage"] == report.get("reference")), None)
    handles = [
        Line2D([], [], marker="o", ls="", color=KIND_COLORS.get(kind, "tab:purple"), markersize=8, label=kind)
        for kind in dict.fromkeys(row.get("kind") for row in points)
    ]
    if reference is not None and reference.get("metric") is not None:
        ax.axhline(reference["metric"], ls="--", color="0.4", lw=1, zorder=1)
        handles.append(Line2D([], [], ls="--", color="0.4", lw=1, label=f"{reference['stage']} {metric_name}"))
    if largest:
        # markersize is a diameter in points, scatter's area is in points², so this marker has area max_area.
        # A legend marker of area max_area / 4, i.e. a quarter of the largest model.
        size_handle = Line2D([], [], marker="o", ls="", color="0.6", alpha=0.6, markersize=math.sqrt(max_area / 4))
        size_handle.set_label(f"marker area ∝ size on disk\n(this one: {largest / 4e6:.3g} MB)")
        handles.append(size_handle)
    if any(not row.get("size_bytes") for row in points):
        handles.append(Line2D([], [], marker="o", ls="", mfc="none", color="0.3", label="size not measured"))

    if points:
        xs = [row["latency_ms"][batch] for row in points]
        if max(xs) > 10 * min(xs):
            ax.set_xscale("log")
            # Plain numbers (0.2, 0.5, 1, 2, 5...) read better than 2×10⁻¹ for milliseconds.
            ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            ax.xaxis.set_minor_formatter(FuncFormatter(_log_minor_label))
        ax.margins(x=0.18, y=0.22)
        _place_labels(fig, ax, points, batch, areas)
        if handles:
            ax.legend(handles=handles, loc="best", fontsize=8, labelspacing=1.2, borderpad=0.8, framealpha=0.85)
    else:
        ax.text(0.5, 0.5, "no stage has both a latency and a metric", ha="center", va="center", transform=ax.transAxes)
    if skipped:
        # Anchored under the x label, as a child of the axes, so the constrained layout makes room for it.
        ax.annotate(
            "not plotted (no latency or metric): " + ", ".join(skipped),
            xy=(0, 0),
            xycoords=ax.xaxis.label,
            xytext=(0, -4),
            textcoords="offset points",
            ha="left",
            va="top",
            fontsize=7,
            color="0.3",
            annotation_clip=False,
        )

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".png", dir=directory)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    return True


def _place_labels(fig, ax, points, batch, areas) -> None:
    """Annotate every point with its stage name, greedily choosing, per point, the offset whose label overlaps the
    least with the labels already placed, the other markers and the area outside the axes."""
    fig.canvas.draw()  # fixes the limits and transforms, so label extents can be measured
    renderer = fig.canvas.get_renderer()
    to_display = ax.transData.transform
    axes_box = ax.get_window_extent(renderer)
    px_per_pt = fig.dpi / 72
    markers = []
    for row, area in zip(points, areas, strict=True):
        x, y = to_display((row["latency_ms"][batch], row["metric"]))
        radius = math.sqrt(area) / 2 * px_per_pt
        markers.append((x - radius, y - radius, x + radius, y + radius))
    placed = []
    directions = [(1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]
    order = sorted(range(len(points)), key=lambda i: -areas[i])
    for i in order:
        row = points[i]
        xy = (row["latency_ms"][batch], row["metric"])
        radius_pt = math.sqrt(areas[i]) / 2
        best = None
        for scale in (1.0, 2.2, 3.6):
            for dx, dy in directions:
                # The label's near corner (diagonals) or edge (axial) sits just outside the marker's circle.
                distance = (radius_pt / math.sqrt(2) if dx and dy else radius_pt) + 3 + (scale - 1) * 12
                offset = (dx * distance, dy * distance)
                label = ax.annotate(
                    row["stage"],
                    xy,
                    xytext=offset,
                    textcoords="offset points",
                    ha={1: "left", -1: "right", 0: "center"}[dx],
                    va={1: "bottom", -1: "top", 0: "center"}[dy],
                    fontsize=8,
                    zorder=4,
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.7},
                    arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6} if scale > 1 else None,
                )
                box = label.get_window_extent(renderer)
                extent = (box.x0, box.y0, box.x1, box.y1)
                cost = sum(_overlap(extent, other) for other in placed) * 3
                cost += sum(_overlap(extent, m) for j, m in enumerate(markers) if j != i)
                cost += box.width * box.height - _overlap(extent, (axes_box.x0, axes_box.y0, axes_box.x1, axes_box.y1))
                cost += scale  # prefer labels next to their point
                if best is None or cost < best[0]:
                    if best is not None:
                        best[1].remove()
                    best = (cost, label, extent)
                else:
                    label.remove()
            if best[0] < scale + 1:
                break
        placed.append(best[2])


def _log_minor_label(value: float, _) -> str:
    # Label the 2s and 5s of every decade; leave the other minor ticks blank.
    mantissa = value / 10 ** math.floor(math.log10(value) + 1e-9)
    return f"{value:g}" if round(mantissa, 6) in (2, 5) else ""


def _overlap(a, b) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, width) * max(0.0, height)
