"""Spec files: ``[config]`` fixed fields, ``[[grid]]`` lists, ``seeds``, ``out`` and the ``[report]`` layout
(tables, figures, claims), read, validated and written as TOML.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import tomllib

from flx.errors import ConfigError
from flx.experiment.config import CONFIG_FIELDS
from flx.experiment.paper import paper_tables
from flx.experiment.params import check, check_seeds

# Figures a spec's [report] table may ask for (drawn by flx.report.figures.FIGURES, which must match these names).
FIGURES = {
    "ap_vs_param": "mean AP against the most-swept hyperparameter",
    "loss_vs_pt": "the paper's Figure 1: focal loss against p_t",
    "pr_curves": "precision-recall curves of the three best settings (from their stored test scores)",
    "loss_cdf": "the paper's Figure 4: loss CDF of trained models (from their stored test scores)",
    "learning_curves": "validation AP against training steps (runs with eval_every)",
    "seed_curves": "every seed's validation AP against training steps, a panel per setting (where seeds part)",
    "detection_loss_cdf": "the paper's Figure 4 on the detector's anchors (the FL run's stored anchor logits)",
    "examples": "test images with ground truth and the detections of CE and FL (stored with the runs)",
    "ohem_rows": "Table 1d: each OHEM row's test AP seed by seed against focal loss's (identical rows as one)",
    "regime_map": "each canvas's claims (named 'N px: ...') as paired differences against the measured imbalance",
}


# The findings a spec's [report] may ask for under its table (written by flx.report.findings.FINDINGS).
FINDINGS = {
    "generic": "the best setting and the failed runs (the default)",
    "catsdogs": "the backbone's quality and each loss's AP beside the accuracy the original experiment reported",
    "curves": "where each learning curve levels off: the training length the other tables use",
}


SPEC_KEYS = ("name", "description", "config", "grid", "seeds", "resample", "out", "report")


REPORT_KEYS = {
    "best_over": "a config field to pick the best value of per row (as Table 1b picks alpha)",
    "paper": f"the paper's table to cite beside each row: one of {', '.join(paper_tables())}",
    "figures": f"a list of figures: {', '.join(FIGURES)}",
    "shown": "the setting whose one model the single-model figures show (detection_loss_cdf, examples, loss_cdf): "
    'a table of config fields (default: the paper\'s FL, { loss = "focal", gamma = 2.0, alpha = 0.25 })',
    "findings": f"the sentences under the table: {'; '.join(f'{k} ({v})' for k, v in FINDINGS.items())}",
    "claims": "[[report.claims]] tables, each a claim of the paper declared before the runs (see CLAIM_KEYS)",
}


CLAIM_KEYS = {
    "name": "what the claim says, e.g. 'FL beats the best OHEM'",
    "resampled": "for pairs whose seeds each draw their own split (data_seed = seed): the test-to-training rows "
    "ratio; the interval is then Nadeau & Bengio's corrected resampled t (the training sets overlap)",
    "a": "the setting the paper says is better: a table of config fields; several matching settings: the one "
    "with the best mean validation AP",
    "b": "the setting it is compared with (same rules)",
    "metric": "the test metric compared (default ap)",
    "direction": "greater (a's metric above b's, the default), less, or equivalent (a within margin of b)",
    "margin": "equivalent: the largest difference that counts as none, e.g. 0.01 AP (required there)",
    "min_seeds": "paired seeds needed for a verdict (default 3; 5 for the headline claims)",
    "failures": 'the metric a failed, diverged or collapsed run scores (default 0), or "drop" to leave such seeds out',
    "paper": "the paper's numbers, quoted beside the verdict",
}


def empty_spec() -> dict:
    return {"name": "sweep", "description": "", "config": {}, "grid": [{}], "seeds": 1, "report": {}}


def load_spec(path: str | os.PathLike) -> dict:
    """A TOML spec, every value checked: {"name", "description", "config", "grid": [{field: [values]}],
    "seeds", "out", "report"}. ConfigError (one line, naming the file) for anything flx would not run."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"spec file {path} does not exist; give a TOML file such as experiments/table1a.toml"
        )
    try:
        spec = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
        raise ConfigError(f"spec file {path} is not valid TOML: {exc}") from None
    return validate_spec(spec, str(path))


