"""Tests of PruningTrainer: targets, gradual schedule, physical pruning equal to the masked model, save/reload,
distillation from the dense model, checkpoint resume, magnitude importance and errors."""

import copy
import math
import os
import shutil
from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import LABELS, NUM_LABELS, VOCAB_SIZE, build_model, make_dataset, make_inputs
from transformers import BertConfig, BertForSequenceClassification, TrainerCallback, TrainingArguments

import hf_slim.modeling
from hf_slim.distill.config import DistillationConfig
from hf_slim.errors import HfSlimError
from hf_slim.prune import PruningConfig, PruningTrainer
from hf_slim.prune.trainer import STATE_NAME

NUM_LAYERS, HEADS, FFN = 3, 4, 37
TOTAL = {"heads": NUM_LAYERS * HEADS, "ffn": NUM_LAYERS * FFN, "layers": NUM_LAYERS}
STEPS, FREQUENCY, END = 8, 2, 6
TARGETS = {"target_heads": 0.5, "target_ffn": 0.25, "target_layers": 1}
# 0.5 * 12 heads, round(0.25 * 111) neurons, 1 layer.
TARGET_COUNTS = {"heads": 6, "ffn": 28, "layers": 1}
# The dropped layer takes its 37 neurons with it: more than the FFN target of 28, so the FFN target is exceeded.
ACHIEVED_COUNTS = {"heads": 6, "ffn": 37, "layers": 1}
TRAINED_TYPES = ("bert", "vit", "wav2vec2")


def make_args(output_dir, **kwargs) -> PruningConfig:
    defaults = dict(
        output_dir=str(output_dir),
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        max_steps=STEPS,
        per_device_train_batch_size=4,
        logging_steps=1,
        learning_rate=1e-3,
        pruning_frequency=FREQUENCY,
        pruning_end_step=END,
        seed=0,
        data_seed=0,
    )
    defaults.update(kwargs)
    return PruningConfig(**defaults)


def bert_without_dropout(num_layers=NUM_LAYERS, seed=0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB_SIZE,
        max_position_embeddings=64,
        hidden_size=32,
        num_hidden_layers=num_layers,
        num_attention_heads=HEADS,
        intermediate_size=FFN,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=NUM_LABELS,
        id2label=LABELS,
    )
    return BertForSequenceClassification(config)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def masked_counts(trainer) -> dict[str, int]:
    """Units removed, read from the trainer's masks: masked units of kept layers plus every unit of a dropped layer."""
    alive = [bool(v) for v in (trainer.layer_mask != 0).tolist()]

    def removed(masks):
        return int(sum(int((m == 0).sum()) if a else m.numel() for m, a in zip(masks, alive, strict=True)))

    return {
        "heads": removed(trainer.head_masks),
        "ffn": removed(trainer.ffn_masks),
        "layers": int((trainer.layer_mask == 0).sum().item()),
    }


def expected_counts(step, targets=TARGET_COUNTS, start=0, end=END, frequency=FREQUENCY) -> dict[str, int]:
    """Units pruned after `step` by the cubic schedule (Zhu & Gupta 2017), written out independently."""
    events = [s for s in range(1, step + 1) if s >= start and ((s - start) % frequency == 0 or s >= end)]
    if not events:
        return dict.fromkeys(targets, 0)
    progress = min(1.0, (events[-1] - start) / (end - start))
    fraction = 1 - (1 - progress) ** 3
    counts = {kind: round(fraction * count) for kind, count in targets.items()}
    # Layers are pruned first and take all their heads and neurons with them; the head/FFN targets count those.
    dropped = counts.get("layers", 0)
    counts["heads"] = max(counts["heads"], dropped * HEADS)
    counts["ffn"] = max(counts["ffn"], dropped * FFN)
    return counts


def logits(model, inputs) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(**inputs).logits
    finally:
        model.train(was_training)


def assert_same_outputs(actual, expected):
    # Tiny random models have logits of order 1e-3: a relative bound, so a 1% discrepancy is not lost in atol.
    assert expected.abs().max() > 1e-5, "degenerate comparison: the logits are all ~0"
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-7)


