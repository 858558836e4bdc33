"""The focal-loss paper's own numbers, which flx's tables stand beside.

Lin, Goyal, Girshick, He, Dollár, "Focal Loss for Dense Object Detection", ICCV 2017 (arXiv:1708.02002),
Table 1: RetinaNet on COCO, detection AP. flx measures classification AP on other data: compare the shape (which
setting wins, by how much), not the values.
"""

from __future__ import annotations

import math

CITATION = "Lin et al., Focal Loss for Dense Object Detection, ICCV 2017, Table 1 (COCO detection AP)"

# Table 1a: alpha-balanced CE (gamma = 0), ResNet-50, 600 px: alpha -> AP
TABLE1A = {0.10: 0.0, 0.25: 10.8, 0.50: 30.2, 0.75: 31.1, 0.90: 30.8, 0.99: 28.7, 0.999: 25.1}
# Table 1b: FL, gamma -> (its best alpha, AP)
TABLE1B = {
    0.0: (0.75, 31.1),
    0.1: (0.75, 31.4),
    0.2: (0.75, 31.9),
    0.5: (0.50, 32.9),
    1.0: (0.25, 33.7),
    2.0: (0.25, 34.0),
    5.0: (0.25, 32.2),
}
# Table 1c: FL (gamma 2, alpha 0.25), ResNet-50, 600 px: (#scales, #aspect ratios) -> AP
TABLE1C = {(1, 1): 30.3, (2, 1): 31.9, (3, 1): 31.8, (1, 3): 32.4, (2, 3): 34.2, (3, 3): 34.0, (4, 3): 33.9}
# Table 1d: OHEM, (batch size B, NMS threshold, neg:pos cap) -> AP; FL -> 36.0
TABLE1D_OHEM = {
    (128, 0.7, None): 31.1,
    (256, 0.7, None): 31.8,
    (512, 0.7, None): 30.6,
    (128, 0.5, None): 32.8,
    (256, 0.5, None): 31.0,
    (512, 0.5, None): 27.6,
    (128, 0.5, 3.0): 31.1,
    (256, 0.5, 3.0): 28.3,
    (512, 0.5, 3.0): 24.0,
}
TABLE1D_FL = 36.0
TABLES = ("table1a", "table1b", "table1c", "table1d")


def _none(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def paper_ap(table: str, row: dict) -> float | None:
    """The paper's AP for the setting in ``row`` (loss, alpha, gamma, ohem_k, ohem_ratio), if it reports one."""
    loss = row.get("loss")
    if table == "table1a" and loss == "balanced_ce":
        return TABLE1A.get(_none(row.get("alpha")))
    if table == "table1b" and loss == "focal":
        entry = TABLE1B.get(_none(row.get("gamma")))
        return entry[1] if entry else None
    if table == "table1c" and loss == "focal":
        sc, ar = _none(row.get("anchor_scales")), _none(row.get("anchor_ratios"))
        return TABLE1C.get((int(sc), int(ar))) if sc is not None and ar is not None else None
    if table == "table1d":
        if loss == "ohem":
            k, nms, r = _none(row.get("ohem_k")), _none(row.get("ohem_nms")), _none(row.get("ohem_ratio"))
            return TABLE1D_OHEM.get((int(k) if k is not None else None, nms, r))
        if loss == "focal":
            return TABLE1D_FL
    return None
