"""Unit tests of the pure distillation losses against independent, loop-based references."""

import math
import re

import pytest
import torch
from torch import nn

from hf_slim.distill.losses import attention_loss, hidden_state_loss, kd_loss
from hf_slim.errors import IncompatibleModelsError


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=_generator(seed), dtype=torch.float64) * scale


def _attention_probs(batch: int, heads: int, seq: int, seed: int) -> torch.Tensor:
    return torch.softmax(_randn(batch, heads, seq, seq, seed=seed, scale=2.0), dim=-1)


def _has_number(text: str, number: int) -> bool:
    return re.search(rf"(?<![\d.]){number}(?!\d|\.\d)", text) is not None


# --------------------------------------------------------------------------------------------------------------
# References (explicit loops and plain math, independent of the implementation)
# --------------------------------------------------------------------------------------------------------------


def reference_kd_per_sample(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> list[float]:
    """Unscaled KL(softmax(t/T) || softmax(s/T)) per sample: sum_c p_t * (log p_t - log p_s)."""
    values = []
    for s_row, t_row in zip(student.double(), teacher.double(), strict=True):
        p_s = torch.softmax(s_row / temperature, dim=-1)
        p_t = torch.softmax(t_row / temperature, dim=-1)
        total = 0.0
        for c in range(s_row.shape[0]):
            total += p_t[c].item() * (math.log(p_t[c].item()) - math.log(p_s[c].item()))
        values.append(total)
    return values


def reference_hidden_per_sample(
    student: torch.Tensor, teacher: torch.Tensor, loss: str, mask: torch.Tensor | None
) -> list[float]:
    """Mean over valid positions of (mse: mean over features of squared error; cosine: 1 - cos)."""
    batch, seq, width = teacher.shape
    values = []
    for b in range(batch):
        total, count = 0.0, 0
        for i in range(seq):
            if mask is not None and mask[b, i] == 0:
                continue
            s, t = student[b, i].tolist(), teacher[b, i].tolist()
            if loss == "mse":
                total += sum((x - y) ** 2 for x, y in zip(s, t, strict=True))
                count += width
            else:
                dot = sum(x * y for x, y in zip(s, t, strict=True))
                norm_s = math.sqrt(sum(x * x for x in s))
                norm_t = math.sqrt(sum(y * y for y in t))
                total += 1.0 - dot / (norm_s * norm_t)
                count += 1
        values.append(total / count)
    return values


def reference_attention_per_sample(
    student: torch.Tensor, teacher: torch.Tensor, loss: str, mask: torch.Tensor | None
) -> list[float]:
    """Mean over heads and valid queries of (mse: mean over keys of squared error; kl: KL(teacher || student))."""
    batch, heads, seq, _ = teacher.shape
    values = []
    for b in range(batch):
        total, count = 0.0, 0
        for h in range(heads):
            for q in range(seq):
                if mask is not None and mask[b, q] == 0:
                    continue
                s, t = student[b, h, q].tolist(), teacher[b, h, q].tolist()
                if loss == "mse":
                    total += sum((x - y) ** 2 for x, y in zip(s, t, strict=True)) / seq
                else:
                    # 0 * log 0 = 0: keys with zero teacher probability contribute nothing.
                    total += sum(y * (math.log(y) - math.log(x)) for x, y in zip(s, t, strict=True) if y > 0)
                count += 1
        values.append(total / count)
    return values


# --------------------------------------------------------------------------------------------------------------
# kd_loss
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 4.0, 8.0])
def test_kd_loss_matches_reference(temperature):
    student, teacher = _randn(4, 7, seed=1, scale=3.0), _randn(4, 7, seed=2, scale=3.0)
    reference = [temperature**2 * v for v in reference_kd_per_sample(student, teacher, temperature)]

    per_sample = kd_loss(student, teacher, temperature=temperature, reduction="none")
    assert per_sample.shape == (4,)
    torch.testing.assert_close(per_sample, torch.tensor(reference, dtype=per_sample.dtype), rtol=1e-4, atol=1e-6)
    mean = kd_loss(student, teacher, temperature=temperature)
    assert mean.item() == pytest.approx(sum(reference) / len(reference), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 3.0, 10.0])
def test_kd_loss_is_t_squared_times_unscaled_kl(temperature):
    student, teacher = _randn(3, 5, seed=3, scale=2.0), _randn(3, 5, seed=4, scale=2.0)
    unscaled = reference_kd_per_sample(student, teacher, temperature)
    value = kd_loss(student, teacher, temperature=temperature, reduction="sum").item()
    assert value == pytest.approx(temperature**2 * sum(unscaled), rel=1e-4, abs=1e-7)
    # The unscaled KL itself is not what is returned (for T != 1), so the T² factor is really applied.
    if temperature != 1.0:
        assert value != pytest.approx(sum(unscaled), rel=1e-2)


