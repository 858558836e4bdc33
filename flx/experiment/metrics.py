"""Metrics of a run: one table (name, label, digits, higher-is-better) that the report, the figures and the
sweep's summary all read, and the functions that compute them from labels and scores (scikit-learn)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str  # the record's column
    label: str  # a table's header
    digits: int = 3
    higher_is_better: bool = True
    in_table: bool = True  # a column of the report's table and the sweep's summary


METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        Metric("ap", "AP"),  # classification: average precision; detection: COCO AP (IoU 0.50:0.95)
        Metric("ap50", "AP50"),
        Metric("ap75", "AP75"),
        Metric("anchor_ap", "anchor AP"),  # detection: AP of object vs background anchors
        Metric("val_ap", "val AP"),  # the validation split's: what choices are made on
        Metric("val_ap50", "val AP50", in_table=False),
        Metric("roc_auc", "ROC-AUC"),
        Metric("balanced_accuracy", "balanced acc."),  # at threshold 0.5 on the model's own probabilities
        Metric("accuracy", "accuracy"),  # the same threshold: what the cats-vs-dogs experiment reported
        Metric("best_f1", "best F1"),
        Metric("precision", "precision at best F1", in_table=False),
        Metric("recall", "recall at best F1", in_table=False),
        Metric("ece", "ECE", digits=4, higher_is_better=False),
        Metric("train_loss", "train loss", digits=4, higher_is_better=False, in_table=False),
    ]
}
TABLE_METRICS = tuple(m for m in METRICS if METRICS[m].in_table)
SUMMARY_METRICS = ("ap", "roc_auc", "ece")  # the sweep's closing table: the report shows the rest
PRIMARY = "ap"  # what "best" means in tables, figures and verdicts


def expected_calibration_error(y_true, y_score, n_bins: int = 15) -> float:
    """Binary ECE: sum over equal-width bins of p(y = 1) of |bin share| * |mean(y) - mean(score)|."""
    import numpy as np

    y_true = np.asarray(y_true, dtype=float)
    y_score = np.asarray(y_score, dtype=float)
    bins = np.minimum((y_score * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.mean() * abs(y_true[mask].mean() - y_score[mask].mean())
    return float(ece)


def shift_prior(y_score, train_prior: float, test_prior: float):
    """Probabilities of a model trained where positives had share ``train_prior``, corrected to a test set where
    they have ``test_prior`` (Bayes' rule: the odds are multiplied by the ratio of the priors' odds; Saerens et
    al. 2002). A model that is calibrated on its training distribution is calibrated on the test set after it."""
    import numpy as np

    p = np.clip(np.asarray(y_score, dtype=float), 1e-12, 1 - 1e-12)
    odds = p / (1 - p) * (test_prior / (1 - test_prior)) / (train_prior / (1 - train_prior))
    return odds / (1 + odds)


def classification_metrics(y_true, y_score, train_prior: float | None = None) -> dict:
    """For the positive (minority) class: AP (the primary metric), ROC-AUC, balanced accuracy and accuracy at
    threshold 0.5 of ``y_score`` as it is, the best F1 and its precision/recall, and ECE. With ``train_prior``
    (the positives' share in training), ECE is measured after :func:`shift_prior` to the test set's own share:
    a model trained at 1:100 and tested at 1:1 is judged on calibration, not on the known prior shift."""
    import numpy as np
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        balanced_accuracy_score,
        precision_recall_curve,
        roc_auc_score,
    )

    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=float)
    precision, recall, _ = precision_recall_curve(y_true, y_score)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    best = int(np.argmax(f1))
    predicted = (y_score >= 0.5).astype(int)
    calibrated = y_score if train_prior is None else shift_prior(y_score, train_prior, float(np.mean(y_true)))
    return {
        "ap": float(average_precision_score(y_true, y_score)),
        "roc_auc": float(roc_auc_score(y_true, y_score)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, predicted)),
        "accuracy": float(accuracy_score(y_true, predicted)),
        "best_f1": float(f1[best]),
        "precision": float(precision[best]),
        "recall": float(recall[best]),
        "ece": expected_calibration_error(y_true, calibrated),
    }


def average_precision(y_true, y_score) -> float:
    """scikit-learn's ``average_precision_score`` for binary labels (the same value, to rounding), without
    sorting every score: only the positives' distinct scores are sorted, and each negative is counted against
    them with a binary search. For millions of scores with few positives (a detector's anchors) it is several
    times faster. AP = sum over the positives' distinct scores v (descending) of (positives at v / positives) x
    precision at threshold v, where precision counts every example scoring >= v (ties included)."""
    import numpy as np

    y_true = np.asarray(y_true).astype(bool).ravel()
    y_score = np.asarray(y_score).ravel()
    positives = y_score[y_true]
    if len(positives) == 0:
        return 0.0  # scikit-learn warns and returns 0 (recall is undefined)
    values, at_value = np.unique(positives, return_counts=True)  # ascending
    # negatives scoring >= values[j]: those whose insertion point (side="right") is beyond j
    where = np.searchsorted(values, y_score[~y_true], side="right")
    neg_at_or_above = np.cumsum(np.bincount(where, minlength=len(values) + 1)[::-1])[::-1][1:]
    tps = np.cumsum(at_value[::-1])[::-1].astype(float)  # positives scoring >= values[j]
    precision = tps / (tps + neg_at_or_above)
    return float(np.sum(at_value[::-1] / len(positives) * precision[::-1]))