def validate_spec(spec: dict, where: str = "spec") -> dict:
    """A spec dict checked and normalized (grid values as lists, seeds an integer, [report] known keys)."""
    if not spec:
        raise ConfigError(f"spec file {where} is empty; give at least a [[grid]] or [config] table")
    unknown = set(spec) - set(SPEC_KEYS)
    if unknown:
        raise ConfigError(
            f"spec file {where}: unknown key(s) {sorted(unknown)}; allowed: {', '.join(SPEC_KEYS)}"
        )
    config = spec.get("config", {})
    if not isinstance(config, dict):
        raise ConfigError(f"spec file {where}: [config] must be a table of field = value")
    grids = spec.get("grid", [{}])
    grids = [grids] if isinstance(grids, dict) else grids
    if not isinstance(grids, list) or not all(isinstance(g, dict) for g in grids):
        raise ConfigError(f"spec file {where}: [[grid]] must be tables of field = [values]")
    out = {
        "name": str(spec.get("name") or Path(where).stem),
        "description": str(spec.get("description", "")),
        "config": {k: _check_field(k, v, f"spec file {where}: [config] {k}") for k, v in config.items()},
        "grid": [],
        "seeds": check_seeds(spec.get("seeds", 1), f"spec file {where}: seeds"),
        "report": _check_report(spec.get("report", {}), where),
    }
    if "out" in spec:
        out["out"] = str(spec["out"])
    if "resample" in spec:  # each seed draws its own data: data_seed = seed
        if not isinstance(spec["resample"], bool):
            raise ConfigError(
                f"spec file {where}: resample got {spec['resample']!r}; accepted: true (each seed draws its own "
                "data: data_seed = seed) or false"
            )
        out["resample"] = spec["resample"]
    for grid in grids:
        checked = {}
        for k, values in grid.items():
            if k == "seeds":  # this grid's own number of seeds (0..N-1)
                checked[k] = check_seeds(values, f"spec file {where}: [[grid]] seeds")
                continue
            values = values if isinstance(values, list) else [values]
            if not values:
                raise ConfigError(
                    f"spec file {where}: [[grid]] {k} is an empty list; give at least one value"
                )
            checked[k] = [_check_field(k, v, f"spec file {where}: [[grid]] {k}") for v in values]
        out["grid"].append(checked)
    return out


def _check_field(name: str, value, label: str):
    if name not in CONFIG_FIELDS:
        raise ConfigError(
            f"{label.rsplit(' ', 1)[0]}: unknown config field {name!r}; known: {', '.join(CONFIG_FIELDS)}"
        )
    return check(name, value, label)


def _check_report(report, where: str) -> dict:
    if not isinstance(report, dict):
        raise ConfigError(f"spec file {where}: [report] must be a table")
    unknown = set(report) - set(REPORT_KEYS)
    if unknown:
        known = "; ".join(f"{k}: {v}" for k, v in REPORT_KEYS.items())
        raise ConfigError(f"spec file {where}: [report] has unknown key(s) {sorted(unknown)}; known: {known}")
    best_over = report.get("best_over")
    if best_over is not None and best_over not in CONFIG_FIELDS:
        raise ConfigError(
            f"spec file {where}: [report] best_over got {best_over!r}; accepted: {REPORT_KEYS['best_over']}"
        )
    shown = report.get("shown")
    if shown is not None:
        bad = [] if isinstance(shown, dict) else [repr(shown)]
        bad += [k for k in (shown if isinstance(shown, dict) else {}) if k not in CONFIG_FIELDS]
        if bad:
            raise ConfigError(
                f"spec file {where}: [report] shown got {', '.join(bad)}; accepted: {REPORT_KEYS['shown']}"
            )
    findings = report.get("findings", "generic")
    if findings not in FINDINGS:
        raise ConfigError(
            f"spec file {where}: [report] findings got {findings!r}; accepted: one of {', '.join(FINDINGS)}"
        )
    paper = report.get("paper")
    if paper is not None and paper not in paper_tables():
        raise ConfigError(
            f"spec file {where}: [report] paper got {paper!r}; accepted: {REPORT_KEYS['paper']}"
        )
    claims = report.get("claims", [])
    if not isinstance(claims, list) or not all(isinstance(c, dict) for c in claims):
        raise ConfigError(f"spec file {where}: [report] claims must be [[report.claims]] tables")
    for i, claim in enumerate(claims, 1):
        _check_claim(claim, f"spec file {where}: [[report.claims]] {i}")
    figures = report.get("figures", [])
    if not isinstance(figures, list) or any(f not in FIGURES for f in figures):
        bad = figures if not isinstance(figures, list) else [f for f in figures if f not in FIGURES]
        raise ConfigError(
            f"spec file {where}: [report] figures got {bad!r}; accepted: {REPORT_KEYS['figures']}"
        )
    return dict(report)


