"""DistillationTrainer and PruningTrainer under `accelerate launch` with two CPU processes (DDP over gloo), compared
with one process at the same global batch size (16 samples per optimizer step).

tests/distributed/launch_training.py is run twice per configuration: `python launch_training.py` (one process) and
`python -m accelerate.commands.launch --multi_gpu --num_processes 2 ... launch_training.py` (`--cpu` starts a single
process on this machine; `--multi_gpu` with `use_cpu=True` gives two processes over gloo). Both runs see the same
global batches: the seedable sampler draws the same permutation (data_seed), and each process takes every other
per-device batch, so a global step covers the same 16 rows as one single-process batch (checked below).

Tolerances: both runs compute the same float32 function, but the sums are reduced in a different order (each
process sums its half of the batch, then DDP averages the gradients with an all-reduce). The measured differences
are ~1e-7 relative on the losses and ~6e-8 absolute on the weights after the last step; the bounds below leave two
orders of magnitude for other BLAS builds and thread counts.
"""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

import hf_slim

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SCRIPT = os.path.join(HERE, "launch_training.py")
GLOBAL_BATCH = 16
MODES = ("distill", "prune")

LOSS_RTOL = 1e-5  # unrounded per-micro-batch losses (measured: <= 1e-7 relative)
LOGGED_LOSS_ATOL = 1e-4  # Trainer rounds the logged loss to 4 decimals: the same value can round either way
PART_ATOL = 2e-6  # loss_ce / loss_kd / ... are logged rounded to 6 decimals
GRAD_NORM_RTOL = 1e-4  # measured: ~3e-7 relative
WEIGHT_ATOL = 1e-5  # final weights (measured: <= 6e-8)
SCORE_RTOL = 1e-4  # importance scores at each pruning event (measured with reduced gradients: ~2e-7 relative)
TIMING_KEYS = ("runtime", "per_second")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp, processes: int, grad_accum: int) -> tuple[dict, dict, object]:
    """Run the script with `processes` processes at the global batch size: (reports, tensors) by mode, out dir."""
    out, report = tmp / "out", tmp / "report"
    per_device = GLOBAL_BATCH // processes // grad_accum
    script_args = [
        SCRIPT, "--out", str(out), "--report", str(report), "--per-device-batch", str(per_device),
        "--grad-accum", str(grad_accum),
    ]  # fmt: skip
    if processes == 1:
        command = [sys.executable, *script_args]
    else:
        command = [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(_free_port()), *script_args,
        ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    reports = {m: [json.loads((report / f"{m}_rank{r}.json").read_text()) for r in range(processes)] for m in MODES}
    tensors = {
        m: [torch.load(report / f"{m}_rank{r}.pt", weights_only=False) for r in range(processes)] for m in MODES
    }
    return reports, tensors, out


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(1, id="batch16"),
        # Same global batch through gradient accumulation: 8 x 2 steps on one process, 4 x 2 on each of two.
        pytest.param(2, id="accumulation", marks=pytest.mark.slow),
    ],
)
def runs(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"accum{request.param}")
    single = _launch(tmp / "one", 1, request.param)
    double = _launch(tmp / "two", 2, request.param)
    return {"one": single, "two": double}


def _losses(report: dict) -> list[dict]:
    return [entry for entry in report["log_history"] if "loss" in entry]


def _without_timings(entries: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if not any(t in k for t in TIMING_KEYS)} for e in entries]


def _assert_states_close(got: dict, want: dict, atol: float) -> None:
    assert set(got) == set(want)
    for name, value in want.items():
        assert got[name].shape == value.shape, name
        torch.testing.assert_close(got[name], value, rtol=0, atol=atol, msg=name)


