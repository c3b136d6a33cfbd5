import json
import logging
import math
import os
import sys

import pytest

from hf_slim.errors import HfSlimError
from hf_slim.recipes.report import (
    PLOT_INSTALL_HINT,
    StageRow,
    build_report,
    format_markdown_table,
    latency_from_benchmark,
    render_report,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_rows():
    return [
        StageRow("base", "pytorch", "base", 136_138, 560_000, {"1": 3.0, "32": 20.0}, "accuracy", 0.975, 25.0),
        StageRow("stage-1-distill", "pytorch", "stage-1-distill", 69_194, 280_000, {"1": 1.5, "32": 8.0},
                 "accuracy", 0.9725, 21.4),
        StageRow("stage-2-quantize", "onnx-int8", "stage-2-quantize", 69_194, 80_000, {"1": 0.6, "32": 2.5},
                 "accuracy", 0.96, 3.2, notes="dynamic int8 | avx2"),
    ]  # fmt: skip


def by_stage(report):
    return {row["stage"]: row for row in report["rows"]}


def test_ratios_and_retention_match_hand_computed_values():
    report = build_report(make_rows(), title="quickstart", meta={"recipe": "quickstart", "threads": 2})
    rows = by_stage(report)
    assert report["reference"] == report["baseline"] == "base"
    assert report["batch_sizes"] == ["1", "32"]
    assert report["metric_name"] == "accuracy"
    assert rows["base"]["speedup"] == {"1": 1.0, "32": 1.0}
    assert rows["base"]["smaller"] == 1.0 and rows["base"]["retention"] == 1.0
    assert rows["stage-1-distill"]["speedup"] == {"1": pytest.approx(2.0), "32": pytest.approx(2.5)}
    assert rows["stage-1-distill"]["smaller"] == pytest.approx(2.0)
    assert rows["stage-1-distill"]["retention"] == pytest.approx(0.9725 / 0.975, abs=1e-6)
    assert rows["stage-2-quantize"]["speedup"] == {"1": pytest.approx(5.0), "32": pytest.approx(8.0)}
    assert rows["stage-2-quantize"]["smaller"] == pytest.approx(7.0)
    assert rows["stage-2-quantize"]["retention"] == pytest.approx(0.96 / 0.975, abs=1e-6)
    # Environment collected, caller's meta wins.
    assert report["meta"]["recipe"] == "quickstart" and report["meta"]["threads"] == 2
    assert report["meta"]["cpu_count"] == os.cpu_count()
    assert {"hf_slim", "torch", "transformers", "onnxruntime"} <= set(report["meta"]["versions"])


def test_reference_defaults_to_teacher_then_first_row_and_can_be_chosen():
    rows = make_rows()
    rows[0].stage = "student-init"
    rows[1].stage = "teacher"
    report = build_report(rows)
    # Ratios stay relative to the first row; retention follows the teacher.
    assert report["baseline"] == "student-init" and report["reference"] == "teacher"
    assert by_stage(report)["teacher"]["retention"] == 1.0
    assert by_stage(report)["student-init"]["retention"] == pytest.approx(0.975 / 0.9725, abs=1e-6)
    assert by_stage(report)["teacher"]["smaller"] == pytest.approx(2.0)

    rows[1].stage = "stage-1"
    assert build_report(rows)["reference"] == "student-init"
    chosen = build_report(rows, reference="stage-2-quantize")
    assert chosen["reference"] == "stage-2-quantize"
    assert by_stage(chosen)["stage-2-quantize"]["retention"] == 1.0


def test_missing_values_give_none_ratios():
    rows = make_rows()
    rows[1] = StageRow("stage-1-prune", "pytorch", "p", None, None, {"1": 1.5}, "accuracy", None, None)
    rows[2].latency_ms = {}
    rows[2].size_bytes = 0
    rows.append(StageRow("stage-3-evaluate", "onnx", "e", 10, 100, {"1": 1.0, "8": 4.0}, "accuracy", math.nan, 1.0))
    report = build_report(rows)
    out = by_stage(report)
    assert report["batch_sizes"] == ["1", "8", "32"]
    assert out["stage-1-prune"]["speedup"] == {"1": pytest.approx(2.0), "8": None, "32": None}
    assert out["stage-1-prune"]["smaller"] is None and out["stage-1-prune"]["retention"] is None
    assert out["stage-2-quantize"]["speedup"] == {"1": None, "8": None, "32": None}
    assert out["stage-2-quantize"]["smaller"] is None  # size 0: no division by zero
    assert out["stage-3-evaluate"]["metric"] is None  # NaN is not valid JSON
    assert out["base"]["speedup"]["8"] is None  # the first row was not measured at batch 8
    json.dumps(report, allow_nan=False)

    table = format_markdown_table(report)
    assert "| stage-1-prune | pytorch `p` | – | – | – | 1.50 | 2.00x | – | – | – | – | – | – | – |" in table
    assert "| stage-2-quantize | onnx-int8 `stage-2-quantize` | 69,194 | 0.00 | – | – | – | – | – | – | – |" in table


def test_retention_needs_a_positive_reference_metric_of_the_same_name():
    rows = make_rows()
    rows[1].metric_name = "f1"
    report = build_report(rows)
    assert report["metric_name"] is None
    assert by_stage(report)["stage-1-distill"]["retention"] is None
    assert by_stage(report)["stage-2-quantize"]["retention"] == pytest.approx(0.96 / 0.975, abs=1e-6)
    assert "97.25% (f1)" in format_markdown_table(report)

    rows = make_rows()
    rows[0].metric = None
    assert all(row["retention"] is None for row in build_report(rows)["rows"])
    rows[0].metric = -0.1  # e.g. Matthews correlation
    assert all(row["retention"] is None for row in build_report(rows)["rows"])


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda rows: rows.clear(), "empty"),
        (lambda rows: setattr(rows[1], "stage", "base"), "unique"),
        (lambda rows: setattr(rows[1], "latency_ms", {"batch-1": 2.0}), "batch sizes"),
        (lambda rows: setattr(rows[1], "size_bytes", -5), "must not be negative"),
        (lambda rows: setattr(rows[1], "metric", "high"), "must be a number"),
        (lambda rows: rows.append("not a row"), "must be a StageRow"),
    ],
)
def test_invalid_rows_raise_clear_errors(change, match):
    rows = make_rows()
    change(rows)
    with pytest.raises(HfSlimError, match=match):
        build_report(rows)


