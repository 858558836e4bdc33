"""The map of a cell-by-cell comparison (``flx compare --cell``): ``map.md``, one row per cell with what the task
was like there (imbalance, hard negatives, the ceiling, the training time) and each claim's verdict, and
``regime_map.png``, one panel per claim with a square per cell holding the paired difference and its interval.
Everything comes from the cells' results; nothing is retrained."""

from __future__ import annotations

import math
from pathlib import Path

from flx.compare.recheck import KINDS, picked, verdict_text

MAP_PAGE, MAP_FIGURE = "map.md", "regime_map.png"
DETECTION_COLUMNS = ["imbalance", "hard negatives per image", "best family: AP50"]
DETECTION_TEXT = (
    "imbalance: background anchors per object anchor; hard negatives: background anchors above p 0.05 per test "
    "image, by each family's finalists; best family: the highest mean test AP, with its AP50 (how near the "
    "task's ceiling)"
)


def _mean(runs, family: str | None, column: str) -> float:
    """The mean of ``column`` over the ok finalist runs of ``family`` (every family: None)."""
    if runs is None or column not in runs:
        return math.nan
    ok = runs[runs["status"] == "ok"]
    if family is not None:
        ok = ok[ok["loss"] == family]
    values = ok[column].dropna()
    return float(values.mean()) if len(values) else math.nan


def cell_facts(result) -> dict:
    """What one cell's task was like, from its finalists: background anchors per object anchor, hard negatives
    per image (background anchors above p 0.05 on the test images) by family, the best family (highest mean test
    AP) with its AP50, and the minutes its runs trained (trials and finalists, their ``wall_time_s``)."""
    from flx.results.store import Store

    runs = result.runs
    by_ap = {f: _mean(runs, f, "ap") for f in result.families}
    best = max(by_ap, key=lambda f: -math.inf if math.isnan(by_ap[f]) else by_ap[f])
    minutes = sum(r["wall_time_s"] or 0.0 for r in Store(result.out).records()) / 60
    return {
        "imbalance": _mean(runs, None, "imbalance"),
        "hard_negatives": {f: _mean(runs, f, "hard_negatives") for f in result.families},
        "best": best,
        "best_ap": by_ap[best],
        "best_ap50": _mean(runs, best, "ap50"),
        "minutes": minutes,
    }


def _map_verdict(v) -> str:
    """A map cell's verdict with the smallest difference its seeds could detect (the interval's half-width)."""
    if v.n < 2 or v.low != v.low:
        return verdict_text(v)
    return f"{verdict_text(v)}; detectable ±{(v.high - v.low) / 2:.3f}"


def _number(x: float, digits: int = 0) -> str:
    return "–" if x != x else f"{x:,.{digits}f}"


