"""Each loss family's search space (plain data), and its claims. The learning rate is searched for every
family, so no family gets a tuned optimiser that another lacks; values are rounded so that near-equal
suggestions are one stored run."""

from __future__ import annotations

from flx.errors import ConfigError

# family -> {field: (low, high, log scale, digits kept)}; "epsilon" of poly1_focal is bounded below by the loss
SPACES: dict[str, dict[str, tuple]] = {
    "ce": {},
    "balanced_ce": {"alpha": (0.05, 0.95, False, 2)},
    "focal": {"alpha": (0.05, 0.95, False, 2), "gamma": (0.0, 5.0, False, 1)},
    "poly1": {"epsilon": (-1.0, 3.0, False, 1)},
    "poly1_focal": {
        "alpha": (0.05, 0.95, False, 2),
        "gamma": (0.0, 5.0, False, 1),
        "epsilon": (0.0, 3.0, False, 1),
    },
}
LR = (1e-4, 1e-2, True, 2)  # every family's; digits: significant ones
FAMILIES = tuple(SPACES)
EQUIVALENCE_MARGIN = 0.01  # AP: "focal loss is no better than cross-entropy" within this


def parse_families(text: str) -> list[str]:
    """'ce,focal' -> ['ce', 'focal']; at least two, each a known family."""
    names = list(dict.fromkeys(t.strip() for t in str(text).split(",")))
    if len(names) < 2 or any(n not in SPACES for n in names):
        raise ConfigError(
            f"--families got {text!r}; accepted: two or more, comma-separated, of {', '.join(FAMILIES)}"
        )
    return names


def _round(value: float, digits: int, log: bool) -> float:
    return float(f"{value:.{digits}g}") if log else round(value, digits)


def suggest(trial, family: str) -> dict:
    """The config fields of one Optuna trial of ``family``: the learning rate and the family's own."""
    low, high, log, digits = LR
    fields = {"lr": _round(trial.suggest_float("lr", low, high, log=True), digits, log)}
    for name, (low, high, log, digits) in SPACES[family].items():
        fields[name] = _round(trial.suggest_float(name, low, high, log=log), digits, log)
    return fields


def claims(families: list[str], seeds: int, resampled: float | None = None) -> list[dict]:
    """The claims a comparison declares before its final runs, for the families it holds; ``resampled``: the
    test-to-training rows ratio when each seed draws its own split (the corrected resampled t)."""
    out = []
    more = {} if resampled is None else {"resampled": resampled}

    def claim(name, a, b, **extra):
        if a in families and b in families:
            out.append(
                {"name": name, "a": {"loss": a}, "b": {"loss": b}, "min_seeds": seeds, **more, **extra}
            )

    claim("focal loss beats cross-entropy", "focal", "ce")
    claim("focal loss beats alpha-balanced cross-entropy", "focal", "balanced_ce")
    claim("Poly-1 beats cross-entropy", "poly1", "ce")
    claim("Poly-1 focal loss beats focal loss", "poly1_focal", "focal")
    claim(
        f"focal loss is as good as cross-entropy (within {EQUIVALENCE_MARGIN} AP)",
        "focal",
        "ce",
        direction="equivalent",
        margin=EQUIVALENCE_MARGIN,
    )
    return out
