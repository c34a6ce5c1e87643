"""Shared machinery of the suite, below every other package: what the commands and solvers have in common.

- :mod:`qcdgip.config`: runcards (strict pydantic models, YAML loading, errors naming the field, ``--set`` paths);
- :mod:`qcdgip.runs`: run directories (resolved config, summary.json, run.log) and their resume/overwrite guard;
- :mod:`qcdgip.errors`: the exit codes and the error types behind them;
- :mod:`qcdgip.cli`: the command-line convention every command follows;
- :mod:`qcdgip.runtime`: how many torch threads a process uses;
- :mod:`qcdgip.training`: the Lightning step trainer, checkpoints, progress bars, data-parallel strategy;
- :mod:`qcdgip.mpi`: MPI launching and GPU binding;
- :mod:`qcdgip.console`: the ``qcdgip`` command with one subcommand per tool.

Importing ``qcdgip`` loads nothing heavy (no torch): only the version.
"""

from qcdgip._version import __version__

__all__ = ["__version__"]
