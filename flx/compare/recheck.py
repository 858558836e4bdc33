"""Fresh seeds for a comparison's verdicts, each side fixed to the setting its study chose (nothing is tuned
again), judged on the fresh seeds alone, in a store of its own whose spec declares the claims before its runs:

- ``flx compare --recheck A-B``: every settled verdict (replicated or contradicted), in ``OUT/recheck/``, with
  ``recheck.md``: each verdict on the finalists' seeds beside its verdict on the fresh ones;
- ``flx compare --more-seeds A-B``: every inconclusive verdict (one that sits within its interval's half-width),
  on a larger fresh sample, in ``OUT/more_seeds/`` with ``more_seeds.md``. The fresh sample is judged on its
  own, not pooled with the finalists' seeds: pooling after seeing them leave a verdict open would be optional
  stopping, and an independent sample needs no correction for it. A verdict between two identical models (a
  family that chose the other's setting) is not re-run: more seeds cannot separate them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from flx.errors import ConfigError


@dataclass(frozen=True)
class Kind:
    """What one kind of fresh-seed run re-runs, and where it writes."""

    option: str  # the flx compare option
    folder: str  # under the comparison's folder: its store, spec and page
    page: str
    picks: tuple  # the verdicts it re-runs
    title: str  # the page's heading
    section: str  # the map's section
    which: str  # "every settled verdict" ...
    none: str  # the page's line when there is nothing to re-run


RECHECK = Kind(
    "--recheck", "recheck", "recheck.md", ("replicated", "contradicted"), "re-check on fresh seeds",
    "Re-checked on fresh seeds",
    "every settled verdict (replicated or contradicted)", "No verdict was settled (replicated or contradicted)",
)  # fmt: skip
MORE_SEEDS = Kind(
    "--more-seeds", "more_seeds", "more_seeds.md", ("inconclusive",), "more seeds for the inconclusive verdicts",
    "More seeds for the inconclusive verdicts",
    "every inconclusive verdict", "No verdict was inconclusive between two different models",
)  # fmt: skip


@dataclass
class Recheck:
    seeds: list[int]
    claims: list[dict] = field(default_factory=list)  # the declared claims re-run (none: nothing to re-run)
    before: list = field(default_factory=list)  # their verdicts on the finalists' seeds
    verdicts: list = field(default_factory=list)  # and on the fresh seeds
    page: Path | None = None
    kind: Kind = RECHECK


def parse_recheck(text: str, finals: int, kind: Kind = RECHECK, taken: list[int] = ()) -> list[int]:
    """``"6-10"`` -> [6, ..., 10]: a range of two or more seeds, none of them the finalists' (1..``finals``) nor
    ``taken`` (another kind's fresh seeds in the same call)."""
    from flx.experiment.params import check_seeds, seed_list

    seeds = check_seeds(text, kind.option)
    if not isinstance(seeds, str) or len(seed_list(seeds)) < 2 or min(seed_list(seeds)) <= finals:
        raise ConfigError(
            f"{kind.option} got {text!r}; accepted: a range A-B of two or more fresh seeds, after the finalists' 1-"
            f"{finals} (e.g. {finals + 1}-{finals + 5})"
        )
    if set(seed_list(seeds)) & set(taken):
        raise ConfigError(
            f"{kind.option} got {text!r}; accepted: seeds apart from --recheck's {taken[0]}-{taken[-1]} (each "
            "fresh sample its own)"
        )
    return seed_list(seeds)


KINDS = (RECHECK, MORE_SEEDS)


def picked(result, kind: Kind) -> set[str]:
    """The claims of ``result`` that ``kind`` re-runs on fresh seeds (more seeds: not between identical models)."""
    return {
        v.name
        for v in result.verdicts
        if v.verdict in kind.picks and not (v.identical and kind is MORE_SEEDS)
    }


def claim_families(declared: list[dict]) -> set[str]:
    """The loss families the ``declared`` claims compare (each claim's sides a and b)."""
    return {side["loss"] for c in declared for side in (c["a"], c["b"])}


def run_recheck(base, result, seeds: list[int], train, kind: Kind = RECHECK) -> Recheck:
    """The finalists of every family a claim ``kind`` picks names, on ``seeds`` (each on its own images where the
    comparison resamples), trained by ``train(configs, store, spec)``; the claims judged on them alone."""
    from flx.compare.space import claims
    from flx.report.claims import judge_all
    from flx.results.store import Store

    recheck = Recheck(seeds, kind=kind)
    names = picked(result, kind)
    declared = [c for c in claims(result.families, len(seeds), result.resampled) if c["name"] in names]
    recheck.claims = declared
    recheck.before = [v for v in result.verdicts if v.name in names]
    named = claim_families(declared)
    families = [f for f in result.families if f in named]
    out = Path(result.out) / kind.folder
    if declared:
        text = f"{seeds[0]}-{seeds[-1]}"
        spec = result.finals_spec(
            base, families, text, declared, name=kind.folder,
            description=f"flx compare {kind.option}: {kind.which} of ../compare.md on fresh seeds {text}, each "
            "family fixed to the setting its study chose",
        )  # fmt: skip
        configs = [result.finalist(base, f, s) for f in families for s in seeds]
        import pandas as pd

        records = train(configs, Store(out), spec)
        recheck.verdicts = judge_all(declared, pd.DataFrame(records))
        from flx.report.tables import load_runs

        load_runs(out)  # the runs in out/<folder>/runs.csv
    recheck.page = write_recheck(out, recheck)
    return recheck


def stored_recheck(result, kind: Kind = RECHECK) -> Recheck | None:
    """The fresh-seed runs of ``kind`` a previous call left in the comparison's folder (its spec's claims judged
    on its stored runs; nothing trains), so that a later call without the option keeps them on the map; None if
    there are none, or not all of them (a stopped call)."""
    import pandas as pd
    import tomllib

    from flx.experiment.params import seed_list
    from flx.report.claims import judge_all
    from flx.results.store import Store

    out = Path(result.out) / kind.folder
    if not (out / "spec.toml").exists():
        return None
    spec = tomllib.loads((out / "spec.toml").read_text())
    declared = spec.get("report", {}).get("claims", [])
    recheck = Recheck(seed_list(spec["seeds"]), declared, page=out / kind.page, kind=kind)
    by_name = {v.name: v for v in result.verdicts}
    recheck.before = [by_name[c["name"]] for c in declared if c["name"] in by_name]
    records = Store(out).records()
    wanted = {(f, s) for f in claim_families(declared) for s in recheck.seeds}
    if len(recheck.before) == len(declared) and wanted <= {(r["loss"], r["seed"]) for r in records}:
        recheck.verdicts = judge_all(declared, pd.DataFrame(records))
        return recheck
    # none, or stopped before all its runs were stored: the next --recheck / --more-seeds resumes it
    return None


def verdict_text(v) -> str:
    """'+0.012 [-0.003, +0.027] p 0.31, 0 + 1 failed: inconclusive'."""
    if v.n < 2:
        return f"{v.n} paired seeds: {v.verdict}"
    p = f"p {v.p:.2g}, " if v.p == v.p else ""
    same = " (the same model on every seed)" if v.identical else ""
    return f"{v.mean:+.3f} [{v.low:+.3f}, {v.high:+.3f}] {p}{v.failed[0]} + {v.failed[1]} failed: {v.verdict}{same}"


def write_recheck(out: Path, recheck: Recheck) -> Path:
    """The page: the claims re-run, each verdict on the finalists' seeds and on the fresh ones."""
    from tabulate import tabulate

    from flx.results.store import write_atomic

    kind, text = recheck.kind, f"{recheck.seeds[0]}-{recheck.seeds[-1]}"
    lines = [f"# flx compare: {kind.title}", ""]
    if not recheck.claims:
        lines.append(f"{kind.none}, so nothing ran on seeds {text}.")
    else:
        rows = [
            [v.name, verdict_text(v), verdict_text(w), "yes" if v.verdict == w.verdict else "no"]
            for v, w in zip(recheck.before, recheck.verdicts, strict=True)
        ]
        lines += [
            f"{kind.which.capitalize()} of `../compare.md`, re-run on seeds {text} with each family fixed to the "
            "setting its study chose on validation (nothing tuned again), each seed on its own training images "
            "where the comparison resamples, and judged on these seeds alone; the claims were written to "
            "`spec.toml` before these runs.",
            "",
            tabulate(
                rows,
                headers=["claim", "finalists' seeds", f"seeds {text}", "same verdict"],
                tablefmt="github",
                disable_numparse=True,
            ),
        ]
    out.mkdir(parents=True, exist_ok=True)
    path = out / kind.page
    write_atomic(path, lambda p: p.write_text("\n".join(lines) + "\n"))
    return path
