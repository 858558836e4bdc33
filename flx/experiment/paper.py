"""The focal-loss paper's own numbers, which flx's tables stand beside, read from one data file
(``flx/experiment/paper.toml``): Lin et al., ICCV 2017, Table 1, COCO detection AP. flx measures AP on other data:
compare the shape (which setting wins, by how much), not the values."""

from __future__ import annotations

import functools
import math
from importlib import resources

import tomllib


@functools.cache
def _paper() -> dict:
    return tomllib.loads(resources.files("flx.experiment").joinpath("paper.toml").read_text())


def citation() -> str:
    return _paper()["citation"]


def paper_tables() -> tuple[str, ...]:
    """The tables a spec's ``[report] paper`` may cite."""
    return tuple(k for k, v in _paper().items() if isinstance(v, list))


def _same(value, wanted) -> bool:
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    if wanted == "none":
        return missing
    return not missing and float(value) == float(wanted)


def paper_ap(table: str, row: dict) -> float | None:
    """The paper's AP for the setting in ``row`` (its loss and the table's keys), if ``table`` reports one."""
    for entry in _paper().get(table, []):
        if row.get("loss") != entry["loss"]:
            continue
        for *values, ap in entry["rows"]:
            if all(_same(row.get(k), v) for k, v in zip(entry["keys"], values, strict=True)):
                return ap
    return None
