"""Classification metrics that work offline.

`evaluate.load("accuracy")` fetches its script from the Hub. hf_slim uses `evaluate` when the metric loads (cached or
online) and otherwise computes the same numbers with scikit-learn, so offline runs and tests still report metrics.
"""

from __future__ import annotations

import functools
import logging

import numpy as np

logger = logging.getLogger(__name__)

BUILTIN_METRICS = ("accuracy", "f1", "precision", "recall", "matthews_correlation")


@functools.cache
def _load_evaluate_metric(name: str):
    try:
        import evaluate

        return evaluate.load(name)
    except Exception as err:  # offline, no cache, or no such metric
        logger.info("evaluate.load(%r) unavailable (%s); using the built-in implementation.", name, err)
        return None


def _builtin(name: str, predictions: np.ndarray, references: np.ndarray, average: str) -> float:
    from sklearn import metrics

    if name == "accuracy":
        return float(metrics.accuracy_score(references, predictions))
    if name == "matthews_correlation":
        return float(metrics.matthews_corrcoef(references, predictions))
    fn = {"f1": metrics.f1_score, "precision": metrics.precision_score, "recall": metrics.recall_score}[name]
    return float(fn(references, predictions, average=average, zero_division=0))


def classification_metrics(
    predictions, references, metrics=("accuracy",), average: str = "macro", use_evaluate: bool = True
) -> dict[str, float]:
    """Compute classification metrics from predicted and true class ids.

    Args:
        predictions, references (array-like of int): Predicted and true class ids.
        metrics (`tuple[str, ...]`): Names among `accuracy`, `f1`, `precision`, `recall`, `matthews_correlation`.
        average (`str`, defaults to `"macro"`): Averaging for f1/precision/recall over classes.
        use_evaluate (`bool`, defaults to `True`): Try `evaluate.load(name)` first.
    """
    if isinstance(metrics, str):
        metrics = (metrics,)
    predictions, references = np.asarray(predictions), np.asarray(references)
    unknown = [m for m in metrics if m not in BUILTIN_METRICS]
    if unknown:
        raise ValueError(f"Unknown metric(s) {unknown}; choose from {', '.join(BUILTIN_METRICS)}.")
    results = {}
    for name in metrics:
        metric = _load_evaluate_metric(name) if use_evaluate else None
        if metric is not None:
            kwargs = {"average": average} if name in ("f1", "precision", "recall") else {}
            value = metric.compute(predictions=predictions, references=references, **kwargs)[name]
            results[name] = float(value)
        else:
            results[name] = _builtin(name, predictions, references, average)
    return results


def build_compute_metrics(metrics=("accuracy",), average: str = "macro"):
    """A `compute_metrics` function for `Trainer`: argmax of the logits against the label ids."""
    if isinstance(metrics, str):
        metrics = (metrics,)

    def compute_metrics(eval_pred) -> dict[str, float]:
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(logits, tuple):
            logits = logits[0]
        return classification_metrics(np.argmax(logits, axis=-1), labels, metrics=metrics, average=average)

    return compute_metrics
