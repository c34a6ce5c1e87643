"""Sequential refinement rounds of a closure on a surrogate (``python -m inverse.gan.refinement``).

Round 0 is the closure test with the given surrogate as the GAN's event sampler. Each later round fine-tunes the
previous round's surrogate on simulations drawn around its replicas (:func:`surrogates.refine.refine_surrogate`)
and runs the closure again with it. The rounds stop when the replicas' mean moves less than
``refinement.tolerance`` replica sd from one round to the next (a criterion that needs no exact reference), when
the simulation budget is spent, or after ``refinement.rounds``. Each round is a closure run directory
(``round_<k>/``: its summary, report, the surrogate ``model.pt`` it used, the simulations and checkpoints of its
fine-tuning); ``rounds.json`` records the finished steps, so a killed run resumes with ``--resume``.

The closure is the toy's (:func:`inverse.gan.run.run_closure`, a ``python -m inverse.closure`` runcard) or, for a
surrogate trained on a ``dis`` section, the DIS closure (:func:`inverse.gan.dis.run.run_dis_closure`, a
``python -m inverse.gan.dis`` runcard); the surrogate's file says which.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from inverse.gan.config import ClosureConfig
from inverse.gan.dis.config import DISClosureConfig
from inverse.gan.dis.run import run_dis_closure
from inverse.gan.run import run_closure
from qcdgip import runtime
from qcdgip.cli import command_parser, resolve_runcard, run_command
from qcdgip.config import load_yaml, parse_config
from qcdgip.runs import write_json
from surrogates.base import SurrogateFileError, read_model_file
from surrogates.config import RefinementConfig
from surrogates.io import load_surrogate
from surrogates.refine import refine_surrogate

__all__ = ["build_parser", "main", "run_refinement"]


Closure = ClosureConfig | DISClosureConfig


def _round_config(config: Closure, kind: str, path: Path) -> Closure:
    sampler = config.gan.sampler.model_copy(update={"kind": kind, "path": str(path)})
    return config.model_copy(update={"gan": config.gan.model_copy(update={"sampler": sampler})})


def _facts(summary: dict[str, Any], simulations: int, refine: dict[str, Any] | None) -> dict[str, Any]:
    """What a round's closure says, and what it cost."""
    facts = {
        "simulations": simulations,
        "estimate_mean": np.asarray(summary["estimate_mean"], dtype=float).tolist(),
        "estimate_std": np.asarray(summary["estimate_std"], dtype=float).tolist(),
        "pull": np.asarray(summary["pull"], dtype=float).tolist(),
        "fit_cpu_s": summary["timing_s"].get("fit_cpu"),
        "refinement": refine,
    }
    if "bootstrap_distance" in summary:
        facts["bootstrap_distance_median"] = summary["bootstrap_distance"]["median"]
    if "surrogate" in summary:
        facts["surrogate_mle_offset"] = np.asarray(summary["surrogate"]["mle_offset_vs_exact"], dtype=float).tolist()
    return facts


def _moved(rounds: list[dict[str, Any]]) -> float | None:
    """Largest move of the replicas' mean between the last two rounds, in the last round's replica sd."""
    if len(rounds) < 2:
        return None
    a, b = (np.asarray(r["estimate_mean"]) for r in rounds[-2:])
    sd = np.maximum(np.asarray(rounds[-1]["estimate_std"]), 1e-12)
    return float(np.max(np.abs(b - a) / sd))


def _stop_reason(rounds: list[dict[str, Any]], refinement: RefinementConfig, budget: int) -> str | None:
    moved = _moved(rounds)
    if moved is not None and moved < refinement.tolerance:
        return f"converged: the replicas' mean moved {moved:.3f} replica sd (< {refinement.tolerance:g})"
    if len(rounds) > refinement.rounds:
        return f"{refinement.rounds} refinement rounds done"
    if rounds[-1]["simulations"] + refinement.n_params > budget:
        return f"budget: {rounds[-1]['simulations']} of {budget} parameter sets simulated"
    return None


def _closure(config: Closure, out: Path, progress: bool) -> dict[str, Any]:
    """Run (or resume) one round's closure; the summary with the replicas under ``replica_estimates``."""
    if isinstance(config, DISClosureConfig):
        summary = run_dis_closure(config, out, resume=True, plots=False, progress=progress)
        return {**summary, "replica_estimates": summary["estimates"]}
    return run_closure(config, out, resume=True, plots=False, progress=progress)