class StepRecorder(TrainerCallback):
    """Records the trainer's masked-unit counts and pruning summary after each optimizer step."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.counts: dict[int, dict[str, int]] = {}
        self.summaries: dict[int, dict[str, float]] = {}

    def on_step_end(self, args, state, control, **kwargs):
        self.counts[state.global_step] = masked_counts(self.trainer)
        self.summaries[state.global_step] = self.trainer.pruning_summary()


class CapturingTrainer(PruningTrainer):
    """Captures the masked model's outputs right before the physical pruning."""

    probe: dict[str, torch.Tensor] = {}

    def finalize_pruning(self):
        if not self.finalized:
            self.counts_before_finalize = masked_counts(self)
            self.masked_logits = logits(self.model, self.probe)
            self.trained_state = snapshot(self.model)  # the dense weights, masks not applied
            self.masks_before_finalize = {
                "heads": [m.detach().clone() for m in self.head_masks],
                "ffn": [m.detach().clone() for m in self.ffn_masks],
                "layers": self.layer_mask.detach().clone(),
            }
        super().finalize_pruning()


@dataclass
class Run:
    trainer: CapturingTrainer
    model: torch.nn.Module
    initial_state: dict
    initial_parameters: int
    probe: dict
    recorder: StepRecorder
    output_dir: str


def train_pruned(model_type, output_dir, model=None, targets=None, **kwargs) -> Run:
    model = model if model is not None else build_model(model_type, num_layers=NUM_LAYERS)
    probe = make_inputs(model_type, batch_size=4, seed=5)
    initial_state, initial_parameters = snapshot(model), count_parameters(model)
    args = make_args(output_dir, **(TARGETS if targets is None else targets), **kwargs)
    trainer = CapturingTrainer(model=model, args=args, train_dataset=make_dataset(model_type, num_rows=16))
    trainer.probe = probe
    recorder = StepRecorder(trainer)
    trainer.add_callback(recorder)
    trainer.train()
    return Run(trainer, model, initial_state, initial_parameters, probe, recorder, str(output_dir))


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory):
    """One pruning run per model type, shared by the tests that only inspect its result."""
    runs = {}

    def get(model_type):
        if model_type not in runs:
            runs[model_type] = train_pruned(model_type, tmp_path_factory.mktemp(f"pruned-{model_type}"))
        return runs[model_type]

    return get


