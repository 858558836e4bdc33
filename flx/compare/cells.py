"""``flx compare --cell``: one comparison per cell of a map (say canvas size by clutter), each a complete
``flx compare`` in its own folder under the results folder, and the map of their verdicts: ``map.md`` and
``regime_map.png``. Every cell tunes each family on the same budget and pairs its own seeds; the map only
gathers what the cells found."""

from __future__ import annotations

import re
from pathlib import Path

from flx.compare.run import base_config, interruptible, run_compare
from flx.errors import ConfigError

SAFE = re.compile(r"^[A-Za-z0-9_.+-]+$")  # a cell's folder name never leaves the results folder


def parse_cells(items: list[str]) -> list[list[str]]:
    """``["image_size=64,clutter=8", ...]`` -> ``[["image_size=64", "clutter=8"], ...]``: every cell names the
    same one or two fields, in the same order, and no two cells are the same."""
    cells = []
    for item in items:
        parts = [p.strip() for p in item.split(",") if p.strip()]
        if not parts or any(p.count("=") != 1 or not p.split("=")[1] for p in parts):
            raise ConfigError(f"--cell got {item!r}; accepted: FIELD=VALUE,... e.g. image_size=64,clutter=8")
        cells.append(parts)
    if not cells:
        return []
    fields = [tuple(p.split("=")[0] for p in cell) for cell in cells]
    if len(set(fields)) > 1 or len(fields[0]) > 2 or len(set(fields[0])) < len(fields[0]):
        raise ConfigError(
            f"--cell items name the fields {', '.join(sorted({'+'.join(f) for f in fields}))}; accepted: the "
            "same one or two fields, in the same order, in every cell (a map has at most two axes)"
        )
    seen = set()
    for cell in cells:
        if tuple(cell) in seen:
            raise ConfigError(f"--cell {','.join(cell)} is given twice; accepted: each cell once")
        seen.add(tuple(cell))
    return cells


def cell_name(cell: list[str]) -> str:
    """The cell's folder: ``image_size-64_clutter-8``."""
    name = "_".join(p.replace("=", "-") for p in cell)
    if not SAFE.match(name):
        raise ConfigError(
            f"--cell {','.join(cell)} cannot name a folder; accepted: values of letters, digits, '.', '+', '-'"
        )
    return name


@interruptible
def run_cells(data: str, cells: list[str], out: str | Path, on_event=lambda kind, **f: None, **compare):
    """Each cell of ``cells`` (``--cell`` items) is ``run_compare(data, sets=[*sets, *cell], out=out/CELL,
    **compare)``, one after another; every cell's config is checked before the first trains. Returns
    ``(cells, results, page)``: the parsed cells, their :class:`~flx.compare.result.CompareResult` and
    ``out/map.md``."""
    parsed = parse_cells(cells)
    if not parsed:
        raise ConfigError("--cell got nothing; accepted: FIELD=VALUE,... e.g. image_size=64,clutter=8")
    sets = list(compare.pop("sets", ()))
    fixed = {item.split("=")[0].strip() for item in sets}
    for field in (p.split("=")[0] for p in parsed[0]):
        if field in fixed:
            raise ConfigError(
                f"--set {field} and --cell {field} both; accepted: a field either fixed (--set) or mapped (--cell)"
            )
    label, positive, drop = compare.get("label"), compare.get("positive"), compare.get("drop")
    base_config(data, label, positive, sets, drop)  # the fixed fields' errors name --set
    for cell in parsed:  # a cell that cannot run is refused before any trains, its error naming --cell
        cell_name(cell)
        try:
            base_config(data, label, positive, [*sets, *cell], drop)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("--set", "--cell", 1)) from None
    out = Path(out)
    results = []
    from flx.compare.map import write_map
    from flx.results.lock import hold

    with hold(out, "flx compare --cell"):  # one map at a time writes map.md (each cell holds its own folder)
        for i, cell in enumerate(parsed):
            on_event("cell", cell=cell, index=i + 1, total=len(parsed))
            results.append(
                run_compare(
                    data, sets=[*sets, *cell], out=out / cell_name(cell), on_event=on_event, **compare
                )
            )
        return parsed, results, write_map(out, parsed, results)