def test_unknown_reference_raises():
    with pytest.raises(HfSlimError, match=r"reference='teacher' is not a stage"):
        build_report(make_rows(), reference="teacher")


def test_markdown_has_one_row_per_stage_and_the_right_numbers():
    table = format_markdown_table(build_report(make_rows()))
    lines = table.splitlines()
    assert lines[0] == (
        "| stage | model | parameters | size MB | smaller | batch-1 ms | speed-up | batch-32 ms | speed-up | accuracy "
        "| retention | time s |"
    )
    assert len(lines) == 2 + 3
    assert lines[2] == (
        "| base | pytorch `base` | 136,138 | 0.56 | 1.00x | 3.00 | 1.00x | 20.00 | 1.00x | 97.50% | 100.0% | 25.0 |"
    )
    assert lines[3] == (
        "| stage-1-distill | pytorch `stage-1-distill` | 69,194 | 0.28 | 2.00x | 1.50 | 2.00x | 8.00 | 2.50x | 97.25% "
        "| 99.7% | 21.4 |"
    )
    assert lines[4].startswith("| stage-2-quantize | onnx-int8 `stage-2-quantize` | 69,194 | 0.08 | 7.00x | 0.60 |")
    assert all(line.count("|") == lines[0].count("|") for line in lines)