def run_refinement(
    config: Closure,
    surrogate: Path,
    refinement: RefinementConfig,
    out: Path,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or resume) the rounds; returns the summary (also ``out/summary.json``).

    Raises:
        SurrogateFileError: the surrogate file is missing or not a surrogate for this physics.
        ValueError: ``out`` holds rounds of another run and ``resume`` is not set.
    """
    out = Path(out)
    state_path = out / "rounds.json"
    if state_path.is_file() and not resume:
        raise ValueError(f"{out} holds refinement rounds; pass --resume to continue them or choose another --out")
    state: dict[str, Any] = {"surrogate": str(surrogate), "rounds": []}
    if state_path.is_file():
        state = load_yaml(state_path) or state
    model, _ = load_surrogate(surrogate, physics=config.physics)
    trained = model.config.simulation.n_params
    budget = refinement.budget or trained + refinement.rounds * refinement.n_params
    model_path = Path(surrogate)
    start = time.perf_counter()
    while True:
        k = len(state["rounds"])
        rdir = out / f"round_{k}"
        refine = None
        if k > 0:
            prev = state["rounds"][-1]
            model_path = rdir / "model.pt"
            if not model_path.is_file():
                model, _ = load_surrogate(prev["model"], physics=config.physics)
                earlier = [out / f"round_{j}" / "refine" / "simulations.pt" for j in range(1, k)]
                refine = refine_surrogate(model, np.asarray(prev["replica_estimates"]), refinement, k - 1,
                                          rdir / "refine", progress, earlier)  # fmt: skip
                model.save(model_path, {"refinement_round": k, "refinement": refine})
                write_json(rdir / "refine.json", refine)
            else:
                refine = load_yaml(rdir / "refine.json")
            reference = out / "round_0" / "reference.npz"
            if reference.is_file() and not (rdir / "reference.npz").is_file():
                shutil.copy(reference, rdir / "reference.npz")  # the same data: the same exact reference
        simulations = state["rounds"][-1]["simulations"] + refine["n_params"] if refine else trained
        summary = _closure(_round_config(config, model.kind, model_path), rdir, progress)
        facts = _facts(summary, simulations, refine)
        facts.update(model=str(model_path), replica_estimates=np.asarray(summary["replica_estimates"]).tolist())
        state["rounds"].append(facts)
        write_json(state_path, state)
        reason = _stop_reason(state["rounds"], refinement, budget)
        if progress:
            mean = np.round(facts["estimate_mean"], 3).tolist()
            stop = f"; stop: {reason}" if reason else ""
            print(f"== round {k}: {simulations} parameter sets simulated, replicas' mean {mean}{stop}")
        if reason:
            break
    result = {"stop": reason, "budget": budget, "seconds": time.perf_counter() - start, **state}
    result["rounds"] = [{k: v for k, v in r.items() if k != "replica_estimates"} for r in state["rounds"]]
    write_json(out / "summary.json", result)
    return result


def build_parser() -> argparse.ArgumentParser:
    """The command's options: a closure runcard (``--config``, ``--set``) and the refinement's own settings."""
    p = command_parser(
        "python -m inverse.gan.refinement",
        "Refine a surrogate around a closure's replicas, in rounds "
        "(a DIS closure runcard for a surrogate of (x, Q^2) events).",
    )
    p.add_argument("--surrogate", required=True, help="the surrogate model.pt of round 0 (python -m surrogates.train)")
    defaults = RefinementConfig()
    for name in ("rounds", "n_params", "events_per_param", "widen", "steps", "lr", "budget", "tolerance", "seed"):
        field = RefinementConfig.model_fields[name]
        kind = float if isinstance(getattr(defaults, name), float) else int
        help_text = f"{field.description} (default {getattr(defaults, name)})"
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, help=help_text)
    p.add_argument(
        "--no-accumulate",
        dest="accumulate",
        action="store_false",
        default=None,
        help="fine-tune each round on its own simulations only (default: on every round's so far)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (:mod:`qcdgip.errors`)."""
    args = build_parser().parse_args(argv)
    # Not runs/<config stem>: that is the closure's own run directory.
    out = Path(args.out) if args.out else Path("runs") / f"refine-{Path(args.surrogate).parent.name}"

    def body() -> None:
        if args.overwrite and args.resume:
            raise ValueError("--overwrite and --resume exclude each other")
        if args.overwrite:
            for path in [out / "rounds.json", out / "summary.json", *out.glob("round_*")]:
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
        try:
            dis = read_model_file(args.surrogate)["config"].get("dis") is not None
        except SurrogateFileError as err:
            raise ValueError(f"--surrogate: {err}") from None
        config = resolve_runcard(DISClosureConfig if dis else ClosureConfig, args)
        given = {k: getattr(args, k) for k in RefinementConfig.model_fields if getattr(args, k, None) is not None}
        refinement = parse_config(RefinementConfig, given, "command line")
        runtime.configure_threads(config.gan.training.threads or None)
        try:
            run_refinement(config, Path(args.surrogate), refinement, out, args.resume, not args.quiet)
        except SurrogateFileError as err:
            raise ValueError(f"--surrogate: {err}") from None

    return run_command(body, lambda: out)


if __name__ == "__main__":
    raise SystemExit(main())