# -- targets, structure, save/reload ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", TRAINED_TYPES)
def test_reaches_targets_and_prunes_physically(pruned_run, model_type):
    run = pruned_run(model_type)
    trainer, model = run.trainer, run.model
    assert trainer.finalized
    assert trainer.model is model
    assert run.trainer.counts_before_finalize == ACHIEVED_COUNTS
    assert masked_counts(trainer) == ACHIEVED_COUNTS
    # The schedule reached the targets at pruning_end_step: finalize had nothing left to prune.
    before = trainer.masks_before_finalize
    assert all(torch.equal(a, b) for a, b in zip(before["heads"], trainer.head_masks, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(before["ffn"], trainer.ffn_masks, strict=True))
    assert torch.equal(before["layers"], trainer.layer_mask)

    # The physical structure is the one of the masks: dropped layers vanish with their heads and neurons.
    alive = (trainer.layer_mask != 0).tolist()
    heads = [int((m != 0).sum()) for m, a in zip(trainer.head_masks, alive, strict=True) if a]
    kept = [(m != 0).nonzero().flatten().tolist() for m, a in zip(trainer.head_masks, alive, strict=True) if a]
    neurons = [int((m != 0).sum()) for m, a in zip(trainer.ffn_masks, alive, strict=True) if a]
    record = model.config.hf_slim
    assert record["num_heads"] == heads
    assert record["heads_kept"] == kept
    assert record["intermediate_sizes"] == neurons
    assert record["source_layers"] == [i for i, a in enumerate(alive) if a]
    assert len(record["num_heads"]) == NUM_LAYERS - TARGET_COUNTS["layers"]
    assert model.config.num_hidden_layers == NUM_LAYERS - TARGET_COUNTS["layers"]
    assert sum(heads) <= TOTAL["heads"] - TARGET_COUNTS["heads"]
    assert sum(neurons) <= TOTAL["ffn"] - TARGET_COUNTS["ffn"]

    summary = trainer.pruning_summary()
    assert summary["remaining_heads"] == sum(heads)
    assert summary["remaining_ffn_neurons"] == sum(neurons)
    assert summary["remaining_layers"] == NUM_LAYERS - 1
    assert count_parameters(model) < run.initial_parameters
    final_log = trainer.state.log_history[-1]
    assert final_log["parameters"] == count_parameters(model)
    assert final_log["remaining_heads"] == sum(heads)


@pytest.mark.parametrize("model_type", TRAINED_TYPES)
def test_save_and_strict_reload(pruned_run, model_type, tmp_path):
    run = pruned_run(model_type)
    run.trainer.save_model(str(tmp_path))
    reloaded = hf_slim.modeling.from_pretrained(str(tmp_path))
    assert type(reloaded) is type(run.model)
    assert reloaded.config.hf_slim["num_heads"] == run.model.config.hf_slim["num_heads"]
    assert reloaded.config.hf_slim["intermediate_sizes"] == run.model.config.hf_slim["intermediate_sizes"]
    expected = run.model.state_dict()
    state = reloaded.state_dict()
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(state[key], value), key
    assert count_parameters(reloaded) == count_parameters(run.model)
    torch.testing.assert_close(logits(reloaded, run.probe), logits(run.model, run.probe), rtol=0, atol=1e-7)


@pytest.mark.parametrize("model_type", TRAINED_TYPES)
def test_head_and_ffn_targets_count_the_units_of_dropped_layers(pruned_run, model_type):
    """target_heads=0.5 and target_ffn=0.25 with one of 3 layers dropped: half the heads are removed in all (the
    dropped layer's 4 plus 2 more), and the FFN target of 28 neurons is met by the dropped layer's 37 alone."""
    record = pruned_run(model_type).model.config.hf_slim
    assert sum(record["num_heads"]) == TOTAL["heads"] - ACHIEVED_COUNTS["heads"]
    assert sum(record["intermediate_sizes"]) == TOTAL["ffn"] - ACHIEVED_COUNTS["ffn"]
    assert record["intermediate_sizes"] == [FFN, FFN]  # no neuron of a kept layer was pruned


@pytest.mark.parametrize(
    "model_type",
    [
        "bert",
        "vit",
        "wav2vec2",
    ],
)
def test_pruned_model_equals_masked_model(pruned_run, model_type):
    run = pruned_run(model_type)
    assert run.trainer.counts_before_finalize == ACHIEVED_COUNTS
    assert_same_outputs(logits(run.model, run.probe), run.trainer.masked_logits)


def test_pruned_model_equals_masked_model_without_layer_drop_wav2vec2(tmp_path):
    """Heads and neurons (no layer dropped): the physical model equals the masked one for Wav2Vec2 too."""
    run = train_pruned(
        "wav2vec2",
        tmp_path,
        targets={"target_heads": 0.5, "target_ffn": 0.25},
        max_steps=4,
        pruning_end_step=4,
    )
    assert run.trainer.counts_before_finalize == {"heads": 6, "ffn": 28, "layers": 0}
    assert run.model.config.num_hidden_layers == NUM_LAYERS
    # Without dropped layers the targets are met exactly.
    assert sum(run.model.config.hf_slim["num_heads"]) == TOTAL["heads"] - 6
    assert sum(run.model.config.hf_slim["intermediate_sizes"]) == TOTAL["ffn"] - 28
    assert run.trainer.state.log_history[-1]["sparsity_heads"] == 0.5
    assert_same_outputs(logits(run.model, run.probe), run.trainer.masked_logits)


@pytest.mark.parametrize("model_type", TRAINED_TYPES)
def test_masks_change_the_model_before_finalize(pruned_run, model_type):
    """Guards the equivalence test: without the masks, the same trained weights give other outputs."""
    run = pruned_run(model_type)
    dense = build_model(model_type, num_layers=NUM_LAYERS)
    dense.load_state_dict(run.trainer.trained_state)
    assert not torch.allclose(logits(dense, run.probe), run.trainer.masked_logits, rtol=1e-2, atol=1e-7)


# -- gradual schedule and logs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", TRAINED_TYPES)
def test_pruning_is_gradual_on_the_cubic_schedule(pruned_run, model_type):
    run = pruned_run(model_type)
    counts = run.recorder.counts
    assert sorted(counts) == list(range(1, STEPS + 1))
    for step, recorded in counts.items():
        assert recorded == expected_counts(step), f"step {step}"
    # Not all at once: an intermediate step has some but not all heads pruned.
    assert 0 < counts[2]["heads"] < counts[STEPS]["heads"]
    assert counts[STEPS] == ACHIEVED_COUNTS


@pytest.mark.parametrize("model_type", TRAINED_TYPES)
def test_log_history_tracks_pruning(pruned_run, model_type):
    run = pruned_run(model_type)
    logs = [log for log in run.trainer.state.log_history if "loss" in log]
    assert len(logs) == STEPS
    for log in logs:
        for key in ("remaining_heads", "remaining_ffn_neurons", "remaining_layers", "sparsity_heads", "sparsity_ffn"):
            assert key in log, f"{key} missing from {log}"
        assert math.isfinite(log["loss"])
        assert math.isclose(log["sparsity_heads"], 1 - log["remaining_heads"] / TOTAL["heads"], abs_tol=1e-6)
    remaining = [log["remaining_heads"] for log in logs]
    sparsity = [log["sparsity_heads"] for log in logs]
    neurons = [log["remaining_ffn_neurons"] for log in logs]
    assert remaining == sorted(remaining, reverse=True)
    assert sparsity == sorted(sparsity)
    assert neurons == sorted(neurons, reverse=True)
    assert remaining[0] == TOTAL["heads"] and sparsity[0] == 0
    assert remaining[-1] < remaining[0] and sparsity[-1] >= 0.5
    # The logs agree with what the callback saw at the same steps.
    for log, step in zip(logs, range(1, STEPS + 1), strict=True):
        assert log["remaining_heads"] == run.recorder.summaries[step]["remaining_heads"]


# -- distillation from the dense model -------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", TRAINED_TYPES)
def test_dense_model_is_the_default_teacher(pruned_run, model_type):
    run = pruned_run(model_type)
    teacher = run.trainer.accelerator.unwrap_model(run.trainer.teacher_model)
    assert teacher is not None
    assert teacher is not run.model
    teacher_state = teacher.state_dict()
    assert teacher_state.keys() == run.initial_state.keys()
    for key, value in run.initial_state.items():
        assert torch.equal(teacher_state[key], value), f"teacher parameter {key} differs from the dense model"
    assert not any(p.requires_grad for p in teacher.parameters())
    # The teacher is unpruned and unmasked, while the student changed and shrank.
    assert not hasattr(teacher.config, "hf_slim") or not teacher.config.hf_slim
    assert count_parameters(teacher) == run.initial_parameters
    assert any(k.startswith("loss_kd") for log in run.trainer.state.log_history for k in log)


def test_no_teacher_without_distillation(tmp_path):
    model = build_model("bert", num_layers=2)
    trainer = PruningTrainer(
        model=model, args=make_args(tmp_path, target_heads=0.5, alpha_kd=0.0), train_dataset=make_dataset("bert")
    )
    assert trainer.teacher_model is None


def test_explicit_teacher_is_used(tmp_path):
    model, teacher = build_model("bert", num_layers=2, seed=0), build_model("bert", num_layers=4, seed=1)
    trainer = PruningTrainer(
        model=model,
        args=make_args(tmp_path, target_heads=0.5),
        teacher_model=teacher,
        train_dataset=make_dataset("bert"),
    )
    assert trainer.accelerator.unwrap_model(trainer.teacher_model) is teacher


# -- checkpoints -----------------------------------------------------------------------------------------------------

RESUME_ARGS = dict(targets={"target_heads": 0.5, "target_ffn": 0.25}, save_strategy="steps", save_steps=3)


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory):
    """An uninterrupted run saving checkpoints at steps 3 and 6, on a model without dropout."""
    return train_pruned("bert", tmp_path_factory.mktemp("full"), model=bert_without_dropout(), **RESUME_ARGS)


