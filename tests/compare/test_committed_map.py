"""The committed regime map (results/regimes/, `make regimes`): what issue 31 asks each cell to show, checked on
the committed records, so that a cell that lost a trial, a paper point or a seed's own images cannot land."""

from pathlib import Path

import pandas as pd
import pytest

from flx.compare.space import DETECTION_PAPER_TRIALS

REGIMES = Path(__file__).resolve().parents[2] / "results" / "regimes"
CELLS = sorted(p.parent for p in REGIMES.glob("*/compare.md") if (p.parent / "runs.csv").exists())


def _family_table(page: str) -> pd.DataFrame:
    lines = [line for line in page.splitlines() if line.startswith("| ")]
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in lines]
    header = next(r for r in rows if r[0] == "family")
    return pd.DataFrame([r for r in rows if r[0] in ("balanced_ce", "focal", "ohem")], columns=header)


def _setting(row: dict, fields) -> tuple:
    return tuple(None if pd.isna(row[f]) else float(row[f]) for f in fields)


@pytest.mark.skipif(not CELLS, reason="no committed regime-map cell")
@pytest.mark.parametrize("cell", CELLS, ids=lambda p: p.name)
def test_each_committed_cell_tunes_alike_and_pairs_seeds_on_their_own_images(cell):
    runs = pd.read_csv(cell / "runs.csv")
    families = _family_table((cell / "compare.md").read_text())
    assert len(families) == 3 and families["trials"].nunique() == 1, (
        families
    )  # the same budget for each family
    assert runs["git_commit"].nunique() == 1 and not runs["git_dirty"].any()  # one code version, clean
    trials = runs[runs["seed"] == 0]
    alphas = trials.loc[trials["loss"] == "balanced_ce", "alpha"]
    assert alphas.nunique() >= 6 and {p["alpha"] for p in DETECTION_PAPER_TRIALS["balanced_ce"]} <= set(
        alphas
    )
    for family, fields in (("focal", ("gamma", "alpha")), ("ohem", ("ohem_k", "ohem_nms", "ohem_ratio"))):
        tried = {_setting(r, fields) for r in trials[trials["loss"] == family].to_dict("records")}
        queued = [_setting(p, fields) for p in DETECTION_PAPER_TRIALS[family]][: int(families["trials"][0])]
        assert all(q in tried for q in queued), family
    finals = runs[runs["seed"] > 0]
    assert (finals["data_seed"] == finals["seed"]).all()  # each paired seed on its own training images
    for family, group in finals.groupby("loss"):
        assert sorted(group["seed"]) == [1, 2, 3, 4, 5], family
        own = (
            ["alpha"] if family == "balanced_ce" else ["gamma", "alpha"] if family == "focal" else ["ohem_k"]
        )
        assert len(group[own].drop_duplicates()) == 1, family  # every seed trains the chosen setting
    assert finals["hard_negatives"].notna().all() and finals["ap50"].notna().all()


FRESH = sorted(p.parent for kind in ("recheck", "more_seeds") for p in REGIMES.glob(f"*/{kind}/runs.csv"))


@pytest.mark.skipif(not FRESH, reason="no committed fresh-seed runs")
@pytest.mark.parametrize("folder", FRESH, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_each_committed_fresh_sample_is_complete_on_its_own_images_at_the_chosen_settings(folder):
    """A re-check or more-seeds sample: every family its claims name on every fresh seed (none of the finalists'),
    each seed on its own training images, each family at the setting its cell chose, one clean code version."""
    import tomllib

    from flx.experiment.params import seed_list

    spec = tomllib.loads((folder / "spec.toml").read_text())
    seeds = seed_list(spec["seeds"])
    runs = pd.read_csv(folder / "runs.csv")
    finals = pd.read_csv(folder.parent / "runs.csv").query("seed > 0")
    assert min(seeds) > finals["seed"].max() and len(seeds) >= 5
    assert runs["git_commit"].nunique() == 1 and not runs["git_dirty"].any()
    families = {side["loss"] for c in spec["report"]["claims"] for side in (c["a"], c["b"])}
    assert {(f, s) for f in families for s in seeds} == set(zip(runs["loss"], runs["seed"], strict=True))
    assert len(runs) == len(families) * len(seeds) and (runs["data_seed"] == runs["seed"]).all()
    fields = {
        "balanced_ce": ["alpha"],
        "focal": ["gamma", "alpha"],
        "ohem": ["ohem_k", "ohem_nms", "ohem_ratio"],
    }
    for family in families:
        chosen = finals.loc[finals["loss"] == family, fields[family]].drop_duplicates()
        fresh = runs.loc[runs["loss"] == family, fields[family]].drop_duplicates()
        assert len(fresh) == 1 and fresh.reset_index(drop=True).equals(chosen.reset_index(drop=True)), family