def _assert_same_training(one: dict, two: list[dict], one_tensors: dict, two_tensors: list[dict]) -> None:
    """The two-process run reproduces the single-process run: losses, gradient norms, weights, evaluation."""
    # Every process logs the same (all-process) values, and the same curve as one process.
    assert _without_timings(two[0]["log_history"]) == _without_timings(two[1]["log_history"])
    logged_one, logged_two = _losses(one), _losses(two[0])
    assert [e["step"] for e in logged_two] == [e["step"] for e in logged_one]
    for a, b in zip(logged_two, logged_one, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=LOGGED_LOSS_ATOL, rel=0), a["step"]
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=GRAD_NORM_RTOL), a["step"]
        for part in ("loss_ce", "loss_kd", "loss_hidden", "loss_attention"):
            assert (part in a) == (part in b)
            if part in b:
                assert a[part] == pytest.approx(b[part], abs=PART_ATOL, rel=0), (part, a["step"])
    # Unrounded: each process returns its share of the global loss (its sum / global count * processes), so the
    # mean over processes is the single-process loss of the same micro-batch.
    mean = [sum(losses) / len(losses) for losses in zip(*(r["step_losses"] for r in two), strict=True)]
    assert mean == pytest.approx(one["step_losses"], rel=LOSS_RTOL)

    # DDP keeps the processes bit-identical; the weights match the single-process ones.
    for key in ("student", "projections"):
        assert set(two_tensors[0][key]) == set(two_tensors[1][key])
        assert all(torch.equal(v, two_tensors[1][key][k]) for k, v in two_tensors[0][key].items()), key
        _assert_states_close(two_tensors[0][key], one_tensors[key], WEIGHT_ATOL)

    assert two[0]["eval"]["eval_loss"] == two[1]["eval"]["eval_loss"]
    assert two[0]["eval"]["eval_loss"] == pytest.approx(one["eval"]["eval_loss"], rel=LOSS_RTOL)
    assert two[0]["eval"]["eval_accuracy"] == one["eval"]["eval_accuracy"]


def test_two_processes_train_with_ddp_over_gloo_on_the_same_global_batches(runs):
    (one, _, _), (two, _, _) = runs["one"], runs["two"]
    for mode in MODES:
        assert one[mode][0]["world_size"] == 1 and one[mode][0]["distributed_type"] == "DistributedType.NO"
        for rank, report in enumerate(two[mode]):
            assert report["rank"] == rank
            assert report["world_size"] == report["num_processes"] == 2
            assert report["distributed_type"] == "DistributedType.MULTI_CPU"
            assert report["backend"] == "gloo"
            assert report["student_types"] == ["DistributedDataParallel"]
        # Each process sees half of every micro-batch, disjoint halves whose union is the single-process batch.
        ranks = [r["batches"] for r in two[mode]]
        assert len(ranks[0]) == len(ranks[1]) == len(one[mode][0]["batches"])
        for a, b, whole in zip(*ranks, one[mode][0]["batches"], strict=True):
            assert len(a) == len(b) == len(whole) // 2
            assert sorted(a + b) == sorted(whole)


def test_teacher_is_local_frozen_in_eval_mode_and_never_ddp_wrapped(runs):
    (one, _, _), (two, _, _) = runs["one"], runs["two"]
    for mode in MODES:
        for report in [*one[mode], *two[mode]]:
            assert report["teacher_calls"] == len(report["batches"])  # the teacher ran on every micro-batch
            states = [*report["teacher_during_training"], report["teacher_after_training"]]
            for state in states:
                assert state["type"] == "BertForSequenceClassification"  # not DistributedDataParallel
                assert not state["is_ddp"]
                assert not state["training"]
                assert not state["requires_grad"]
                assert not state["has_grad"]
                assert state["on_args_device"], (state["devices"], state["args_device"])
            for call in report["teacher_during_training"]:
                assert not call["grad_enabled"]
                assert not call["output_requires_grad"]
            assert report["teacher_unchanged"]


def test_distillation_two_processes_match_one_process(runs):
    (one, one_tensors, _), (two, two_tensors, _) = runs["one"], runs["two"]
    projections = two_tensors["distill"][0]["projections"]
    assert sorted(projections) == [
        "0.bias",
        "0.weight",
        "1.bias",
        "1.weight",
    ]  # narrower student: projections all-reduced by hand
    _assert_same_training(one["distill"][0], two["distill"], one_tensors["distill"][0], two_tensors["distill"])