def test_checkpoint_stores_the_masks_mid_pruning(interrupted_run):
    checkpoint = os.path.join(interrupted_run.output_dir, "checkpoint-3")
    path = os.path.join(checkpoint, STATE_NAME)
    assert os.path.isfile(path)
    state = load_file(path)
    assert set(state) >= {f"heads.{i}.mask" for i in range(NUM_LAYERS)} | {"layers.0.mask", "layers.0.score"}
    pruned_heads = sum(int((state[f"heads.{i}.mask"] == 0).sum()) for i in range(NUM_LAYERS))
    # Step 3 lies between the pruning events at 2 and 4: some, not all, heads are masked.
    assert pruned_heads == interrupted_run.recorder.counts[3]["heads"]
    assert 0 < pruned_heads < 6
    assert all(state[f"heads.{i}.score"].sum() > 0 for i in range(NUM_LAYERS))


def test_resume_mid_pruning_matches_the_uninterrupted_run(interrupted_run, tmp_path):
    checkpoint = os.path.join(interrupted_run.output_dir, "checkpoint-3")
    model = bert_without_dropout()
    assert all(torch.equal(v, interrupted_run.initial_state[k]) for k, v in snapshot(model).items())
    args = make_args(tmp_path, target_heads=0.5, target_ffn=0.25, save_strategy="steps", save_steps=3)
    trainer = PruningTrainer(model=model, args=args, train_dataset=make_dataset("bert", num_rows=16))
    trainer.train(resume_from_checkpoint=checkpoint)

    expected = interrupted_run.model
    assert trainer.state.global_step == STEPS
    for key in ("num_heads", "heads_kept", "intermediate_sizes", "source_layers"):
        assert model.config.hf_slim[key] == expected.config.hf_slim[key], key
    for ours, theirs in zip(
        trainer.head_masks + trainer.ffn_masks,
        interrupted_run.trainer.head_masks + interrupted_run.trainer.ffn_masks,
        strict=True,
    ):
        assert torch.equal(ours, theirs)
    state, reference = model.state_dict(), expected.state_dict()
    assert state.keys() == reference.keys()
    for key in reference:
        torch.testing.assert_close(state[key], reference[key], rtol=0, atol=1e-5, msg=key)


