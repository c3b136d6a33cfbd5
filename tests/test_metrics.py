import math

import numpy as np
import pytest
from transformers import EvalPrediction

import hf_slim
from hf_slim import metrics as metrics_module
from hf_slim.metrics import BUILTIN_METRICS, build_compute_metrics, classification_metrics

# Three classes, six examples; hand-computed per class (precision, recall, f1):
#   class 0: predicted at 0 and 5, true at 0 and 1 -> tp 1, fp 1, fn 1 -> (1/2, 1/2, 1/2)
#   class 1: predicted at 1, 2, 3, true at 2 and 3 -> tp 2, fp 1, fn 0 -> (2/3, 1, 4/5)
#   class 2: predicted at 4, true at 4 and 5       -> tp 1, fp 0, fn 1 -> (1, 1/2, 2/3)
REFERENCES = [0, 0, 1, 1, 2, 2]
PREDICTIONS = [0, 1, 1, 1, 2, 0]
EXPECTED = {
    "accuracy": 4 / 6,
    "f1": (1 / 2 + 4 / 5 + 2 / 3) / 3,  # 59/90
    "precision": (1 / 2 + 2 / 3 + 1) / 3,  # 13/18
    "recall": (1 / 2 + 1 + 1 / 2) / 3,  # 2/3
    # Multi-class MCC: (c*s - sum p_k t_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2)), c=4 correct, s=6,
    # predicted counts p=(2, 3, 1), true counts t=(2, 2, 2): (24 - 12) / sqrt((36 - 14)(36 - 12)).
    "matthews_correlation": 12 / math.sqrt(22 * 24),
}
# Micro averaging over single-label classes equals accuracy.
EXPECTED_MICRO = {"f1": 4 / 6, "precision": 4 / 6, "recall": 4 / 6}


@pytest.fixture
def fresh_metric_cache():
    """`_load_evaluate_metric` is cached per process; isolate tests that change what `evaluate.load` does."""
    metrics_module._load_evaluate_metric.cache_clear()
    yield
    metrics_module._load_evaluate_metric.cache_clear()


@pytest.fixture
def evaluate_unavailable(monkeypatch, fresh_metric_cache):
    """`evaluate.load` fails fast, as offline without a cache, without waiting on the real lookup."""
    import evaluate

    calls = []

    def unavailable(name, *args, **kwargs):
        calls.append(name)
        raise ConnectionError(f"offline: cannot load {name}")

    monkeypatch.setattr(evaluate, "load", unavailable)
    return calls


def _assert_expected(results, expected):
    assert set(results) == set(expected)
    for name, value in expected.items():
        assert isinstance(results[name], float), name
        assert results[name] == pytest.approx(value, abs=1e-12), name


def test_builtin_metrics_hand_computed():
    results = classification_metrics(PREDICTIONS, REFERENCES, metrics=BUILTIN_METRICS, use_evaluate=False)
    _assert_expected(results, EXPECTED)


def test_default_is_accuracy():
    assert classification_metrics(PREDICTIONS, REFERENCES, use_evaluate=False) == pytest.approx({"accuracy": 4 / 6})
    assert hf_slim.classification_metrics is classification_metrics


def test_micro_average():
    results = classification_metrics(
        PREDICTIONS, REFERENCES, metrics=("f1", "precision", "recall"), average="micro", use_evaluate=False
    )
    _assert_expected(results, EXPECTED_MICRO)


def test_numpy_inputs_and_perfect_predictions():
    labels = np.array([2, 0, 1, 1])
    results = classification_metrics(labels, labels.copy(), metrics=BUILTIN_METRICS, use_evaluate=False)
    _assert_expected(results, dict.fromkeys(BUILTIN_METRICS, 1.0))


def test_use_evaluate_false_never_loads(monkeypatch):
    def fail(name):
        raise AssertionError(f"evaluate metric {name!r} loaded although use_evaluate=False")

    monkeypatch.setattr(metrics_module, "_load_evaluate_metric", fail)
    _assert_expected(
        classification_metrics(PREDICTIONS, REFERENCES, metrics=BUILTIN_METRICS, use_evaluate=False), EXPECTED
    )