def test_kd_loss_reductions_are_consistent():
    student, teacher = _randn(5, 6, seed=5), _randn(5, 6, seed=6)
    per_sample = kd_loss(student, teacher, temperature=2.0, reduction="none")
    assert per_sample.shape == (5,)
    assert (per_sample > 0).all()
    torch.testing.assert_close(kd_loss(student, teacher, temperature=2.0, reduction="sum"), per_sample.sum())
    torch.testing.assert_close(kd_loss(student, teacher, temperature=2.0, reduction="mean"), per_sample.mean())
    torch.testing.assert_close(kd_loss(student, teacher, temperature=2.0), per_sample.mean())


def test_kd_loss_per_sample_is_independent_of_other_samples():
    student, teacher = _randn(4, 6, seed=7), _randn(4, 6, seed=8)
    full = kd_loss(student, teacher, reduction="none")
    for i in range(4):
        alone = kd_loss(student[i : i + 1], teacher[i : i + 1], reduction="none")
        torch.testing.assert_close(alone, full[i : i + 1])


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
def test_kd_loss_is_zero_for_equal_logits(temperature):
    logits = _randn(3, 9, seed=9, scale=4.0)
    assert kd_loss(logits, logits.clone(), temperature=temperature).item() == pytest.approx(0.0, abs=1e-9)
    # Softmax is shift invariant: logits shifted by a per-sample constant give the same distribution.
    shifted = logits + torch.tensor([[1.0], [-5.0], [100.0]], dtype=logits.dtype)
    assert kd_loss(shifted, logits, temperature=temperature).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_loss_approaches_hinton_limit_for_large_temperature():
    # Hinton et al. (2015): for T >> logits, T² KL -> sum_c (s_c - t_c)² / (2 C) with zero-mean (centred) logits.
    num_classes = 6
    student, teacher = _randn(4, num_classes, seed=10), _randn(4, num_classes, seed=11)
    diff = (student - student.mean(-1, keepdim=True)) - (teacher - teacher.mean(-1, keepdim=True))
    limit = (diff.pow(2).sum(-1) / (2 * num_classes)).mean().item()

    def relative_error(temperature):
        return abs(kd_loss(student, teacher, temperature=temperature).item() - limit) / limit

    # Within 0.5% at T=100 (float32 arithmetic), while at T=1 the loss is clearly away from the limit.
    assert relative_error(100.0) < 5e-3
    assert relative_error(10.0) < 2e-2
    assert relative_error(1.0) > 10 * relative_error(100.0)


def test_kd_loss_gradient_magnitude_is_temperature_independent():
    # d(T² KL)/ds = T (p_s - p_t) -> (centred(s) - centred(t)) / C as T grows: the same order at every T.
    num_classes = 5
    student_init, teacher = _randn(3, num_classes, seed=12), _randn(3, num_classes, seed=13)
    diff = (student_init - student_init.mean(-1, keepdim=True)) - (teacher - teacher.mean(-1, keepdim=True))
    limit_grad = diff / num_classes / student_init.shape[0]  # batch mean

    norms = {}
    for temperature in (1.0, 4.0, 20.0, 200.0):
        student = student_init.clone().requires_grad_(True)
        kd_loss(student, teacher, temperature=temperature).backward()
        norms[temperature] = student.grad.norm().item()
        if temperature >= 20.0:
            torch.testing.assert_close(student.grad.to(limit_grad.dtype), limit_grad, rtol=0.1, atol=1e-3)
    assert max(norms.values()) / min(norms.values()) < 3.0