def test_resume_from_a_checkpoint_without_pruning_state_fails(interrupted_run, tmp_path):
    checkpoint = tmp_path / "checkpoint-3"
    shutil.copytree(os.path.join(interrupted_run.output_dir, "checkpoint-3"), checkpoint)
    os.remove(checkpoint / STATE_NAME)
    args = make_args(tmp_path / "out", target_heads=0.5, target_ffn=0.25)
    trainer = PruningTrainer(model=bert_without_dropout(), args=args, train_dataset=make_dataset("bert", num_rows=16))
    with pytest.raises(HfSlimError, match=STATE_NAME):
        trainer.train(resume_from_checkpoint=str(checkpoint))


# -- magnitude importance --------------------------------------------------------------------------------------------


def test_magnitude_importance_prunes_the_smallest_weights(tmp_path):
    model = build_model("bert", num_layers=NUM_LAYERS)
    # Value rows x10 and output columns x0.1 leave a head's function (and first-order score) unchanged but make its
    # weights large: magnitude scores, and only they, keep exactly these heads.
    big_heads = {0: [1, 2], 1: [0, 2, 3], 2: [3]}
    small_neurons = {0: list(range(10)), 1: list(range(10, 20)), 2: list(range(20, 28))}
    with torch.no_grad():
        for index, layer in enumerate(model.bert.encoder.layer):
            for head in big_heads[index]:
                rows = slice(head * 8, (head + 1) * 8)
                layer.attention.self.value.weight[rows] *= 10
                layer.attention.self.value.bias[rows] *= 10
                layer.attention.output.dense.weight[:, rows] *= 0.1
            layer.intermediate.dense.weight[small_neurons[index]] *= 0.1
            layer.output.dense.weight[:, small_neurons[index]] *= 0.1
    # No pruning_end_step: 70% of the 5 steps.
    args = make_args(
        tmp_path,
        target_heads=6,
        target_ffn=28,
        importance="magnitude",
        max_steps=5,
        pruning_end_step=None,
        learning_rate=1e-4,
    )
    trainer = PruningTrainer(model=model, args=args, train_dataset=make_dataset("bert", num_rows=16))
    trainer.train()
    assert trainer.pruning_end_step == 3
    record = model.config.hf_slim
    assert record["heads_kept"] == [big_heads[i] for i in range(NUM_LAYERS)]
    assert record["intermediate_sizes"] == [FFN - len(small_neurons[i]) for i in range(NUM_LAYERS)]
    for index, layer in enumerate(model.bert.encoder.layer):
        assert layer.intermediate.dense.out_features == FFN - len(small_neurons[index])