def test_offline_fallback_same_numbers(fresh_metric_cache):
    # conftest sets HF_HUB_OFFLINE=1, so the real evaluate.load cannot fetch the metric scripts and the built-in
    # implementation answers (or, with a local evaluate cache, evaluate does): the numbers are the same either way.
    names = ("accuracy", "f1")
    results = classification_metrics(PREDICTIONS, REFERENCES, metrics=names, use_evaluate=True)
    _assert_expected(results, {name: EXPECTED[name] for name in names})


def test_fallback_when_evaluate_load_fails(evaluate_unavailable):
    calls = evaluate_unavailable
    results = classification_metrics(PREDICTIONS, REFERENCES, metrics=BUILTIN_METRICS, use_evaluate=True)
    _assert_expected(results, EXPECTED)
    assert sorted(calls) == sorted(BUILTIN_METRICS)
    # The failure is cached: the Hub is not asked again for every evaluation.
    classification_metrics(PREDICTIONS, REFERENCES, metrics=BUILTIN_METRICS, use_evaluate=True)
    assert sorted(calls) == sorted(BUILTIN_METRICS)


def test_evaluate_metric_used_when_available(monkeypatch, fresh_metric_cache):
    import evaluate

    class FakeMetric:
        def __init__(self, name):
            self.name = name
            self.calls = []

        def compute(self, predictions, references, **kwargs):
            self.calls.append((list(predictions), list(references), kwargs))
            return {self.name: 0.25}

    loaded = {}

    def load(name, *args, **kwargs):
        loaded[name] = FakeMetric(name)
        return loaded[name]

    monkeypatch.setattr(evaluate, "load", load)
    results = classification_metrics(PREDICTIONS, REFERENCES, metrics=("accuracy", "f1"), average="weighted")
    assert results == {"accuracy": 0.25, "f1": 0.25}
    assert loaded["accuracy"].calls == [(PREDICTIONS, REFERENCES, {})]
    assert loaded["f1"].calls == [(PREDICTIONS, REFERENCES, {"average": "weighted"})]


@pytest.mark.parametrize(
    "names, unknown",
    [(("accuracy", "bleu"), "bleu"), (("f1_score",), "f1_score"), (("Accuracy",), "Accuracy")],
)
def test_unknown_metric(names, unknown):
    with pytest.raises(ValueError) as excinfo:
        classification_metrics(PREDICTIONS, REFERENCES, metrics=names, use_evaluate=False)
    message = str(excinfo.value)
    assert repr(unknown) in message
    for name in BUILTIN_METRICS:
        assert name in message


def _logits_for(predictions, num_labels=3):
    # Random logits whose argmax is `predictions`.
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(len(predictions), num_labels)).astype(np.float32)
    logits[np.arange(len(predictions)), predictions] = 10.0
    return logits


def test_build_compute_metrics_eval_prediction(evaluate_unavailable):
    compute_metrics = build_compute_metrics(metrics=("accuracy", "f1"))
    logits = _logits_for(PREDICTIONS)
    results = compute_metrics(EvalPrediction(predictions=logits, label_ids=np.array(REFERENCES)))
    _assert_expected(results, {"accuracy": EXPECTED["accuracy"], "f1": EXPECTED["f1"]})


def test_build_compute_metrics_tuple_predictions(evaluate_unavailable):
    compute_metrics = build_compute_metrics(metrics=("accuracy", "recall"), average="micro")
    logits = _logits_for(PREDICTIONS)
    hidden = np.zeros((len(PREDICTIONS), 5, 7), dtype=np.float32)  # e.g. extra model outputs after the logits
    results = compute_metrics(EvalPrediction(predictions=(logits, hidden), label_ids=np.array(REFERENCES)))
    _assert_expected(results, {"accuracy": 4 / 6, "recall": 4 / 6})


def test_build_compute_metrics_default_is_accuracy(evaluate_unavailable):
    compute_metrics = build_compute_metrics()
    logits = _logits_for(REFERENCES)
    assert compute_metrics(EvalPrediction(predictions=logits, label_ids=np.array(REFERENCES))) == {"accuracy": 1.0}
