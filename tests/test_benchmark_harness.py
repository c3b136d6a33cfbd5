"""The benchmark harness (`benchmarks/common.py`) and the BENCHMARKS.md writer (`benchmarks/write_markdown.py`).

The benchmark scripts themselves run for tens of minutes on real data and are not part of the tests; what every
published number goes through is: row caching by settings, and the rendering of reports into tables.
"""

import json
import os
import sys

import pytest
import torch

from hf_slim.recipes.report import StageRow, build_report

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


@pytest.fixture
def harness(monkeypatch):
    monkeypatch.syspath_prepend(BENCHMARKS)
    import common
    import write_markdown

    return common, write_markdown


# -- Benchmark.stage: cached by settings, rebuilt when they or a parent change, atomic ------------------------------
def test_stage_is_cached_by_settings_and_rebuilt_when_they_or_a_parent_change(harness, tmp_path):
    common, _ = harness
    calls = []

    def build(name, content):
        def _build(tmp):
            calls.append(name)
            with open(os.path.join(tmp, "model.txt"), "w") as f:
                f.write(content)
            return {"extra": content}

        return _build

    def run(teacher_lr, student_epochs):
        bench = common.Benchmark(str(tmp_path), threads=torch.get_num_threads())
        bench.stage("teacher", "pytorch", {"lr": teacher_lr}, build("teacher", f"t{teacher_lr}"))
        bench.stage("student", "pytorch", {"epochs": student_epochs}, build("student", "s"), after=["teacher"])
        return bench

    run(1e-3, 3)
    assert calls == ["teacher", "student"]
    bench = run(1e-3, 3)  # same settings: nothing rebuilt, results read back from results.json
    assert calls == ["teacher", "student"]
    assert bench.results["teacher"]["extra"] == "t0.001"
    assert bench.order == ["teacher", "student"]
    run(1e-3, 4)  # only the student's settings changed
    assert calls == ["teacher", "student", "student"]
    run(2e-3, 4)  # the teacher changed: the student, built from it, is rebuilt too
    assert calls == ["teacher", "student", "student", "teacher", "student"]
    with open(tmp_path / "teacher" / "model.txt") as f:
        assert f.read() == "t0.002"


def test_failed_stage_leaves_no_folder_and_no_cache_entry(harness, tmp_path):
    common, _ = harness
    bench = common.Benchmark(str(tmp_path), threads=torch.get_num_threads())

    def broken(tmp):
        with open(os.path.join(tmp, "half-written.bin"), "w") as f:
            f.write("x")
        raise RuntimeError("training diverged")

    with pytest.raises(RuntimeError, match="training diverged"):
        bench.stage("teacher", "pytorch", {"lr": 1.0}, broken)
    assert not (tmp_path / "teacher").exists()
    assert [p for p in os.listdir(tmp_path) if p != "results.json"] == []
    assert "teacher" not in common.Benchmark(str(tmp_path), threads=torch.get_num_threads()).results


def test_stale_temporary_folders_are_removed(harness, tmp_path):
    common, _ = harness
    (tmp_path / ".teacher.tmp-abc").mkdir()
    (tmp_path / ".teacher.old-def").mkdir()
    (tmp_path / "teacher").mkdir()
    common.Benchmark(str(tmp_path), threads=torch.get_num_threads())
    assert sorted(os.listdir(tmp_path)) == ["teacher"]


# -- write_markdown: tables from report.json ---------------------------------------------------------------------
def write_run(directory, seed, accuracies, latency, sizes, validation=None, plot=True, breakdown=False):
    """A report.json as `Benchmark.finish` writes it (rows: teacher first)."""
    os.makedirs(directory, exist_ok=True)
    rows = [
        StageRow(
            stage=name,
            kind="onnx-int8" if name.endswith("int8") else "pytorch",
            path=name,
            parameters=None,
            size_bytes=sizes[name],
            latency_ms={"1": latency[name], "32": 10 * latency[name]},
            metric_name="accuracy",
            metric=acc,
            seconds=60.0,
        )  # fmt: skip
        for name, acc in accuracies.items()
    ]
    report = build_report(rows, reference="teacher", title="t", meta={"threads": 2, "command": "python x.py"})
    report["stages"] = {
        name: {"config": {"args": {"seed": seed}}, **({"validation_accuracy": v} if v is not None else {})}
        for name, v in ((n, (validation or {}).get(n)) for n in accuracies)
    }
    with open(os.path.join(directory, "report.json"), "w") as f:
        json.dump(report, f)
    if plot:
        with open(os.path.join(directory, "tradeoff.png"), "wb") as f:
            f.write(b"\x89PNG fake")
    if breakdown:
        with open(os.path.join(directory, "latency_breakdown.md"), "w") as f:
            f.write("# Latency per component\n\n| model | ms |\n|---|---:|\n| teacher | 3.0 |\n")


