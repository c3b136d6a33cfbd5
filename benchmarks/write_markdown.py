"""Write BENCHMARKS.md from the benchmark scripts' own reports (no number is typed by hand).

    python benchmarks/write_markdown.py [--text outputs/bench-sst2] [--image outputs/bench-mnist]
        [--speech outputs/bench-fsdd] [--replicate text=outputs/bench-sst2-seed1 ...] [--output BENCHMARKS.md]

For every task whose `report.json` exists it copies the report and its `tradeoff.png` to `benchmarks/results/`,
renders the table, the validation accuracy and step counts of trained rows, the step-time comparison, each row
against the task's targets, and the hand-written analysis in `benchmarks/notes/<task>.md` (setup and findings).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

from hf_slim.io import write_json_atomic
from hf_slim.recipes.report import format_markdown_table

HERE = os.path.dirname(os.path.abspath(__file__))
# task: (title, script, default output dir, targets: batch-1 speed-up, times smaller, retention)
TASKS = {
    "text": ("Text: SST-2, MiniLM-L6-H384 teacher", "text_sst2.py", "outputs/bench-sst2", (10, 10, 0.985)),
    "image": (
        "Image: MNIST-10k, ViT teacher trained from scratch", "image_mnist.py", "outputs/bench-mnist", (8, 8, 0.99)
    ),
    "speech": (
        "Speech: FSDD spoken digits, Wav2Vec2 teacher trained from scratch", "speech_fsdd.py", "outputs/bench-fsdd",
        (5, 5, 0.98),
    ),
}  # fmt: skip


def mark(ok: bool) -> str:
    return "yes" if ok else "no"


def targets_table(report: dict, targets: tuple[float, float, float]) -> str:
    speed, size, retention = targets
    lines = [
        f"| row | batch-1 speed-up (≥{speed}x) | smaller (≥{size}x) | retention (≥{100 * retention:.1f}%) "
        "| all three |",
        "|---|---:|---:|---:|---|",
    ]
    for row in report["rows"][1:]:
        s, z, r = row["speedup"].get("1"), row["smaller"], row["retention"]
        ok = [x is not None and x >= t for x, t in ((s, speed), (z, size), (r, retention))]
        lines.append(
            f"| {row['stage']} | {s:.2f}x {mark(ok[0])} | {z:.2f}x {mark(ok[1])} | {100 * r:.1f}% {mark(ok[2])} | "
            f"{'**yes**' if all(ok) else 'no'} |"
        )
    return "\n".join(lines)


def run_seed(report: dict) -> str:
    seeds = {stage.get("config", {}).get("args", {}).get("seed") for stage in report["stages"].values()}
    seeds.discard(None)
    return ", ".join(str(s) for s in sorted(seeds)) or "?"


def replicates_table(reports: list[dict]) -> str:
    """Test and validation metric of every row, one column pair per run (runs differ by training seed)."""
    names = [row["stage"] for row in reports[0]["rows"]]
    header = "| row | " + " | ".join(f"seed {run_seed(r)} test | seed {run_seed(r)} validation" for r in reports)
    lines = [header + " | mean test | mean validation |", "|---|" + "---:|" * (2 * len(reports) + 2)]
    for name in names:
        cells, tests, vals = [], [], []
        for report in reports:
            row = next((r for r in report["rows"] if r["stage"] == name), None)
            test = row["metric"] if row else None
            val = report["stages"].get(name, {}).get("validation_" + report["rows"][0]["metric_name"])
            cells += [f"{100 * x:.2f}%" if x is not None else "–" for x in (test, val)]
            tests += [test] if test is not None else []
            vals += [val] if val is not None else []
        means = [f"{100 * sum(x) / len(x):.2f}%" if len(x) == len(reports) else "–" for x in (tests, vals)]
        lines.append(f"| {name} | " + " | ".join(cells + means) + " |")
    return "\n".join(lines)


def section(task: str, directory: str, replicates: list[str] = (), results: str = "", link: str = "") -> str:
    """Markdown of one task; copies its report, plot and latency breakdown to `results` (linked as `link`)."""
    title, script, _, targets = TASKS[task]
    with open(os.path.join(directory, "report.json")) as f:
        report = json.load(f)
    results = results or os.path.join(HERE, "results")
    link = link or "benchmarks/results"
    os.makedirs(results, exist_ok=True)
    write_json_atomic(os.path.join(results, f"{task}_report.json"), report)
    plot = os.path.join(directory, "tradeoff.png")
    parts = [f"## {title}", ""]
    command = report["meta"].get("command") or f"python benchmarks/{script}"
    total = sum(row["seconds"] or 0 for row in report["rows"]) / 60
    parts += ["```bash", command, "```", ""]
    parts += [f"All rows built in {total:.0f} minutes of stage time (sum of the `time s` column)."]
    notes = os.path.join(HERE, "notes", f"{task}.md")
    if os.path.isfile(notes):
        with open(notes) as f:
            parts += ["", f.read().strip()]
    parts += ["", "### Results (test split)", "", format_markdown_table(report), ""]
    trained = [f"- `{row['stage']}`: {row['notes']}" for row in report["rows"] if row.get("notes")]
    if trained:
        parts += ["Trained rows (validation metric for model selection; optimizer steps; median step time):", ""]
        parts += trained + [""]
    steps = report.get("step_times")
    if steps:
        parts += [
            "Step time of the same student on the same batches (median of "
            f"{steps['steps']} optimizer steps after 5 skipped): plain fine-tuning {steps['plain_ms']:.0f} ms; "
            f"distillation from cached teacher logits {steps['kd_cached_logits_ms']:.0f} ms "
            f"(**{steps['kd_cached_logits_ratio']:.2f}x**, target ≤1.10x); with the teacher run online "
            f"{steps['kd_online_teacher_ms']:.0f} ms ({steps['kd_online_teacher_ratio']:.2f}x).",
            "",
        ]
    breakdown = os.path.join(directory, "latency_breakdown.md")
    if os.path.isfile(breakdown):
        with open(breakdown) as f:
            table = f.read().strip().splitlines()
        shutil.copyfile(breakdown, os.path.join(results, f"{task}_latency_breakdown.md"))
        parts += ["### " + table[0].lstrip("# "), *table[1:], ""]
    if replicates:
        others = []
        for other in replicates:
            with open(os.path.join(other, "report.json")) as f:
                others.append(json.load(f))
        parts += [
            "### Replicates",
            "",
            "Every row again, from whole runs of the same command that differ only in `--seed` (head "
            "initialisation, data order, dropout), to tell effects from noise (validation is measured on PyTorch "
            "rows only):",
            "",
            replicates_table([report, *others]),
            "",
        ]
    parts += ["### Against the targets", "", targets_table(report, targets), ""]
    if os.path.isfile(plot):
        shutil.copyfile(plot, os.path.join(results, f"{task}_tradeoff.png"))
        parts += [f"![{title}: accuracy vs latency]({link}/{task}_tradeoff.png)", ""]
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for task, (_, _, default, _) in TASKS.items():
        parser.add_argument(f"--{task}", default=default, help=f"Output dir of the {task} benchmark.")
    parser.add_argument(
        "--replicate",
        action="append",
        default=[],
        metavar="TASK=DIR",
        help="Output dir of a run of the same task with another --seed (repeatable); adds a replicates table.",
    )
    parser.add_argument("--output", default="BENCHMARKS.md")
    parser.add_argument(
        "--results-dir", default=os.path.join(HERE, "results"), help="Where reports and plots are copied."
    )
    args = parser.parse_args()
    found = {t: getattr(args, t) for t in TASKS if os.path.isfile(os.path.join(getattr(args, t), "report.json"))}
    if not found:
        raise SystemExit("No report.json found; run the benchmark scripts first.")
    with open(os.path.join(next(iter(found.values())), "report.json")) as f:
        meta = json.load(f)["meta"]
    versions = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
    head = [
        "# Benchmarks",
        "",
        "What hf_slim buys on real data, per modality. Every table of results is rendered by",
        "`benchmarks/write_markdown.py` from the `report.json` the benchmark scripts wrote; the summary, setup and",
        "analysis texts are hand-written from those reports (`benchmarks/notes/`).",
        "",
        f"Hardware: {meta.get('cpu_count')} CPU cores ({meta.get('cpu')}), no GPU; latency with "
        f"{meta.get('threads')} threads, all models of a task measured in one process (median after warm-up, "
        f"PyTorch fp32 teacher = 1.00x). Versions: {versions}.",
        "",
    ]
    intro = os.path.join(HERE, "notes", "intro.md")
    if os.path.isfile(intro):
        with open(intro) as f:
            head += [f.read().strip(), ""]
    replicates: dict[str, list[str]] = {}
    for item in args.replicate:
        task, sep, directory = item.partition("=")
        if not sep or task not in TASKS or not os.path.isfile(os.path.join(directory, "report.json")):
            raise SystemExit(f"--replicate {item!r}: expected TASK=DIR with TASK in {list(TASKS)} and DIR/report.json")
        replicates.setdefault(task, []).append(directory)
    link = os.path.relpath(args.results_dir, os.path.dirname(os.path.abspath(args.output))).replace(os.sep, "/")
    body = [
        section(task, directory, replicates.get(task, []), args.results_dir, link) for task, directory in found.items()
    ]
    for task in TASKS:
        if task in found:
            continue
        body.append(f"## {TASKS[task][0]} (not measured yet)\n")
        notes = os.path.join(HERE, "notes", f"{task}.md")
        if os.path.isfile(notes):
            with open(notes) as f:
                body.append(f.read().strip() + "\n")
    text = "\n".join(head) + "\n" + "\n".join(body)
    tmp = args.output + ".tmp"
    with open(tmp, "w") as f:
        f.write(text.rstrip() + "\n")
    os.replace(tmp, args.output)
    print(f"Wrote {args.output} ({', '.join(found)})")


if __name__ == "__main__":
    main()