def test_write_report_files_round_trip_and_render(tmp_path):
    report = build_report(make_rows(), title="quickstart: ViT teacher → int8 student", meta={"recipe": "quickstart"})
    paths = write_report(report, tmp_path / "run")
    out = tmp_path / "run"
    assert paths == {
        "json": str(out / "report.json"),
        "markdown": str(out / "report.md"),
        "plot": str(out / "tradeoff.png"),
    }
    # Atomic writes leave no temporary files behind.
    assert sorted(os.listdir(out)) == ["report.json", "report.md", "tradeoff.png"]
    for path in paths.values():
        assert os.stat(path).st_mode & 0o777 == 0o644

    with open(paths["json"]) as f:
        assert json.load(f) == report

    png = (out / "tradeoff.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000

    markdown = (out / "report.md").read_text()
    assert markdown.startswith("# quickstart: ViT teacher → int8 student\n")
    assert "- **Recipe:** quickstart" in markdown
    assert format_markdown_table(report) in markdown
    assert "relative to the first row (`base`)" in markdown and "that of `base`" in markdown
    assert "- `stage-2-quantize`: dynamic int8 \\| avx2" in markdown

    os.remove(out / "report.md")
    os.remove(out / "tradeoff.png")
    rendered = render_report(out)
    assert rendered == paths
    assert (out / "report.md").read_text() == markdown
    assert (out / "tradeoff.png").read_bytes().startswith(PNG_MAGIC)
    assert sorted(os.listdir(out)) == ["report.json", "report.md", "tradeoff.png"]


def test_rows_of_a_report_rebuild_the_same_report():
    report = build_report(make_rows())
    rebuilt = build_report([StageRow.from_dict(row) for row in report["rows"]], meta=report["meta"])
    assert rebuilt == report


def test_render_report_without_report_json_raises(tmp_path):
    with pytest.raises(HfSlimError, match=r"no report.json in .*; run `hf-slim run` first"):
        render_report(tmp_path)
    (tmp_path / "report.json").write_text("{not json")
    with pytest.raises(HfSlimError, match="Cannot read"):
        render_report(tmp_path)
    (tmp_path / "report.json").write_text('{"rows": []}')
    with pytest.raises(HfSlimError, match="not an hf_slim report"):
        render_report(tmp_path)


def test_failed_plot_leaves_previous_files_and_no_temp_files(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    write_report(build_report(make_rows()), tmp_path)
    before = (tmp_path / "tradeoff.png").read_bytes()

    def broken_savefig(self, *args, **kwargs):
        with open(args[0], "wb") as f:
            f.write(b"half a png")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        render_report(tmp_path)
    assert (tmp_path / "tradeoff.png").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["report.json", "report.md", "tradeoff.png"]


def test_missing_matplotlib_skips_the_plot_with_a_hint(tmp_path, monkeypatch, caplog):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib...` raise ImportError
    with caplog.at_level(logging.WARNING, logger="hf_slim.recipes.report"):
        paths = write_report(build_report(make_rows()), tmp_path)
    assert "plot" not in paths
    assert sorted(os.listdir(tmp_path)) == ["report.json", "report.md"]
    assert PLOT_INSTALL_HINT in caplog.text


def test_plot_without_plottable_points(tmp_path):
    rows = [StageRow("base", "pytorch", "base", None, None, {}, "accuracy", None, None)]
    paths = write_report(build_report(rows), tmp_path)
    assert open(paths["plot"], "rb").read(8) == PNG_MAGIC
    assert "| base | pytorch `base` | – | – | – | – | – | – | – | – | – | – |" in open(paths["markdown"]).read()


def test_latency_from_benchmark_rows():
    rows = [
        {"name": "pytorch", "batch_size": 1, "median_ms": 3.0},
        {"name": "int8", "batch_size": 1, "median_ms": 0.6},
        {"name": "pytorch", "batch_size": 32, "median_ms": 20.0},
    ]
    assert latency_from_benchmark(rows, "pytorch") == {"1": 3.0, "32": 20.0}
    assert latency_from_benchmark(rows[1:2]) == {"1": 0.6}
    with pytest.raises(HfSlimError, match="several models"):
        latency_from_benchmark(rows)
