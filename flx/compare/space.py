"""Each loss family's search space (plain data), the paper's settings queued as its first trials, and the claims.
The learning rate is searched for every family of a classifier, so no family gets a tuned optimiser that another
lacks; a detector keeps its data set's learning rate for every family (the focal-loss paper's rule: one schedule
for all its Table 1 rows). Values are rounded so that near-equal suggestions are one stored run."""

from __future__ import annotations

from flx.errors import ConfigError

# family -> {field: (low, high, log scale, digits kept) or [choices]}; "epsilon" of poly1_focal is bounded below
# by the loss
SPACES: dict[str, dict[str, tuple | list]] = {
    "ce": {},
    "balanced_ce": {"alpha": (0.05, 0.95, False, 2)},
    "focal": {"alpha": (0.05, 0.95, False, 2), "gamma": (0.0, 5.0, False, 1)},
    "poly1": {"epsilon": (-1.0, 3.0, False, 1)},
    "poly1_focal": {
        "alpha": (0.05, 0.95, False, 2),
        "gamma": (0.0, 5.0, False, 1),
        "epsilon": (0.0, 3.0, False, 1),
    },
    # Table 1d's grid: B, the NMS threshold over the anchors (none: no NMS), the 1:3 rule (none: off)
    "ohem": {"ohem_k": [64, 128, 256, 512], "ohem_nms": [0.5, 0.7, None], "ohem_ratio": [None, 3.0]},
}
LR = (1e-4, 1e-2, True, 2)  # every classifier family's; digits: significant ones
FAMILIES = tuple(SPACES)  # their order seeds each family's sampler: new families go last
DETECTION_ONLY = ("ohem",)  # OHEM ranks a detector's anchors (a classifier's batch is the tables' 1:3 rule)
EQUIVALENCE_MARGIN = 0.01  # AP: "focal loss is no better than cross-entropy" within this

# The settings each family's study tries first (Optuna's enqueue_trial), within its budget: the focal-loss
# paper's choices (Table 1a's best alpha, Table 1b's gamma 2 with alpha 0.25, Table 1d's best OHEM row). The
# learning rate of a queued trial is the data set's.
PAPER_TRIALS: dict[str, list[dict]] = {
    "balanced_ce": [{"alpha": 0.75}],
    "focal": [{"gamma": 2.0, "alpha": 0.25}],
    "ohem": [{"ohem_k": 128, "ohem_nms": 0.5, "ohem_ratio": None}],
}

# A detector's spaces are the paper's own grids (Table 1a's alphas with 0.95 and 0.98 between them, Table 1b's
# gammas by 0.25 / 0.5 / 0.75, Table 1d's OHEM rows), and its queue holds every point of Table 1a, 1b (each gamma
# with the alpha the paper chose for it) and 1d, in the order of the paper's AP, best first; a budget of 8 tries
# every distinct one. OHEM's queue adds B 64 with the 1:3 rule, a B that binds (1:3 keeps at most 4 x the object
# anchors, about 90 per image on shapes: fewer than 128, so the paper's 1:3 rows at B 256 and 512 train exactly
# as at 128, and go last).
DETECTION_SPACES: dict[str, dict[str, tuple | list]] = {
    **SPACES,
    "balanced_ce": {"alpha": [0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.999]},
    "focal": {"gamma": [0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0], "alpha": [0.25, 0.5, 0.75]},
}
DETECTION_PAPER_TRIALS: dict[str, list[dict]] = {
    "balanced_ce": [{"alpha": a} for a in (0.75, 0.9, 0.5, 0.99, 0.999, 0.25, 0.1)],
    "focal": [
        {"gamma": g, "alpha": a}
        for g, a in ((2.0, 0.25), (1.0, 0.25), (0.5, 0.5), (5.0, 0.25), (0.2, 0.75), (0.1, 0.75), (0.0, 0.75))
    ],
    "ohem": [
        {"ohem_k": k, "ohem_nms": nms, "ohem_ratio": ratio}
        for k, nms, ratio in (
            (128, 0.5, None),
            (256, 0.7, None),
            (128, 0.7, None),
            (128, 0.5, 3.0),
            (64, 0.5, 3.0),
            (256, 0.5, None),
            (512, 0.7, None),
            (512, 0.5, None),
            (256, 0.5, 3.0),
            (512, 0.5, 3.0),
        )  # fmt: skip
    ],
}