def test_only_the_main_process_writes_and_the_others_read_its_result(runs):
    (_, _, out_one), (two, _, out_two) = runs["one"], runs["two"]
    for mode in MODES:
        main, other = two[mode]
        assert main["should_save"] and not other["should_save"]
        # The only files another process writes are transformers' own per-process RNG states of the checkpoints.
        written = [w for w in other["writes"] if not w.endswith("/rng_state_1.pth")]
        assert all(w.startswith("os.mkdir:") and "/checkpoint-" in w for w in written), other["writes"]
        files = {w.split(":", 1)[1] for w in main["writes"] if not w.startswith("os.mkdir:")}
        assert {f"{mode}/final/model.safetensors", f"{mode}/final/config.json"} <= files
        state_file = "hf_slim_projections.safetensors" if mode == "distill" else "hf_slim_pruning_state.safetensors"
        assert f"{mode}/checkpoint-6/{state_file}" in files
        # The same output tree as one process, apart from the RNG state file per process.
        listings = []
        for out in (out_one, out_two):
            names = {str(p.relative_to(out)) for p in (out / mode).rglob("*") if p.is_file()}
            listings.append({n.replace("rng_state_0.pth", "rng_state.pth") for n in names if "rng_state_1" not in n})
        assert listings[0] == listings[1]
        # Every process waited for the saved model, reloaded it and found its own weights.
        assert main["reload_matches"] and other["reload_matches"]
        assert hf_slim.from_pretrained(str(out_two / mode / "final")).num_parameters() == main["num_parameters"]


def test_pruning_decisions_are_identical_on_every_process(runs):
    (two, two_tensors, out) = runs["two"]
    main, other = two["prune"]
    assert main["pruning_events"] == other["pruning_events"]
    # Gradual: events every 2 steps until step 6, for every kind of unit.
    assert {e["kind"] for e in main["pruning_events"]} == {"layers", "heads", "ffn"}
    assert {e["step"] for e in main["pruning_events"]} <= {2, 4, 6}
    # The scores each process ranked (after the all-reduce) are bit-identical.
    for a, b in zip(two_tensors["prune"][0]["events"], two_tensors["prune"][1]["events"], strict=True):
        assert (a["step"], a["kind"]) == (b["step"], b["kind"])
        assert all(torch.equal(x, y) for x, y in zip(a["scores"], b["scores"], strict=True)), (a["step"], a["kind"])
    assert main["final_masks"] == other["final_masks"]
    assert main["structure"] == other["structure"] is not None
    # Targets: 6 of 12 heads, one of 3 layers, 56 of 111 neurons (the dropped layer's 37 plus 19 of kept layers).
    assert len(main["structure"]["num_heads"]) == len(main["structure"]["intermediate_sizes"]) == 2
    assert sum(main["structure"]["num_heads"]) == 12 - 6
    assert sum(main["structure"]["intermediate_sizes"]) == 111 - 56
    first, second = (t["student"] for t in two_tensors["prune"])
    assert {k: v.shape for k, v in first.items()} == {k: v.shape for k, v in second.items()}
    assert all(torch.equal(v, second[k]) for k, v in first.items())
    pruned = hf_slim.from_pretrained(str(out / "prune" / "final"))
    assert {k: v.shape for k, v in pruned.state_dict().items()} == {k: v.shape for k, v in first.items()}


def _normalised(scores: list[torch.Tensor], kind: str) -> list[torch.Tensor]:
    # Only the ranking matters: heads/FFN scores are already normalised per layer; layer scores are compared up to
    # one positive factor, so a fix that leaves them summed (not averaged) over processes still matches.
    if kind != "layers":
        return scores
    total = sum(s.sum() for s in scores)
    return [s / total for s in scores]


def test_pruning_two_processes_match_one_process(runs):
    (one, one_tensors, _), (two, two_tensors, _) = runs["one"], runs["two"]
    one, two, one_tensors, two_tensors = one["prune"][0], two["prune"], one_tensors["prune"][0], two_tensors["prune"]
    # The importance scores at every pruning event, then the decisions and the pruned structure.
    events_one, events_two = one_tensors["events"], two_tensors[0]["events"]
    assert [(e["step"], e["kind"]) for e in events_two] == [(e["step"], e["kind"]) for e in events_one]
    for a, b in zip(events_two, events_one, strict=True):
        for x, y in zip(_normalised(a["scores"], a["kind"]), _normalised(b["scores"], b["kind"]), strict=True):
            where = f"{a['kind']} scores at step {a['step']}"
            torch.testing.assert_close(x, y, rtol=SCORE_RTOL, atol=1e-7, msg=lambda m, where=where: f"{where}: {m}")
    assert two[0]["pruning_events"] == one["pruning_events"]
    assert two[0]["final_masks"] == one["final_masks"]
    assert two[0]["structure"] == one["structure"]
    assert two[0]["num_parameters"] == one["num_parameters"]
    _assert_same_training(one, two, one_tensors, two_tensors)