def test_kd_loss_does_not_backpropagate_into_teacher():
    student = _randn(2, 4, seed=14).requires_grad_(True)
    teacher = _randn(2, 4, seed=15).requires_grad_(True)
    kd_loss(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_kd_loss_computes_in_float32_for_half_inputs():
    student, teacher = _randn(2, 4, seed=16).half(), _randn(2, 4, seed=17).half()
    value = kd_loss(student, teacher, temperature=2.0)
    assert value.dtype == torch.float32
    reference = 4.0 * sum(reference_kd_per_sample(student.float(), teacher.float(), 2.0)) / 2
    assert value.item() == pytest.approx(reference, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("temperature", [0, 0.0, -1.0, -0.5])
def test_kd_loss_rejects_non_positive_temperature(temperature):
    logits = _randn(2, 3, seed=18)
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(logits, logits, temperature=temperature)


def test_kd_loss_rejects_unknown_reduction():
    logits = _randn(2, 3, seed=19)
    with pytest.raises(ValueError, match="batchmean"):
        kd_loss(logits, logits, reduction="batchmean")


def test_kd_loss_shape_mismatch_raises_incompatible_models_error():
    with pytest.raises(IncompatibleModelsError) as excinfo:
        kd_loss(_randn(2, 3, seed=20), _randn(2, 5, seed=21))
    message = str(excinfo.value)
    assert "(2, 3)" in message
    assert "(2, 5)" in message
    assert isinstance(excinfo.value, ValueError)


# --------------------------------------------------------------------------------------------------------------
# hidden_state_loss
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["mse", "cosine"])
@pytest.mark.parametrize("masked", [False, True])
def test_hidden_state_loss_matches_reference(loss, masked):
    student, teacher = _randn(3, 5, 4, seed=30), _randn(3, 5, 4, seed=31)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]]) if masked else None
    reference = reference_hidden_per_sample(student, teacher, loss, mask)

    per_sample = hidden_state_loss(student, teacher, loss=loss, attention_mask=mask, reduction="none")
    assert per_sample.shape == (3,)
    torch.testing.assert_close(per_sample, torch.tensor(reference, dtype=per_sample.dtype), rtol=1e-5, atol=1e-6)
    mean = hidden_state_loss(student, teacher, loss=loss, attention_mask=mask)
    assert mean.item() == pytest.approx(sum(reference) / 3, rel=1e-5)
    total = hidden_state_loss(student, teacher, loss=loss, attention_mask=mask, reduction="sum")
    assert total.item() == pytest.approx(sum(reference), rel=1e-5)


def test_hidden_state_loss_mask_changes_the_value():
    # Guards the masked-reference test above: the mask must actually matter for these inputs.
    student, teacher = _randn(2, 4, 3, seed=32), _randn(2, 4, 3, seed=33)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    masked = hidden_state_loss(student, teacher, attention_mask=mask)
    unmasked = hidden_state_loss(student, teacher)
    assert masked.item() != pytest.approx(unmasked.item(), rel=1e-3)


@pytest.mark.parametrize("loss", ["mse", "cosine"])
def test_hidden_state_loss_ignores_masked_positions(loss):
    student, teacher = _randn(2, 6, 4, seed=34), _randn(2, 6, 4, seed=35)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]])
    before = hidden_state_loss(student, teacher, loss=loss, attention_mask=mask, reduction="none")

    student2, teacher2 = student.clone(), teacher.clone()
    padded = mask == 0
    student2[padded] = _randn(int(padded.sum()), 4, seed=36, scale=50.0)
    teacher2[padded] = _randn(int(padded.sum()), 4, seed=37, scale=50.0)
    after = hidden_state_loss(student2, teacher2, loss=loss, attention_mask=mask, reduction="none")
    torch.testing.assert_close(after, before)

    # Changing a real position does change the loss.
    student2[0, 0] += 3.0
    changed = hidden_state_loss(student2, teacher2, loss=loss, attention_mask=mask, reduction="none")
    assert changed[0].item() != pytest.approx(before[0].item(), rel=1e-4)
    torch.testing.assert_close(changed[1], before[1])


def test_hidden_state_loss_fully_masked_sample_is_zero_not_nan():
    student, teacher = _randn(2, 3, 4, seed=38), _randn(2, 3, 4, seed=39)
    mask = torch.tensor([[1, 1, 1], [0, 0, 0]])
    per_sample = hidden_state_loss(student, teacher, attention_mask=mask, reduction="none")
    assert torch.isfinite(per_sample).all()
    assert per_sample[1].item() == 0.0
    assert per_sample[0].item() > 0.0


@pytest.mark.parametrize("loss", ["mse", "cosine"])
def test_hidden_state_loss_is_zero_for_equal_states(loss):
    hidden = _randn(2, 3, 4, seed=40)
    assert hidden_state_loss(hidden, hidden.clone(), loss=loss).item() == pytest.approx(0.0, abs=1e-6)


def test_cosine_hidden_state_loss_is_scale_invariant_and_mse_is_not():
    student, teacher = _randn(2, 3, 4, seed=41), _randn(2, 3, 4, seed=42)
    cosine = hidden_state_loss(student, teacher, loss="cosine")
    torch.testing.assert_close(hidden_state_loss(7.0 * student, teacher, loss="cosine"), cosine)
    mse = hidden_state_loss(student, teacher, loss="mse")
    assert hidden_state_loss(7.0 * student, teacher, loss="mse").item() > 2 * mse.item()