def _check_claim(claim: dict, where: str) -> None:
    from flx.experiment.metrics import METRICS

    unknown = set(claim) - set(CLAIM_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {', '.join(CLAIM_KEYS)}")
    for key in ("name", "a", "b"):
        if key not in claim:
            raise ConfigError(f"{where}: {key} is missing; {key}: {CLAIM_KEYS[key]}")
    for side in ("a", "b"):
        if not isinstance(claim[side], dict) or not claim[side]:
            raise ConfigError(f"{where}: {side} got {claim[side]!r}; accepted: {CLAIM_KEYS[side]}")
        for k, v in claim[side].items():
            claim[side][k] = _check_field(k, v, f"{where}: {side}.{k}")
    if claim.get("metric", "ap") not in METRICS:
        raise ConfigError(f"{where}: metric got {claim['metric']!r}; accepted: one of {', '.join(METRICS)}")
    direction = claim.get("direction", "greater")
    if direction not in ("greater", "less", "equivalent"):
        raise ConfigError(
            f"{where}: direction got {claim['direction']!r}; accepted: greater, less or equivalent"
        )
    margin = claim.get("margin")
    if direction == "equivalent" and (
        isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 < margin < math.inf
    ):
        raise ConfigError(f"{where}: margin got {margin!r}; accepted: a number > 0 ({CLAIM_KEYS['margin']})")
    if direction != "equivalent" and margin is not None:
        raise ConfigError(f'{where}: margin is only for direction = "equivalent"; remove it')
    resampled = claim.get("resampled")
    if resampled is not None and (
        isinstance(resampled, bool)
        or not isinstance(resampled, (int, float))
        or not 0 <= resampled < math.inf
    ):
        raise ConfigError(
            f"{where}: resampled got {resampled!r}; accepted: a number >= 0 ({CLAIM_KEYS['resampled']})"
        )
    claim["min_seeds"] = check("seeds", claim.get("min_seeds", 3), f"{where}: min_seeds")
    failures = claim.setdefault("failures", 0.0)
    if failures != "drop" and (isinstance(failures, bool) or not isinstance(failures, (int, float))):
        raise ConfigError(f'{where}: failures got {failures!r}; accepted: a number or "drop"')


def _toml_value(value) -> str:
    if value is None:
        return '"none"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value))


def dump_spec(spec: dict) -> str:
    """A spec as TOML (what load_spec reads), so a results directory records the grid that really ran."""
    lines = [
        f"{k} = {_toml_value(spec[k])}"
        for k in ("name", "description", "seeds", "resample")
        if spec.get(k) not in (None, "", False)
    ]
    report = {k: v for k, v in (spec.get("report") or {}).items() if k != "claims"}
    for name, table in (("config", spec.get("config")), ("report", report)):
        if table:
            lines += ["", f"[{name}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    for grid in spec["grid"]:
        lines += ["", "[[grid]]"] + [f"{k} = {_toml_value(v)}" for k, v in grid.items()]
    for claim in (spec.get("report") or {}).get("claims", []):
        lines += ["", "[[report.claims]]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in claim.items()]
    return "\n".join(lines) + "\n"
