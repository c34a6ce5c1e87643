"""``report.md`` of an ensemble: the split per parameter, the floor, the comparison with the posterior."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["ensemble_report"]


def _fmt(values: Any, digits: int = 3) -> str:
    return ", ".join(f"{v:.{digits}g}" for v in np.asarray(values, dtype=float))


def ensemble_report(s: dict[str, Any]) -> str:
    """``report.md`` of an ensemble (``s``: the contents of ensemble.json)."""
    names = s["params"]
    lines = [
        f"# Ensemble of {len(s['members'])} configurations x {s['replicas']} replicas (search {s['search']})",
        "",
        "Members (search loss, refit time): "
        + "; ".join(f"job {m['job_id']} ({m['search_loss']:.4g}, {m['refit_s']:.0f} s)" for m in s["members"]),
        "",
        "| param | truth | mean | sd aleatoric | sd epistemic | sd total | epistemic share | epistemic / floor | pull "
        "| std_ratio total | std_ratio aleatoric |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    c = s.get("closure")
    for i, n in enumerate(names):
        row = [n, s["truth"][i], s["mean"][i], *(s["std"][k][i] for k in ("aleatoric", "epistemic", "total"))]
        row += [s["epistemic_share"][i], s["epistemic"][i] / s["epistemic_floor"][i]]
        row += [c["pull"][i], c["std_ratio_total"][i], c["std_ratio_aleatoric"][i]] if c else [math.nan] * 3
        lines.append("| " + " | ".join([row[0]] + [f"{v:.4g}" for v in row[1:]]) + " |")
    lines += [
        "",
        "aleatoric = mean over members of the replica variance; epistemic = variance of the member means; "
        "total = both (law of total variance). The floor, (K-1)/K x aleatoric / R = "
        f"{_fmt(s['epistemic_floor'])}, is the epistemic variance K identical configurations with independent "
        "replicas would show; members that share their bootstrap replicas (as here) share most of that noise, so an "
        "epistemic / floor near or above 1 is a real dependence on the hyperparameters.",
    ]
    if c:
        lines += [
            "",
            "## Against the MCMC reference posterior",
            "",
            "`pull` = (ensemble mean - truth) / posterior sd; `std_ratio` = ensemble sd / posterior sd.",
            f"- truth covered (fraction of the {len(names)} parameters) with the aleatoric sd: 68 % "
            f"{c['coverage_aleatoric']['68']:.2f}, 95 % {c['coverage_aleatoric']['95']:.2f}; with the total sd: "
            f"68 % {c['coverage_total']['68']:.2f}, 95 % {c['coverage_total']['95']:.2f} (nominal 0.68, 0.95)",
            f"- adding the epistemic part improves coverage: **{c['epistemic_improves_coverage']}** (one data set "
            f"and {len(names)} parameters: a coarse check)",
        ]
    if s["failed_members"]:
        lines += ["", "Failed members: " + "; ".join(f"job {f['job_id']}: {f['error']}" for f in s["failed_members"])]
    lines += [
        "",
        "- `contributions.png`: per parameter, the aleatoric, epistemic and total sd (posterior sd units in a "
        "closure) and each member's mean and replica sd.",
        "- `pdfs.png`: x u(x), x d(x): each member's band, the ensemble's, the posterior's; below, the split of the "
        "PDF sd along x.",
    ]
    return "\n".join(lines) + "\n"