# -- errors ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target_layers", [NUM_LAYERS, 0.9])
def test_removing_every_layer_is_an_error(tmp_path, target_layers):
    model = build_model("bert", num_layers=NUM_LAYERS)
    with pytest.raises(HfSlimError, match=f"target_layers={target_layers}") as info:
        PruningTrainer(model=model, args=make_args(tmp_path, target_layers=target_layers))
    assert "at most 2" in str(info.value)
    assert not hasattr(model.config, "hf_slim")


def test_too_many_heads_is_an_error(tmp_path):
    model = build_model("bert", num_layers=NUM_LAYERS)
    with pytest.raises(HfSlimError, match="target_heads=13") as info:
        PruningTrainer(model=model, args=make_args(tmp_path, target_heads=13))
    assert "12" in str(info.value)


def test_too_many_neurons_is_an_error(tmp_path):
    with pytest.raises(HfSlimError, match="target_ffn=112"):
        PruningTrainer(model=build_model("bert", num_layers=NUM_LAYERS), args=make_args(tmp_path, target_ffn=112))


@pytest.mark.parametrize(
    "make",
    [
        lambda path: DistillationConfig(output_dir=str(path), use_cpu=True, report_to=[]),
        lambda path: TrainingArguments(output_dir=str(path), use_cpu=True, report_to=[]),
        lambda path: None,
    ],
    ids=["DistillationConfig", "TrainingArguments", "None"],
)
def test_args_must_be_a_pruning_config(tmp_path, make):
    args = make(tmp_path)
    with pytest.raises(HfSlimError, match=f"PruningConfig, got {type(args).__name__}"):
        PruningTrainer(model=build_model("bert", num_layers=2), args=args)


def test_model_is_required(tmp_path):
    with pytest.raises(HfSlimError, match="model"):
        PruningTrainer(model=None, args=make_args(tmp_path, target_heads=0.5))


def test_pruning_end_after_training_is_an_error(tmp_path):
    model = build_model("bert", num_layers=2)
    before = snapshot(model)
    args = make_args(tmp_path, target_heads=0.5, max_steps=3, pruning_end_step=5)
    trainer = PruningTrainer(model=model, args=args, train_dataset=make_dataset("bert", num_rows=8))
    with pytest.raises(HfSlimError, match="pruning_end_step=5") as info:
        trainer.train()
    assert "(3)" in str(info.value)
    assert trainer.state.global_step == 0
    assert not trainer.finalized
    assert all(torch.equal(v, before[k]) for k, v in snapshot(model).items())


def test_training_twice_is_an_error(pruned_run):
    run = pruned_run("bert")
    structure = copy.deepcopy(run.model.config.hf_slim)
    with pytest.raises(HfSlimError, match="already physically pruned"):
        run.trainer.train()
    assert run.model.config.hf_slim == structure


@pytest.mark.parametrize("model_type", TRAINED_TYPES)
def test_logged_remaining_parameters_predict_the_pruned_model(pruned_run, model_type):
    run = pruned_run(model_type)
    logs = [log for log in run.trainer.state.log_history if "remaining_parameters" in log]
    final = count_parameters(run.model)
    assert logs[-1]["remaining_parameters"] == final
    # The estimate made under the masks, before physical pruning, was already exact.
    in_training = [log for log in logs if "loss" in log]
    assert in_training[-1]["remaining_parameters"] == final
    assert in_training[0]["remaining_parameters"] > final
