"""Planning a sweep: a spec and overrides (options, ``--set``) merged into the spec that really runs, and that spec
expanded into the list of distinct normalized configs (a grid is a product of lists; parameters that do not apply
to a loss collapse instead of multiplying runs), refusing grids above :data:`flx.experiment.params.MAX_RUNS`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterable

from flx.errors import ConfigError
from flx.experiment.config import CONFIG_FIELDS, Config
from flx.experiment.params import DATA_PARAMS, MAX_RUNS, RUN_PARAMS, parse_list, seed_list
from flx.experiment.registries import LOSSES, get_dataset
from flx.experiment.spec import empty_spec


def merge(spec: dict | None, overrides: dict | None = None) -> dict:
    """The spec that really runs: ``overrides`` maps a config field to a list (it replaces that field in every
    grid) or to one value (fixed in [config] and dropped from the grids); "seeds" to the seeds (a count or "A-B")."""
    spec = dict(spec or empty_spec())
    overrides = dict(overrides or {})
    seeds = overrides.pop("seeds", None)
    unknown = set(overrides) - set(CONFIG_FIELDS)
    if unknown:
        raise ConfigError(f"unknown config field(s) {sorted(unknown)}; known: {', '.join(CONFIG_FIELDS)}")
    lists = {k: list(v) for k, v in overrides.items() if isinstance(v, (list, tuple))}
    fixed = {k: v for k, v in overrides.items() if k not in lists}
    grids = [{k: v for k, v in g.items() if k not in fixed} | lists for g in spec["grid"]]
    if seeds is not None:  # --seeds replaces every grid's own number of seeds
        grids = [{k: v for k, v in g.items() if k != "seeds"} for g in grids]
    config = {k: v for k, v in spec["config"].items() if k not in lists} | fixed
    if not any("loss" in g for g in grids) and "loss" not in config:
        grids = [{**g, "loss": ["focal"]} for g in grids]
    return {**spec, "config": config, "grid": grids, "seeds": seeds or spec["seeds"]}


def parse_sets(items: list[str], many: bool = True, label: str = "--set") -> dict:
    """``["lr=0.1,0.01", "data_seed=1"]`` -> {name: [values]} (or one value each with ``many=False``), every
    value checked against the constraint table; ConfigError naming the item and what is accepted."""
    out: dict = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise ConfigError(
                f"{label} got {item!r}; accepted: FIELD=VALUE{',VALUE...' if many else ''}, e.g. lr=0.1"
            )
        if name not in CONFIG_FIELDS or (name == "seed" and many):
            known = [f for f in CONFIG_FIELDS if f != "seed" or not many]
            raise ConfigError(
                f"{label} got field {name!r}; accepted: one of {', '.join(known)} (seeds: --seeds)"
            )
        if name in out:
            raise ConfigError(f"{label} gives {name} twice; give it once, with a comma-separated list")
        values = parse_list(name, text, f"{label} {name}")
        if not many and len(values) != 1:
            raise ConfigError(f"{label} {name} got {text!r}; accepted: one value (lists are for flx sweep)")
        out[name] = values if many else values[0]
    return out


# Options that were always lists: one value given for them still replaces the field in every grid.
GRID_AXES = (
    *("loss", "gamma", "alpha", "epsilon", "ohem_k", "ohem_ratio", "ohem_nms"),
    *("anchor_scales", "anchor_ratios", "ratio", "prior", "backbone"),
)


def with_sets(overrides: dict, items: list[str], many: bool = True, defaulted: Iterable[str] = ()) -> dict:
    """The named options' ``overrides`` plus the ``--set`` ``items`` (:func:`parse_sets`); ConfigError for a
    field given both ways (those in ``defaulted`` hold a command's default, not the user's value). For a sweep
    (``many``), one value of a field that is not a grid axis by nature is fixed in [config], as before lists were
    accepted, so the saved spec and a spec's own grids read the same; two or more make it a grid axis."""
    sets = parse_sets(items, many=many)
    twice = sorted(set(sets) & (set(overrides) - set(defaulted)))
    if twice:
        raise ConfigError(f"{', '.join(twice)} given both as an option and with --set; give each once")
    merged = overrides | sets
    if not many:
        return merged
    return {
        k: v[0] if isinstance(v, list) and len(v) == 1 and k not in GRID_AXES else v
        for k, v in merged.items()
    }


def inapplicable(configs: list[Config], given: Iterable[str]) -> str | None:
    """A note on the options the user gave that some or all of the sweep's losses or data sets do not use
    (``--loss ce --gamma 2``: ce has no gamma; ``--dataset shapes --epochs 2``: shapes trains for steps), or
    None when every one applies everywhere."""
    losses = list(dict.fromkeys(c.loss for c in configs))
    datasets = list(dict.fromkeys(c.dataset for c in configs))
    hyper = dict.fromkeys(p for spec in LOSSES.values() for p in spec.params)
    parts = []
    for name in given:
        if name in hyper:
            users = [loss for loss in losses if name in LOSSES[loss].params]
            others = [loss for loss in losses if loss not in users]
        elif name in DATA_PARAMS or name in RUN_PARAMS:
            specs = {d: get_dataset(d) for d in datasets}
            users = [d for d, spec in specs.items() if name in spec.params or name in spec.defaults]
            others = [d for d in datasets if d not in users]
        else:
            continue
        option = "--" + name.replace("_", "-")
        if not users:
            parts.append(f"{option} does not apply to {', '.join(others)} and is ignored")
        elif others:
            parts.append(f"{option} applies to {', '.join(users)} only, not {', '.join(others)}")
    return "; ".join(parts) or None


def plan_size(spec: dict) -> int:
    """Grid points times seeds before inapplicable parameters collapse (an upper bound on the runs)."""
    return sum(
        math.prod(len(v) for k, v in g.items() if k != "seeds")
        * len(seed_list(g.get("seeds", spec["seeds"])))
        for g in spec["grid"]
    )


def expand(
    base: Config, grids: list[dict[str, list]], seeds: Iterable[int], resample: bool = False
) -> list[Config]:
    """Every distinct normalized config of the grids (each a product of its lists) times the seeds (a grid's own
    ``seeds``, a number, replaces them for that grid), in order; ``resample``: each seed draws its own data
    (``data_seed`` = seed)."""
    out: dict[str, Config] = {}
    for grid in grids:
        names = [n for n in grid if n != "seeds"]
        for values in itertools.product(*(grid[n] for n in names)):
            for seed in seed_list(grid["seeds"]) if "seeds" in grid else seeds:
                data = {"data_seed": seed} if resample else {}
                config = dataclasses.replace(
                    base, **dict(zip(names, values, strict=True)), seed=seed, **data
                ).normalized()
                out.setdefault(config.config_key(), config)
    return list(out.values())


def plan(spec: dict | None = None, overrides: dict | None = None, paths: bool = True) -> list[Config]:
    """The distinct runs of a spec with its overrides, checked; ConfigError above MAX_RUNS grid points, or
    (``paths``: when the runs are to train) when a data path they read does not exist."""
    spec = merge(spec, overrides)
    size = plan_size(spec)
    if size > MAX_RUNS:
        raise ConfigError(
            f"the sweep has {size:,} grid points x seeds; at most {MAX_RUNS:,} are accepted: give fewer values or seeds"
        )
    configs = expand(
        Config(**spec["config"]), spec["grid"], seed_list(spec["seeds"]), spec.get("resample", False)
    )
    for config in {(c.data, c.test, c.model): c for c in configs}.values() if paths else ():  # each once
        config.check_runnable()
    return configs
