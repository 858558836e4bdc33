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


def classification_metrics(y_true, y_score) -> dict:
    """AP (the paper's metric), ROC-AUC, the best F1 and its precision/recall, and ECE, for the positive class."""
    import numpy as np
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=float)
    precision, recall, _ = precision_recall_curve(y_true, y_score)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    best = int(np.argmax(f1))
    return {
        "ap": float(average_precision_score(y_true, y_score)),
        "roc_auc": float(roc_auc_score(y_true, y_score)),
        "best_f1": float(f1[best]),
        "precision": float(precision[best]),
        "recall": float(recall[best]),
        "ece": expected_calibration_error(y_true, y_score),
    }
