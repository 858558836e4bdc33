"""``flx compare --recheck A-B``: every verdict that is not inconclusive, re-run on fresh seeds with each side fixed
to the setting its study chose (nothing is tuned again), in ``OUT/recheck/`` (a store of its own whose spec
declares the claims before its runs), and ``OUT/recheck/recheck.md``: each claim's verdict on the finalists' seeds
beside its verdict on the fresh ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from flx.errors import ConfigError

RECHECK_DIR, RECHECK_PAGE = "recheck", "recheck.md"
SETTLED = ("replicated", "contradicted")  # the verdicts a re-check re-runs


@dataclass
class Recheck:
    seeds: list[int]
    claims: list[dict] = field(default_factory=list)  # the declared claims re-run (none: nothing was settled)
    before: list = field(default_factory=list)  # their verdicts on the finalists' seeds
    verdicts: list = field(default_factory=list)  # and on the fresh seeds
    page: Path | None = None


def parse_recheck(text: str, finals: int) -> list[int]:
    """``"6-10"`` -> [6, ..., 10]: a range of two or more seeds, none of them the finalists' (1..``finals``)."""
    from flx.experiment.params import check_seeds, seed_list

    seeds = check_seeds(text, "--recheck")
    if not isinstance(seeds, str) or len(seed_list(seeds)) < 2 or min(seed_list(seeds)) <= finals:
        raise ConfigError(
            f"--recheck got {text!r}; accepted: a range A-B of two or more fresh seeds, after the finalists' 1-"
            f"{finals} (e.g. {finals + 1}-{finals + 5})"
        )
    return seed_list(seeds)


def run_recheck(base, result, seeds: list[int], train) -> Recheck:
    """The finalists of every family a settled claim names, on ``seeds`` (each on its own images where the
    comparison resamples), trained by ``train(configs, store, spec)``; the claims judged on them alone."""
    from flx.compare.space import claims
    from flx.report.claims import judge_all
    from flx.results.store import Store

    recheck = Recheck(seeds)
    settled = {v.name for v in result.verdicts if v.verdict in SETTLED}
    declared = [c for c in claims(result.families, len(seeds), result.resampled) if c["name"] in settled]
    recheck.claims = declared
    recheck.before = [v for v in result.verdicts if v.name in settled]
    families = [f for f in result.families if any(f in (c["a"]["loss"], c["b"]["loss"]) for c in declared)]
    out = Path(result.out) / RECHECK_DIR
    if declared:
        text = f"{seeds[0]}-{seeds[-1]}"
        spec = result.finals_spec(
            base, families, text, declared, name="recheck",
            description=f"flx compare --recheck: the settled verdicts of ../compare.md on fresh seeds {text}, "
            "each family fixed to the setting its study chose",
        )  # fmt: skip
        configs = [result.finalist(base, f, s) for f in families for s in seeds]
        import pandas as pd

        records = train(configs, Store(out), spec)
        recheck.verdicts = judge_all(declared, pd.DataFrame(records))
        from flx.report.tables import load_runs

        load_runs(out)  # the re-check's runs in out/recheck/runs.csv
    recheck.page = write_recheck(out, recheck)
    return recheck


def stored_recheck(result) -> Recheck | None:
    """The re-check a previous ``--recheck`` left in ``OUT/recheck/`` (its spec's claims judged on its stored
    runs; nothing trains), so that a later call without ``--recheck`` keeps it on the map; None if there is none."""
    import pandas as pd
    import tomllib

    from flx.experiment.params import seed_list
    from flx.report.claims import judge_all
    from flx.results.store import Store

    out = Path(result.out) / RECHECK_DIR
    if not (out / "spec.toml").exists():
        return None
    spec = tomllib.loads((out / "spec.toml").read_text())
    declared = spec.get("report", {}).get("claims", [])
    recheck = Recheck(seed_list(spec["seeds"]), declared, page=out / RECHECK_PAGE)
    by_name = {v.name: v for v in result.verdicts}
    recheck.before = [by_name[c["name"]] for c in declared if c["name"] in by_name]
    if len(recheck.before) == len(declared):
        recheck.verdicts = judge_all(declared, pd.DataFrame(Store(out).records()))
        return recheck
    return None


def write_recheck(out: Path, recheck: Recheck) -> Path:
    """``recheck.md``: the claims re-run, each verdict on the finalists' seeds and on the fresh ones."""
    from tabulate import tabulate

    from flx.compare.map import verdict_text
    from flx.results.store import write_atomic

    text = f"{recheck.seeds[0]}-{recheck.seeds[-1]}"
    lines = ["# flx compare: re-check on fresh seeds", ""]
    if not recheck.claims:
        lines.append(f"No verdict was settled (replicated or contradicted), so nothing ran on seeds {text}.")
    else:
        rows = [
            [v.name, verdict_text(v), verdict_text(w), "yes" if v.verdict == w.verdict else "no"]
            for v, w in zip(recheck.before, recheck.verdicts, strict=True)
        ]
        lines += [
            f"Every settled verdict of `../compare.md`, re-run on seeds {text} with each family fixed to the "
            "setting its study chose on validation (nothing tuned again), each seed on its own training images "
            "where the comparison resamples; the claims were written to `spec.toml` before these runs.",
            "",
            tabulate(
                rows,
                headers=["claim", "finalists' seeds", f"seeds {text}", "same verdict"],
                tablefmt="github",
                disable_numparse=True,
            ),
        ]
    out.mkdir(parents=True, exist_ok=True)
    path = out / RECHECK_PAGE
    write_atomic(path, lambda p: p.write_text("\n".join(lines) + "\n"))
    return path
