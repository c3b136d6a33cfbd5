"""Tests of `DistillationTrainer`: training, the loss, accumulation, cached logits, errors, checkpoints."""

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tiny_models import LABELS, MODEL_TYPES, NUM_LABELS, VOCAB_SIZE, build_model, make_dataset, make_inputs
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    TrainingArguments,
)

import hf_slim
from hf_slim import DistillationConfig, DistillationTrainer, get_adapter
from hf_slim.distill.trainer import PROJECTIONS_NAME
from hf_slim.errors import HfSlimError, IncompatibleModelsError, InvalidLayerMapError

DISTILL_LOGS = ("loss_kd", "loss_ce", "loss_hidden", "loss_attention")


def make_args(output_dir, **kwargs) -> DistillationConfig:
    defaults = dict(
        output_dir=str(output_dir),
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        max_steps=2,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        logging_steps=1,
    )
    defaults.update(kwargs)
    return DistillationConfig(**defaults)


def bert(num_layers=2, hidden=32, heads=4, seed=0, **config_kwargs) -> BertForSequenceClassification:
    """A tiny BERT without dropout, so that training-mode forward passes are deterministic."""
    torch.manual_seed(seed)
    config = dict(
        vocab_size=VOCAB_SIZE,
        max_position_embeddings=64,
        hidden_size=hidden,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        intermediate_size=37,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        id2label=LABELS,
    )
    config.update(config_kwargs)
    return BertForSequenceClassification(BertConfig(**config))


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def count_calls(module: torch.nn.Module) -> list[int]:
    """Count forward calls of `module` (the returned list holds one counter)."""
    calls = [0]

    def hook(*_):
        calls[0] += 1

    module.register_forward_hook(hook)
    return calls