def spaces(detection: bool) -> dict:
    return DETECTION_SPACES if detection else SPACES


def paper_trials(family: str, detection: bool) -> list[dict]:
    """The paper's settings that ``family``'s study tries first."""
    return (DETECTION_PAPER_TRIALS if detection else PAPER_TRIALS).get(family, [])


def parse_families(text: str, detection: bool = False) -> list[str]:
    """'ce,focal' -> ['ce', 'focal']; at least two, each a known family (OHEM for a detector only)."""
    names = list(dict.fromkeys(t.strip() for t in str(text).split(",")))
    known = [f for f in FAMILIES if detection or f not in DETECTION_ONLY]
    if len(names) < 2 or any(n not in known for n in names):
        raise ConfigError(
            f"--families got {text!r}; accepted: two or more, comma-separated, of {', '.join(known)}"
            + ("" if detection else " (ohem: detection data, e.g. shapes)")
        )
    return names


def _round(value: float, digits: int, log: bool) -> float:
    return float(f"{value:.{digits}g}") if log else round(value, digits)


def suggest(trial, family: str, detection: bool = False) -> dict:
    """The config fields of one Optuna trial of ``family``: a classifier's learning rate and the family's own (a
    detector's: :data:`DETECTION_SPACES`, at its data set's learning rate)."""
    fields = {}
    if not detection:
        low, high, log, digits = LR
        fields["lr"] = _round(trial.suggest_float("lr", low, high, log=True), digits, log)
    for name, space in spaces(detection)[family].items():
        if isinstance(space, list):
            fields[name] = trial.suggest_categorical(name, space)
        else:
            low, high, log, digits = space
            fields[name] = _round(trial.suggest_float(name, low, high, log=log), digits, log)
    return fields


def parse_queue(items: list[str], families: list[str], detection: bool = False) -> dict[str, list[dict]]:
    """``--queue focal:gamma=1,alpha=0.5`` (repeatable) -> {family: [fields]}, each value checked against the
    constraint table and the family's own fields (``lr`` where the learning rate is searched; a value of a
    family's choices, such as OHEM's B, among them)."""
    from flx.experiment.params import check

    out: dict[str, list[dict]] = {}
    for item in items:
        family, _, rest = str(item).partition(":")
        family = family.strip()
        space = spaces(detection).get(family, {}) if family in families else {}
        allowed = (*(() if detection else ("lr",)), *space)
        pairs = [(k.strip(), sep, v.strip()) for k, sep, v in (p.partition("=") for p in rest.split(","))]
        if (
            not space
            and family not in families
            or not rest.strip()
            or any(not s or k not in allowed for k, s, _ in pairs)
        ):
            fields = f" and {family}'s fields ({', '.join(allowed)})" if family in families else ""
            raise ConfigError(
                f"--queue got {item!r}; accepted: FAMILY:FIELD=VALUE,... with FAMILY one of {', '.join(families)}"
                + fields
            )
        fields = {k: check(k, v, f"--queue {family}:{k}") for k, _, v in pairs}
        for name, value in fields.items():
            choices = space.get(name)
            if isinstance(choices, list) and value not in choices:
                shown = ", ".join("none" if c is None else f"{c:g}" for c in choices)
                raise ConfigError(f"--queue {family}:{name} got {value!r}; accepted: one of {shown}")
        out.setdefault(family, []).append(fields)
    return out


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
    claim("focal loss beats OHEM", "focal", "ohem")
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