@pytest.mark.parametrize("loss", ["mse", "cosine"])
def test_hidden_state_loss_uses_projection_when_widths_differ(loss):
    torch.manual_seed(0)
    projection = nn.Linear(5, 7).double()
    student = _randn(2, 3, 5, seed=43).requires_grad_(True)
    teacher = _randn(2, 3, 7, seed=44)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])

    value = hidden_state_loss(student, teacher, projection=projection, loss=loss, attention_mask=mask)
    with torch.no_grad():
        projected = projection(student)
    reference = reference_hidden_per_sample(projected, teacher, loss, mask)
    assert value.item() == pytest.approx(sum(reference) / 2, rel=1e-5)

    value.backward()
    assert projection.weight.grad is not None and projection.weight.grad.abs().sum() > 0
    assert projection.bias.grad is not None and projection.bias.grad.abs().sum() > 0
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_hidden_state_loss_projection_is_trainable():
    torch.manual_seed(0)
    projection = nn.Linear(3, 6)
    student, teacher = _randn(4, 5, 3, seed=45).float(), _randn(4, 5, 6, seed=46).float()
    optimizer = torch.optim.SGD(projection.parameters(), lr=0.1)
    first = hidden_state_loss(student, teacher, projection=projection)
    for _ in range(20):
        optimizer.zero_grad()
        hidden_state_loss(student, teacher, projection=projection).backward()
        optimizer.step()
    assert hidden_state_loss(student, teacher, projection=projection).item() < first.item()


def test_hidden_state_loss_width_mismatch_without_projection_raises():
    with pytest.raises(IncompatibleModelsError) as excinfo:
        hidden_state_loss(_randn(2, 3, 5, seed=47), _randn(2, 3, 7, seed=48))
    message = str(excinfo.value)
    assert _has_number(message, 5)
    assert _has_number(message, 7)


def test_hidden_state_loss_projection_with_wrong_output_width_raises():
    projection = nn.Linear(5, 6).double()
    with pytest.raises(IncompatibleModelsError, match=r"\(2, 3, 6\).*\(2, 3, 7\)"):
        hidden_state_loss(_randn(2, 3, 5, seed=49), _randn(2, 3, 7, seed=50), projection=projection)


def test_hidden_state_loss_sequence_length_mismatch_raises():
    with pytest.raises(IncompatibleModelsError, match=r"\(2, 3, 4\).*\(2, 5, 4\)"):
        hidden_state_loss(_randn(2, 3, 4, seed=51), _randn(2, 5, 4, seed=52))


@pytest.mark.parametrize("loss", ["l1", "MSE", "kl", ""])
def test_hidden_state_loss_rejects_unknown_loss(loss):
    hidden = _randn(1, 2, 3, seed=53)
    with pytest.raises(ValueError, match=re.escape(repr(loss))):
        hidden_state_loss(hidden, hidden, loss=loss)


# --------------------------------------------------------------------------------------------------------------
# attention_loss
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["mse", "kl"])
@pytest.mark.parametrize("masked", [False, True])
def test_attention_loss_matches_reference(loss, masked):
    student, teacher = _attention_probs(2, 3, 4, seed=60), _attention_probs(2, 3, 4, seed=61)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]) if masked else None
    reference = reference_attention_per_sample(student, teacher, loss, mask)

    per_sample = attention_loss(student, teacher, loss=loss, attention_mask=mask, reduction="none")
    assert per_sample.shape == (2,)
    torch.testing.assert_close(per_sample, torch.tensor(reference, dtype=per_sample.dtype), rtol=1e-5, atol=1e-7)
    mean = attention_loss(student, teacher, loss=loss, attention_mask=mask)
    assert mean.item() == pytest.approx(sum(reference) / 2, rel=1e-5)
    total = attention_loss(student, teacher, loss=loss, attention_mask=mask, reduction="sum")
    assert total.item() == pytest.approx(sum(reference), rel=1e-5)


def test_attention_loss_default_is_kl():
    student, teacher = _attention_probs(2, 2, 3, seed=62), _attention_probs(2, 2, 3, seed=63)
    torch.testing.assert_close(attention_loss(student, teacher), attention_loss(student, teacher, loss="kl"))
    assert attention_loss(student, teacher).item() != pytest.approx(
        attention_loss(student, teacher, loss="mse").item(), rel=1e-3
    )


def test_attention_kl_is_teacher_to_student_direction():
    student, teacher = _attention_probs(1, 2, 4, seed=64), _attention_probs(1, 2, 4, seed=65)
    forward = attention_loss(student, teacher, loss="kl")
    backward = attention_loss(teacher, student, loss="kl")
    reference = reference_attention_per_sample(student, teacher, "kl", None)[0]
    assert forward.item() == pytest.approx(reference, rel=1e-5)
    assert backward.item() != pytest.approx(reference, rel=1e-3)