def with_labels(model_type: str, batch_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    batch = make_inputs(model_type, batch_size=batch_size, seed=seed)
    batch["labels"] = torch.arange(batch_size) % NUM_LABELS
    return batch


def rows(dataset, indices) -> dict[str, torch.Tensor]:
    """Dataset rows as a batch of tensors (the dataset's columns must all be numeric)."""
    return {k: torch.tensor(v) for k, v in dataset.select(indices).to_dict().items()}


# -- training on every architecture ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_training_updates_student_and_leaves_teacher_untouched(tmp_path, model_type):
    teacher = build_model(model_type, num_layers=4, seed=0)
    student = build_model(model_type, num_layers=2, seed=1)
    teacher_before, student_before = snapshot(teacher), snapshot(student)
    args = make_args(tmp_path, hidden_weight=1.0, attention_weight=1.0, learning_rate=1e-3)
    trainer = DistillationTrainer(
        model=student, args=args, teacher_model=teacher, train_dataset=make_dataset(model_type, num_rows=8)
    )
    result = trainer.train()

    student_after = snapshot(student)
    changed = [k for k in student_before if not torch.equal(student_before[k], student_after[k])]
    layers_prefix = get_adapter(student).layers_prefix(student)
    assert any(k.startswith(layers_prefix + ".") for k in changed), "the student's transformer layers did not train"
    teacher_after = snapshot(teacher)
    assert teacher_after.keys() == teacher_before.keys()
    for key in teacher_before:
        assert torch.equal(teacher_before[key], teacher_after[key]), f"teacher parameter {key} changed"
    for model in (teacher, trainer.accelerator.unwrap_model(trainer.teacher_model)):
        assert not model.training
        assert not any(p.requires_grad for p in model.parameters())

    assert math.isfinite(result.training_loss)
    step_logs = [log for log in trainer.state.log_history if "loss" in log]
    assert len(step_logs) == 2
    for log in step_logs:
        for name in ("loss", *DISTILL_LOGS):
            assert name in log, f"{name} missing from {log}"
            assert math.isfinite(log[name])
        assert log["loss_hidden"] > 0 and log["loss_attention"] > 0


# -- narrower student: learned projections ----------------------------------------------------------------------------


def test_narrow_student_trains_projections_that_are_not_saved_with_the_model(tmp_path):
    teacher = bert(num_layers=4, hidden=32, heads=4, seed=0)
    student = bert(num_layers=2, hidden=16, heads=4, seed=1)
    args = make_args(tmp_path, hidden_weight=1.0, attention_weight=1.0, learning_rate=1e-2, max_steps=3)
    trainer = DistillationTrainer(
        model=student, args=args, teacher_model=teacher, train_dataset=make_dataset("bert", num_rows=12)
    )
    # Uniform layer map {0: 1, 1: 3}: one 16 -> 32 projection per student layer.
    assert trainer.layer_map == {0: 1, 1: 3}
    assert sorted(trainer.projections.keys()) == ["0", "1"]
    for projection in trainer.projections.values():
        assert (projection.in_features, projection.out_features) == (16, 32)
    before = snapshot(trainer.projections)

    trainer.train()

    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert all(id(p) in optimized for p in trainer.projections.parameters())
    after = snapshot(trainer.projections)
    for key in before:
        assert not torch.equal(before[key], after[key]), f"projection {key} did not train"

    save_dir = tmp_path / "saved"
    trainer.save_model(str(save_dir))
    saved = load_file(str(save_dir / "model.safetensors"))
    assert not any("projection" in key for key in saved)
    assert set(saved) == set(student.state_dict())
    assert not (save_dir / PROJECTIONS_NAME).exists()
    reloaded = AutoModelForSequenceClassification.from_pretrained(str(save_dir))
    assert isinstance(reloaded, BertForSequenceClassification)
    assert reloaded.config.hidden_size == 16
    for key, value in student.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key


# -- the loss ---------------------------------------------------------------------------------------------------------


def reference_per_sample_loss(student, teacher, batch, alpha, temperature) -> torch.Tensor:
    """(1 - alpha) * CE + alpha * T² * KL(teacher_T || student_T), per sample, written out from the definitions."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        s_logits = student(**inputs).logits.double()
        teacher.eval()
        t_logits = teacher(**inputs).logits.double()
    s_log_probs = s_logits.log_softmax(-1)
    ce = -s_log_probs.gather(1, batch["labels"][:, None]).squeeze(1)
    p_teacher = (t_logits / temperature).softmax(-1)
    kl = (p_teacher * (p_teacher.log() - (s_logits / temperature).log_softmax(-1))).sum(-1)
    kd = temperature**2 * kl
    # The teacher disagrees strongly with the student, so the KD term is not negligible.
    assert (alpha * kd).mean() > 0.05
    return (1 - alpha) * ce + alpha * kd


def test_compute_loss_matches_hand_computed_reference(tmp_path):
    teacher = bert(num_layers=4, seed=0)
    with torch.no_grad():
        teacher.classifier.weight.mul_(50)  # confident teacher: a KD term far from zero
    student = bert(num_layers=2, seed=1)
    alpha, temperature = 0.3, 3.0
    trainer = DistillationTrainer(
        model=student,
        args=make_args(tmp_path, alpha_kd=alpha, temperature=temperature),
        teacher_model=teacher,
    )
    batch = with_labels("bert", batch_size=4)
    student.train()
    per_sample = reference_per_sample_loss(student, teacher, batch, alpha, temperature).float()

    loss = trainer.compute_loss(student, batch)
    torch.testing.assert_close(loss.detach(), per_sample.mean(), rtol=1e-5, atol=1e-6)

    # With the accumulated batch size given, the loss is the per-sample sum over that count.
    loss = trainer.compute_loss(student, batch, num_items_in_batch=torch.tensor(8))
    torch.testing.assert_close(loss.detach(), per_sample.sum() / 8, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(per_sample.sum() / 8, per_sample.mean())


def test_unlabelled_rows_get_only_the_soft_target_loss(tmp_path):
    # Teacher-labelled augmented text carries label -100: no CE, only alpha * KD, and it still counts as a sample.
    teacher = bert(num_layers=4, seed=0)
    with torch.no_grad():
        teacher.classifier.weight.mul_(50)
    student = bert(num_layers=2, seed=1)
    alpha, temperature = 0.3, 3.0
    trainer = DistillationTrainer(
        model=student, args=make_args(tmp_path, alpha_kd=alpha, temperature=temperature), teacher_model=teacher
    )
    batch = with_labels("bert", batch_size=4)
    student.train()
    full = reference_per_sample_loss(student, teacher, batch, alpha, temperature).float()
    kd_only = reference_per_sample_loss(student, teacher, batch, 1.0, temperature).float() * alpha
    batch["labels"][2:] = -100
    expected = torch.cat([full[:2], kd_only[2:]])

    loss = trainer.compute_loss(student, batch, num_items_in_batch=torch.tensor(4))
    torch.testing.assert_close(loss.detach(), expected.sum() / 4, rtol=1e-5, atol=1e-6)
    # The Trainer's count of items includes the unlabelled rows.
    assert trainer._get_num_items_in_batch([batch], torch.device("cpu")).item() == 4


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
    def train_one_step(output_dir, batch_size, accumulation):
        teacher = bert(num_layers=4, seed=0)
        student = bert(num_layers=2, seed=1)
        args = make_args(
            output_dir,
            max_steps=1,
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            optim="sgd",
            learning_rate=0.5,
            lr_scheduler_type="constant",
            max_grad_norm=0.0,  # clipping would hide a wrongly scaled gradient
            hidden_weight=1.0,
            seed=7,
        )
        trainer = DistillationTrainer(
            model=student, args=args, teacher_model=teacher, train_dataset=make_dataset("bert", num_rows=8)
        )
        trainer.train()
        return snapshot(student), trainer.state.log_history[0]["loss"]

    initial = snapshot(bert(num_layers=2, seed=1))
    full, full_loss = train_one_step(tmp_path / "full", batch_size=8, accumulation=1)
    accumulated, accumulated_loss = train_one_step(tmp_path / "accumulated", batch_size=4, accumulation=2)

    largest_update = max((full[k] - initial[k]).abs().max().item() for k in full)
    assert largest_update > 1e-3
    for key in full:
        torch.testing.assert_close(accumulated[key], full[key], rtol=0, atol=1e-5, msg=key)
    assert accumulated_loss == pytest.approx(full_loss, abs=2e-4)


# -- cached teacher logits --------------------------------------------------------------------------------------------


def test_cache_teacher_logits_adds_the_teachers_logits(tmp_path):
    teacher = build_model("bert", num_layers=2, seed=0)
    dataset = make_dataset("bert", num_rows=10)
    columns = list(dataset.column_names)
    assert teacher.training

    cached = hf_slim.cache_teacher_logits(teacher, dataset, batch_size=4)

    assert dataset.column_names == columns
    assert cached.column_names == [*columns, "teacher_logits"]
    assert teacher.training  # mode restored
    logits = torch.tensor(cached["teacher_logits"])
    assert logits.shape == (10, NUM_LABELS)
    teacher.eval()
    with torch.no_grad():
        expected = teacher(**{k: v for k, v in rows(dataset, range(10)).items() if k != "labels"}).logits
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_cached_logits_give_the_online_loss_without_running_the_teacher(tmp_path):
    teacher = build_model("bert", num_layers=4, seed=0)
    with torch.no_grad():
        teacher.classifier.weight.mul_(50)
    dataset = make_dataset("bert", num_rows=12)
    cached = hf_slim.cache_teacher_logits(teacher, dataset)
    teacher_calls = count_calls(teacher)
    student = bert(num_layers=2, seed=1)
    args = make_args(tmp_path, alpha_kd=0.7, temperature=2.0, max_steps=3)

    online = DistillationTrainer(model=student, args=args, teacher_model=teacher, train_dataset=dataset)
    student.train()
    online_batch = online.data_collator([dataset[i] for i in range(4)])
    assert "teacher_logits" not in online_batch
    online_loss = online.compute_loss(student, online_batch)
    assert teacher_calls[0] == 1

    trainer = DistillationTrainer(model=student, args=args, teacher_model=teacher, train_dataset=cached)
    batch = next(iter(trainer.get_train_dataloader()))  # remove_unused_columns=True keeps the cached column
    assert batch["teacher_logits"].shape == (4, NUM_LABELS)
    cached_batch = trainer.data_collator([cached[i] for i in range(4)])
    cached_loss = trainer.compute_loss(student, cached_batch)
    torch.testing.assert_close(cached_loss, online_loss, rtol=1e-5, atol=1e-5)
    assert teacher_calls[0] == 1

    before = snapshot(student)
    trainer.train()
    assert teacher_calls[0] == 1, "the teacher ran although every batch carried cached logits"
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())
    assert all("loss_kd" in log for log in trainer.state.log_history if "loss" in log)


def test_cached_logits_train_without_a_teacher(tmp_path):
    cached = hf_slim.cache_teacher_logits(build_model("vit", num_layers=2, seed=0), make_dataset("vit", num_rows=8))
    student = build_model("vit", num_layers=1, seed=1)
    before = snapshot(student)
    trainer = DistillationTrainer(model=student, args=make_args(tmp_path, learning_rate=1e-3), train_dataset=cached)
    assert trainer.teacher_model is None
    result = trainer.train()
    assert math.isfinite(result.training_loss)
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())
    step_logs = [log for log in trainer.state.log_history if "loss" in log]
    assert step_logs and all(log["loss_kd"] > 0 for log in step_logs)


def test_no_teacher_and_no_cached_logits_is_a_clear_error(tmp_path):
    student = build_model("bert", num_layers=1, seed=1)
    # Known before any work: the dataset has no cached-logits column.
    with pytest.raises(HfSlimError, match=r"teacher_model=.*cache_teacher_logits"):
        DistillationTrainer(model=student, args=make_args(tmp_path / "out"), train_dataset=make_dataset("bert"))
    assert not (tmp_path / "out").exists()


def test_no_teacher_and_no_cached_logits_in_a_batch_is_a_clear_error(tmp_path):
    # A dataset without column names (a plain list) can only be checked when the batch arrives.
    student = build_model("bert", num_layers=1, seed=1)
    rows = [
        dict(zip(("input_ids", "attention_mask", "labels"), row, strict=True)) for row in _rows(make_dataset("bert"))
    ]
    trainer = DistillationTrainer(model=student, args=make_args(tmp_path), train_dataset=rows)
    with pytest.raises(HfSlimError, match=r"teacher_model=.*cache_teacher_logits"):
        trainer.train()


def _rows(dataset):
    return zip(dataset["input_ids"], dataset["attention_mask"], dataset["labels"], strict=True)


# -- errors before training -------------------------------------------------------------------------------------------


def _pair(**student_kwargs):
    return bert(num_layers=4, seed=0), bert(num_layers=2, seed=1, **student_kwargs)


INCOMPATIBLE = {
    "num_labels": (
        lambda: _pair(id2label={0: "neg", 1: "pos"}),
        {},
        IncompatibleModelsError,
        r"Teacher has 3 labels but the student has 2",
    ),
    "label_names": (
        lambda: _pair(id2label={0: "pos", 1: "neu", 2: "neg"}),
        {},
        IncompatibleModelsError,
        r"label names",
    ),
    "vocab_size": (
        lambda: _pair(vocab_size=50),
        {},
        IncompatibleModelsError,
        rf"vocabulary has {VOCAB_SIZE} tokens but the student's has 50",
    ),
    "head_count": (
        lambda: _pair(num_attention_heads=2),
        {"attention_weight": 1.0},
        IncompatibleModelsError,
        r"student has 2 heads per layer and the teacher has 4",
    ),
    "student_layer": (
        _pair,
        {"hidden_weight": 1.0, "layer_map": {0: 1, 5: 3}},
        InvalidLayerMapError,
        r"student layers \[5\] \(the student has 2 layers",
    ),
    "teacher_layer": (
        _pair,
        {"hidden_weight": 1.0, "layer_map": [1, 9]},
        InvalidLayerMapError,
        r"teacher layers \[9\] \(the teacher has 4 layers",
    ),
    "modality": (
        lambda: (build_model("vit", num_layers=2), bert(num_layers=1)),
        {},
        IncompatibleModelsError,
        r"Teacher is a image model \(vit\) and the student a text model \(bert\)",
    ),
}


@pytest.mark.parametrize("case", INCOMPATIBLE)
def test_incompatible_models_fail_in_the_constructor(tmp_path, case):
    build, arg_kwargs, error, message = INCOMPATIBLE[case]
    teacher, student = build()
    output_dir = tmp_path / "out"
    assert issubclass(error, ValueError)
    with pytest.raises(error, match=message):
        DistillationTrainer(
            model=student,
            args=make_args(output_dir, **arg_kwargs),
            teacher_model=teacher,
            train_dataset=make_dataset("bert", num_rows=4),
        )
    assert not output_dir.exists()


def test_plain_training_arguments_are_rejected(tmp_path):
    teacher, student = _pair()
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], save_strategy="no")
    with pytest.raises(HfSlimError, match=r"args must be a DistillationConfig, got TrainingArguments"):
        DistillationTrainer(model=student, args=args, teacher_model=teacher)


@pytest.mark.parametrize("weights", [{"hidden_weight": 1.0}, {"attention_weight": 1.0}])
def test_teacher_internals_without_teacher_are_rejected(tmp_path, weights):
    student = bert(num_layers=2, seed=1)
    with pytest.raises(HfSlimError, match=r"need the teacher's hidden states: pass teacher_model="):
        DistillationTrainer(model=student, args=make_args(tmp_path, **weights), teacher_model=None)


# -- teacher given as a path ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["bert", "vit", "wav2vec2"])
def test_teacher_path_is_loaded_with_the_students_auto_class(tmp_path, model_type):
    teacher = build_model(model_type, num_layers=2, seed=0)
    teacher.save_pretrained(str(tmp_path / "teacher"))
    student = build_model(model_type, num_layers=1, seed=1)
    trainer = DistillationTrainer(
        model=student, args=make_args(tmp_path / "out"), teacher_model=str(tmp_path / "teacher")
    )
    loaded = trainer.accelerator.unwrap_model(trainer.teacher_model)
    assert type(loaded) is type(teacher)
    assert not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    loaded_state = loaded.state_dict()
    assert loaded_state.keys() == teacher.state_dict().keys()
    for key, value in teacher.state_dict().items():
        assert torch.equal(loaded_state[key], value), key


# -- evaluation -------------------------------------------------------------------------------------------------------


def test_evaluate_reports_the_students_own_loss_and_accuracy(tmp_path):
    teacher = bert(num_layers=4, seed=0)
    student = bert(num_layers=2, seed=1)
    with torch.no_grad():
        student.classifier.weight.mul_(20)  # spread-out predictions: the accuracy is not a constant
    teacher_calls = count_calls(teacher)
    eval_dataset = make_dataset("bert", num_rows=10, seed=3)  # 10 rows in batches of 4: an uneven last batch
    trainer = DistillationTrainer(
        model=student,
        args=make_args(tmp_path, alpha_kd=0.9, hidden_weight=1.0),
        teacher_model=teacher,
        eval_dataset=eval_dataset,
        compute_metrics=hf_slim.build_compute_metrics(),
    )
    metrics = trainer.evaluate()

    assert teacher_calls[0] == 0
    batch = rows(eval_dataset, range(10))
    labels = batch.pop("labels")
    student.eval()
    with torch.no_grad():
        logits = student(**batch).logits
    expected_loss = F.cross_entropy(logits, labels).item()
    expected_accuracy = (logits.argmax(-1) == labels).float().mean().item()
    assert metrics["eval_loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert metrics["eval_accuracy"] == pytest.approx(expected_accuracy)


# -- checkpoints ------------------------------------------------------------------------------------------------------


def _narrow_trainer(output_dir, **kwargs):
    teacher = bert(num_layers=4, hidden=32, seed=0)
    student = bert(num_layers=2, hidden=16, seed=1)
    args = make_args(
        output_dir,
        hidden_weight=1.0,
        learning_rate=1e-2,
        max_steps=4,
        save_strategy="steps",
        save_steps=2,
        seed=11,
        **kwargs,
    )
    return DistillationTrainer(
        model=student, args=args, teacher_model=teacher, train_dataset=make_dataset("bert", num_rows=16)
    )


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory):
    """Four steps with a checkpoint every two: (output dir, final projections, final student state)."""
    output_dir = tmp_path_factory.mktemp("uninterrupted")
    trainer = _narrow_trainer(output_dir)
    trainer.train()
    return output_dir, snapshot(trainer.projections), snapshot(trainer.model)


def test_checkpoints_save_and_load_projections(tmp_path, uninterrupted_run):
    output_dir, final_projections, _ = uninterrupted_run
    checkpoint = output_dir / "checkpoint-2"
    saved = load_file(str(checkpoint / PROJECTIONS_NAME))
    assert set(saved) == {"0.weight", "0.bias", "1.weight", "1.bias"}
    assert (output_dir / "checkpoint-4" / PROJECTIONS_NAME).exists()
    assert not any("projection" in key for key in load_file(str(checkpoint / "model.safetensors")))
    assert not all(torch.equal(saved[k], final_projections[k]) for k in saved)  # steps 3-4 moved them on

    trainer = _narrow_trainer(tmp_path)
    assert not torch.equal(trainer.projections["0"].weight, saved["0.weight"])
    trainer._load_from_checkpoint(str(checkpoint))
    for key, value in snapshot(trainer.projections).items():
        assert torch.equal(value, saved[key]), key


def test_resume_from_checkpoint_matches_the_uninterrupted_run(tmp_path, uninterrupted_run):
    output_dir, final_projections, final_student = uninterrupted_run
    trainer = _narrow_trainer(tmp_path)
    trainer.train(resume_from_checkpoint=str(output_dir / "checkpoint-2"))
    assert trainer.state.global_step == 4
    for key, value in snapshot(trainer.model).items():
        torch.testing.assert_close(value, final_student[key], rtol=1e-5, atol=1e-6, msg=key)
    for key, value in snapshot(trainer.projections).items():
        torch.testing.assert_close(value, final_projections[key], rtol=1e-5, atol=1e-6, msg=key)


def test_projection_gradients_are_cleared_after_each_optimizer_step(tmp_path):
    teacher = bert(num_layers=4, hidden=32, seed=0)
    student = bert(num_layers=2, hidden=16, seed=1)
    args = make_args(tmp_path, hidden_weight=1.0, optim="sgd", learning_rate=1e-2, max_steps=2)
    trainer = DistillationTrainer(
        model=student, args=args, teacher_model=teacher, train_dataset=make_dataset("bert", num_rows=8)
    )
    trainer.train()
    # The student's gradients are cleared after the last step; the projections' must be too.
    assert all(p.grad is None or not p.grad.any() for p in student.parameters())
    for name, param in trainer.projections.named_parameters():
        assert param.grad is None or not param.grad.any(), f"projection {name} kept a stale gradient"


def test_hidden_kd_between_equal_widths_trains_without_an_empty_clipping_warning(tmp_path, recwarn):
    teacher, student = bert(num_layers=4, seed=0), bert(num_layers=2, seed=1)
    args = make_args(tmp_path, hidden_weight=1.0, max_grad_norm=1.0)
    trainer = DistillationTrainer(
        model=student, args=args, teacher_model=teacher, train_dataset=make_dataset("bert", num_rows=8)
    )
    assert len(list(trainer.projections.parameters())) == 0
    trainer.train()
    assert not [w for w in recwarn if "empty generator" in str(w.message)]