def write_map(out: Path, cells: list[list[str]], results: list) -> Path:
    """``out/map.md`` and ``out/regime_map.png``."""
    from tabulate import tabulate

    from flx.results.store import write_atomic

    fields = [p.split("=")[0] for p in cells[0]]
    claims = [v.name for v in results[0].verdicts]
    detection = results[0].detection
    header = [*fields, *(DETECTION_COLUMNS if detection else ["best family: test AP"]), "train min", *claims]
    rows, total = [], 0.0
    for cell, result in zip(cells, results, strict=True):
        facts = cell_facts(result)
        total += facts["minutes"]
        row = [p.split("=")[1] for p in cell]
        if detection:
            hard = " / ".join(f"{f} {_number(h)}" for f, h in facts["hard_negatives"].items())
            row += [f"1:{_number(facts['imbalance'])}", hard]
            row += [f"{facts['best']}: {_number(facts['best_ap50'], 3)}"]
        else:
            row += [f"{facts['best']}: {_number(facts['best_ap'], 3)}"]
        row += [_number(facts["minutes"], 1)]
        by_name = {v.name: v for v in result.verdicts}
        row += [_map_verdict(by_name[c]) if c in by_name else "–" for c in claims]
        rows.append(row)
    figure = map_figure(out, cells, results, claims)
    lines = [
        f"# flx compare: {len(cells)} cells",
        "",
        f"Each cell is a complete comparison in its own folder ({', '.join(f'`{r.out.name}/`' for r in results)}"
        f"): every family tuned on the same budget ({results[0].budget} trials) on the validation split, the "
        f"best of each retrained on {results[0].seeds} paired seeds, the claims declared before those runs. "
        "Each verdict is the paired test-AP difference a − b with its 95% interval, the signed-rank p and the "
        "failed runs (scored AP 0); detectable: the interval's half-width, the smallest difference the cell's "
        f"seeds could detect. {DETECTION_TEXT if detection else 'best family: the highest mean test AP'}; train min: "
        f"the minutes the cell's runs trained (trials and finalists), {total:.1f} in all.",
        "",
        tabulate(rows, headers=header, tablefmt="github", disable_numparse=True),
        "",
        f"![regime map]({figure.name})",
        *_recheck_lines(cells, results),
    ]
    path = out / MAP_PAGE
    write_atomic(path, lambda p: p.write_text("\n".join(lines) + "\n"))
    return path


def _recheck_lines(cells: list[list[str]], results: list) -> list[str]:
    """The cells' fresh seeds (``--recheck``, ``--more-seeds``): a section per kind that ran or is due, each
    verdict on the finalists' seeds beside the fresh ones, and the cells whose verdicts it picks but that it has not
    re-run yet."""
    lines = []
    for kind in KINDS:
        ran, due = [], []
        for cell, result in zip(cells, results, strict=True):
            recheck = result.fresh.get(kind.folder)
            if recheck is not None:
                ran.append((cell, recheck))
            elif names := picked(result, kind):
                due.append(f"{', '.join(cell)} ({len(names)} verdict(s))")
        if ran or due:
            lines += _fresh_section(kind, ran, due)
    return lines


def _fresh_section(kind, ran: list, due: list[str]) -> list[str]:
    from tabulate import tabulate

    rows = []
    for cell, recheck in ran:
        seeds = f"{recheck.seeds[0]}-{recheck.seeds[-1]}"
        for v, w in zip(recheck.before, recheck.verdicts, strict=True):
            rows.append([", ".join(cell), v.name, verdict_text(v), seeds, verdict_text(w)])
    header = ["cell", "claim", "finalists' seeds", "fresh seeds", "on the fresh seeds"]
    table = tabulate(rows, headers=header, tablefmt="github", disable_numparse=True) if rows else ""
    pending = f" Not re-run yet ({kind.option}): {'; '.join(due)}." if due else ""
    return [
        "",
        f"## {kind.section}",
        "",
        f"{kind.which.capitalize()}, re-run on fresh seeds with each family fixed to "
        f"the setting its cell's study chose and judged on those seeds alone (each cell's "
        f"`{kind.folder}/{kind.page}`); {len(rows)} verdict(s) in {len(ran)} cell(s) re-run.{pending}",
        *(["", table] if table else []),
    ]


def _axis(values: list[str]) -> list[str]:
    """An axis's values in order: numerically where they are numbers, else as first given."""
    unique = list(dict.fromkeys(values))
    try:
        return sorted(unique, key=float)
    except ValueError:
        return unique


def square_text(v, fresh: list = ()) -> str:
    """What a map square says: the difference, its interval and the verdict; that the two sides were one model
    where a family chose the other's setting (the verdict then measures nothing); and below a rule, the verdict
    on each sample of fresh seeds that re-ran the claim (``fresh``: (seeds, verdict) pairs)."""
    if v.n < 2:
        text = v.verdict
    else:
        same = "\n(the same model)" if v.identical else ""
        text = f"{v.mean:+.3f}\n[{v.low:+.3f}, {v.high:+.3f}]\n{v.verdict}{same}"
    for seeds, w in fresh:
        shown = f"{w.mean:+.3f} {w.verdict}" if w.n >= 2 else w.verdict
        text += f"\n――\nseeds {seeds[0]}-{seeds[-1]}:\n{shown}"
    return text


