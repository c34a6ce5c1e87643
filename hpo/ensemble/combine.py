"""Combine the refitted members: the uncertainty split, the PDF bands, the comparison with the posterior.

In a closure (the search's events are pseudo-data with a known truth) the ensemble is compared with the MCMC
reference posterior (cached in the ensemble directory as ``reference.npz``): ``pull`` = (mu - truth) / posterior
sd, ``std_ratio`` = ensemble sd / posterior sd with and without the epistemic part, and the coverage of the truth
with the aleatoric and with the total sd.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpo.ensemble.config import EnsembleConfig
from hpo.ensemble.plots import plot_contributions, plot_pdf_split
from hpo.ensemble.report import ensemble_report
from hpo.ensemble.split import closure_comparison, variance_split
from inverse.gan.config import ClosureConfig
from inverse.gan.reference import closure_reference
from physics.datasets import Experiment
from physics.pseudodata import load_events
from physics.theory import Theory
from qcdgip.config import parse_config
from qcdgip.errors import RunFailedError
from qcdgip.runs import write_json

__all__ = ["run_ensemble"]


def _pdf_split(theory: Theory, x: torch.Tensor, est: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
    """The split of x f(x) at every x per flavour, and its sds at three x values (for the summary)."""
    split = {}
    for flavor in theory.flavors:
        values = np.stack([(x * theory.pdf(torch.tensor(e), x, flavor)).numpy() for e in est])
        split[flavor] = variance_split(values)
    picks = [0, len(x) // 2, -1]
    at_x = {
        "x": x.numpy()[picks],
        **{f: {k: np.sqrt(s[k][picks]) for k in ("aleatoric", "epistemic", "total")} for f, s in split.items()},
    }
    return split, at_x


def _members(members: list[dict[str, Any]], refits: list[dict[str, Any]]) -> tuple[list, list, list]:
    """(members refitted, their refit results, failed refits); at least two must have succeeded."""
    failed = [r for r in refits if r["error"]]
    for r in failed:
        print(f"warning: member job {r['job_id']} failed: {r['error']}", file=sys.stderr)
    ok = [m for m, r in zip(members, refits) if not r["error"]]
    if len(ok) < 2:
        raise RunFailedError(f"{len(ok)} of {len(members)} members refitted: an ensemble needs at least 2")
    return ok, [r for r in refits if not r["error"]], failed


def run_ensemble(
    config: EnsembleConfig, out: Path, members: list[dict[str, Any]], refits: list[dict[str, Any]], progress: bool
) -> dict[str, Any]:
    """Combine the refitted members, compare with the reference posterior, write ensemble.json, report and plots.

    Raises:
        RunFailedError: fewer than two members were refitted.
    """
    ok, done, failed = _members(members, refits)
    search = Path(config.search)
    est = np.stack([np.load(out / "members" / f"job-{m['job_id']}" / "estimates.npy") for m in ok])
    split = variance_split(est)
    card = parse_config(ClosureConfig, ok[0]["runcard"], "member runcard")
    experiment = Experiment(card.physics)
    theory = experiment.theory
    truth = np.asarray(theory.truth, dtype=float)
    summary: dict[str, Any] = {
        "search": str(search),
        "params": theory.parameter_names,
        "members": [
            {"job_id": m["job_id"], "search_loss": m["loss"], "parameters": m["parameters"], "refit_s": r["seconds"]}
            for m, r in zip(ok, done)
        ],
        "failed_members": [{"job_id": r["job_id"], "error": r["error"]} for r in failed],
        "replicas": int(est.shape[1]),
        "truth": truth,
        **{k: split[k] for k in ("mean", "aleatoric", "epistemic", "total", "epistemic_floor")},
        "std": {k: np.sqrt(split[k]) for k in ("aleatoric", "epistemic", "total")},
        "epistemic_share": split["epistemic"] / split["total"],
        "member_mean": split["member_mean"],
        "member_std": np.sqrt(split["member_var"]),
        "covariance": {k: split[f"{k}_cov"] for k in ("aleatoric", "epistemic", "total")},
    }
    post = None
    if config.reference:
        ref_card = card.model_copy(update={"report": card.report.model_copy(update={"bootstrap_mles": False})})
        data = load_events(search / "data", experiment)
        post = closure_reference(ref_card, experiment, data, out, progress, logging.getLogger(__name__))["posterior"]
        summary["closure"] = closure_comparison(split, truth, post.mean(0), post.std(0, ddof=1))
    x_lo = min(d.spec.x_min for d in experiment.datasets)
    x_hi = max(d.spec.x_max for d in experiment.datasets)
    x = torch.tensor(np.geomspace(x_lo, x_hi, 120), dtype=torch.float64)
    pdf_split, summary["pdf_std_at_x"] = _pdf_split(theory, x, est)
    plot_contributions(summary, est, out / "contributions.png")
    plot_pdf_split(theory, x.numpy(), est, pdf_split, out / "pdfs.png", truth, post, [m["job_id"] for m in ok])
    write_json(out / "ensemble.json", summary)
    (out / "report.md").write_text(ensemble_report(summary))
    return summary
