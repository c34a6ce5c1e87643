"""The ``qcdgip`` command: one subcommand per tool of the suite, the same options as its ``python -m`` form.

Usage::

    qcdgip closure --config configs/closure_gan.yaml --resume      # = python -m inverse.closure ...
    qcdgip search --config configs/hpo_quick.yaml --evaluator mpi  # = python -m hpo.search ...
    qcdgip --help                                                  # the list of subcommands
"""

from __future__ import annotations

import importlib
import sys

from qcdgip._version import __version__

__all__ = ["COMMANDS", "main"]

COMMANDS: dict[str, tuple[str, str]] = {
    "closure": ("inverse.closure", "GAN closure test against the exact posterior (the main job)"),
    "reference": ("physics.reference", "statistical reference: pseudo-data, Cramér–Rao bound, MLE, MCMC posterior"),
    "generate": ("physics.generate", "write a pseudo-data set"),
    "surrogate": ("surrogates.train", "train a surrogate event generator and judge it on held-out parameters"),
    "refine": ("inverse.gan.refinement", "refine a surrogate around a closure's replicas, in resumable rounds"),
    "vaim": ("inverse.vaim", "VAIM: every parameter set that explains an observation"),
    "search": ("hpo.search", "hyperparameter search (DeepHyper CBO) scored by k-fold losses"),
    "ensemble": ("hpo.ensemble", "ensemble of a search's best trials, uncertainty split aleatoric + epistemic"),
    "closure-dis": ("inverse.gan.dis.cli", "GAN closure test on inclusive DIS (x, Q^2) events"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f"qcdgip {__version__}: generative inverse problems in QCD", "", "usage: qcdgip COMMAND [options]", ""]
    lines += [f"  {name.ljust(width)}  {text}  (python -m {module})" for name, (module, text) in COMMANDS.items()]
    lines += ["", "qcdgip COMMAND --help shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the subcommand's ``main``; returns its exit status (2 for an unknown subcommand)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