def _square(cell: list[str]) -> tuple[str, str]:
    """A cell's place on the map: the value of its first field (x) and of its second ("" with one field)."""
    return cell[0].split("=")[1], (cell[1].split("=")[1] if len(cell) > 1 else "")


def _fresh_verdicts(cells: list[list[str]], results: list) -> dict:
    """(claim, x, y) -> [(seeds, verdict on them)] for every claim that fresh seeds re-ran, in the cells' order."""
    fresh = {}
    for cell, result in zip(cells, results, strict=True):
        for recheck in result.fresh.values():
            for w in recheck.verdicts if recheck is not None else ():
                fresh.setdefault((w.name, *_square(cell)), []).append((recheck.seeds, w))
    return fresh


def map_figure(out: Path, cells: list[list[str]], results: list, claims: list[str]) -> Path:
    """One panel per claim; a square per cell (x: the first field, y: the second), coloured by the paired
    difference on a scale centred at 0, its interval and verdict written in it; no square where no cell ran."""
    from flx.compare.figures import pyplot, save_figure

    plt = pyplot()
    xs = _axis([c[0].split("=")[1] for c in cells])
    ys = _axis([c[1].split("=")[1] for c in cells]) if len(cells[0]) > 1 else [""]
    found = {}
    for cell, result in zip(cells, results, strict=True):
        x, y = _square(cell)
        for v in result.verdicts:
            found[(v.name, x, y)] = v
    fresh = _fresh_verdicts(cells, results)
    reach = max([abs(b) for v in found.values() if v.n >= 2 for b in (v.low, v.high)] or [0.01])
    tall = 1.5 + 0.45 * max((len(f) for f in fresh.values()), default=0)  # room for the fresh seeds' lines
    fig, axes = plt.subplots(1, len(claims), figsize=(1.9 * len(xs) * len(claims) + 1, tall * len(ys) + 1.4))
    axes = [axes] if len(claims) == 1 else list(axes)
    for ax, claim in zip(axes, claims, strict=True):
        for (name, x, y), v in found.items():
            if name != claim:
                continue
            i, j = xs.index(x), ys.index(y)
            colour = plt.cm.RdBu((v.mean / reach + 1) / 2 if v.n >= 2 else 0.5)
            ax.add_patch(plt.Rectangle((i - 0.5, j - 0.5), 1, 1, color=colour))
            ax.text(i, j, square_text(v, fresh.get((name, x, y), ())), ha="center", va="center", fontsize=7.5)
        for i in range(len(xs)):
            for j in range(len(ys)):
                if (claim, xs[i], ys[j]) not in found:
                    ax.add_patch(plt.Rectangle((i - 0.5, j - 0.5), 1, 1, color="0.92"))
                    ax.text(i, j, "not run", ha="center", va="center", fontsize=7, color="0.5")
        ax.set_xlim(-0.5, len(xs) - 0.5)
        ax.set_ylim(-0.5, len(ys) - 0.5)
        ax.set_xticks(range(len(xs)), xs)
        ax.set_yticks(range(len(ys)), ys)
        ax.set_xlabel(cells[0][0].split("=")[0])
        if len(cells[0]) > 1:
            ax.set_ylabel(cells[0][1].split("=")[0])
        ax.set_title(claim, fontsize=9)
    fig.suptitle(
        f"paired test-AP difference a − b on the finalists' seeds, 95% interval (colour: ±{reach:.3f}); below the "
        "rule: the verdict on fresh seeds, where they re-ran it",
        fontsize=9,
    )
    return save_figure(fig, out / MAP_FIGURE)