def render(write_markdown, monkeypatch, tmp_path, *argv):
    output = tmp_path / "BENCHMARKS.md"
    args = ["write_markdown.py", *argv, "--output", str(output), "--results-dir", str(tmp_path / "results")]
    for task in ("text", "image", "speech"):
        if f"--{task}" not in argv:
            args += [f"--{task}", str(tmp_path / f"missing-{task}")]
    monkeypatch.setattr(sys, "argv", args)
    write_markdown.main()
    return output.read_text()


def test_markdown_checks_each_row_against_the_task_targets(harness, monkeypatch, tmp_path):
    _, write_markdown = harness
    speech = tmp_path / "speech"
    write_run(
        speech, 42,
        accuracies={"teacher": 0.90, "student-kd-pruned-int8": 0.89, "teacher-int8": 0.80},
        latency={"teacher": 10.0, "student-kd-pruned-int8": 1.0, "teacher-int8": 4.0},
        sizes={"teacher": 1000, "student-kd-pruned-int8": 100, "teacher-int8": 250}, breakdown=True,
    )  # fmt: skip
    text = render(write_markdown, monkeypatch, tmp_path, "--speech", str(speech))
    # speech targets: 5x faster, 5x smaller, 98% retention
    assert "| student-kd-pruned-int8 | 10.00x yes | 10.00x yes | 98.9% yes | **yes** |" in text
    assert "| teacher-int8 | 2.50x no | 4.00x no | 88.9% no | no |" in text
    assert "## Text: SST-2, MiniLM-L6-H384 teacher (not measured yet)" in text
    assert "### Latency per component" in text
    assert "](results/speech_tradeoff.png)" in text
    assert (tmp_path / "results" / "speech_tradeoff.png").read_bytes() == b"\x89PNG fake"
    assert json.loads((tmp_path / "results" / "speech_report.json").read_text())["rows"][0]["stage"] == "teacher"


def test_markdown_replicates_table_has_every_seed_and_the_means(harness, monkeypatch, tmp_path):
    _, write_markdown = harness
    sizes = {"teacher": 1000, "student-kd": 500, "student-kd-int8": 100}
    latency = {"teacher": 10.0, "student-kd": 5.0, "student-kd-int8": 1.0}
    write_run(
        tmp_path / "run1", 1, {"teacher": 0.90, "student-kd": 0.88, "student-kd-int8": 0.87}, latency, sizes,
        validation={"teacher": 0.86, "student-kd": 0.84},
    )  # fmt: skip
    write_run(
        tmp_path / "run42", 42, {"teacher": 0.92, "student-kd": 0.86, "student-kd-int8": 0.85}, latency, sizes,
        validation={"teacher": 0.88, "student-kd": 0.80},
    )  # fmt: skip
    text = render(
        write_markdown, monkeypatch, tmp_path, "--text", str(tmp_path / "run1"), "--replicate",
        f"text={tmp_path / 'run42'}",
    )  # fmt: skip
    assert "| row | seed 1 test | seed 1 validation | seed 42 test | seed 42 validation | mean test |" in text
    assert "| teacher | 90.00% | 86.00% | 92.00% | 88.00% | 91.00% | 87.00% |" in text
    assert "| student-kd | 88.00% | 84.00% | 86.00% | 80.00% | 87.00% | 82.00% |" in text
    assert "| student-kd-int8 | 87.00% | – | 85.00% | – | 86.00% | – |" in text


@pytest.mark.parametrize("bad", ["text", "sound=DIR", "text=/nonexistent/run"])
def test_bad_replicate_is_refused_before_anything_is_written(harness, monkeypatch, tmp_path, bad):
    _, write_markdown = harness
    write_run(tmp_path / "run", 1, {"teacher": 0.9}, {"teacher": 1.0}, {"teacher": 10})
    with pytest.raises(SystemExit, match="--replicate"):
        render(write_markdown, monkeypatch, tmp_path, "--text", str(tmp_path / "run"), "--replicate", bad)
    assert not (tmp_path / "BENCHMARKS.md").exists()
    assert not (tmp_path / "results").exists()