@pytest.mark.parametrize("loss", ["mse", "kl"])
def test_attention_loss_ignores_masked_queries(loss):
    student, teacher = _attention_probs(2, 2, 5, seed=66), _attention_probs(2, 2, 5, seed=67)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    before = attention_loss(student, teacher, loss=loss, attention_mask=mask, reduction="none")

    # Replace the rows of padded queries by other (still valid) distributions.
    student2, teacher2 = student.clone(), teacher.clone()
    other_s, other_t = _attention_probs(2, 2, 5, seed=68), _attention_probs(2, 2, 5, seed=69)
    for b in range(2):
        for q in range(5):
            if mask[b, q] == 0:
                student2[b, :, q] = other_s[b, :, q]
                teacher2[b, :, q] = other_t[b, :, q]
    after = attention_loss(student2, teacher2, loss=loss, attention_mask=mask, reduction="none")
    torch.testing.assert_close(after, before)

    # Without the mask these changes do matter.
    assert attention_loss(student2, teacher2, loss=loss).item() != pytest.approx(
        attention_loss(student, teacher, loss=loss).item(), rel=1e-4
    )


def test_attention_kl_is_finite_with_zero_probability_padded_keys():
    # Padded keys get probability 0 from both models; 0 * log 0 must count as 0, not NaN.
    batch, heads, seq = 2, 2, 4
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    key_bias = torch.where(mask.bool(), 0.0, float("-inf")).double()[:, None, None, :]
    student = torch.softmax(_randn(batch, heads, seq, seq, seed=70) + key_bias, dim=-1)
    teacher = torch.softmax(_randn(batch, heads, seq, seq, seed=71) + key_bias, dim=-1)
    assert (student == 0).any() and (teacher == 0).any()

    for loss in ("kl", "mse"):
        per_sample = attention_loss(student, teacher, loss=loss, attention_mask=mask, reduction="none")
        assert torch.isfinite(per_sample).all()
        reference = reference_attention_per_sample(student, teacher, loss, mask)
        torch.testing.assert_close(per_sample, torch.tensor(reference, dtype=per_sample.dtype), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("loss", ["mse", "kl"])
def test_attention_loss_is_zero_for_equal_attentions(loss):
    probs = _attention_probs(2, 3, 4, seed=72)
    assert attention_loss(probs, probs.clone(), loss=loss).item() == pytest.approx(0.0, abs=1e-9)


def test_attention_loss_gradient_flows_to_student_only():
    logits = _randn(1, 2, 3, 3, seed=73).requires_grad_(True)
    teacher = _attention_probs(1, 2, 3, seed=74).requires_grad_(True)
    attention_loss(torch.softmax(logits, dim=-1), teacher).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert teacher.grad is None


def test_attention_loss_head_count_mismatch_raises():
    student, teacher = _attention_probs(2, 3, 4, seed=75), _attention_probs(2, 5, 4, seed=76)
    with pytest.raises(IncompatibleModelsError) as excinfo:
        attention_loss(student, teacher)
    message = str(excinfo.value)
    assert _has_number(message, 3)
    assert _has_number(message, 5)


def test_attention_loss_sequence_length_mismatch_raises():
    with pytest.raises(IncompatibleModelsError, match=r"\(1, 2, 3, 3\).*\(1, 2, 4, 4\)"):
        attention_loss(_attention_probs(1, 2, 3, seed=77), _attention_probs(1, 2, 4, seed=78))


@pytest.mark.parametrize(
    "student_shape, teacher_shape",
    [((2, 4, 4), (2, 4, 4)), ((2, 2, 4, 4), (2, 2, 4)), ((1, 2, 2, 4, 4), (1, 2, 2, 4, 4))],
)
def test_attention_loss_rejects_wrong_rank(student_shape, teacher_shape):
    student = torch.softmax(_randn(*student_shape, seed=79), dim=-1)
    teacher = torch.softmax(_randn(*teacher_shape, seed=80), dim=-1)
    with pytest.raises(ValueError, match=r"\(batch, heads, seq, seq\)") as excinfo:
        attention_loss(student, teacher)
    assert not isinstance(excinfo.value, IncompatibleModelsError)


@pytest.mark.parametrize("loss", ["cosine", "KL", "l2"])
def test_attention_loss_rejects_unknown_loss(loss):
    probs = _attention_probs(1, 1, 2, seed=81)
    with pytest.raises(ValueError, match=re.escape(repr(loss))):
        attention_loss(probs, probs, loss=loss)
