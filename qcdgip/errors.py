"""Exit codes of every command and the error types behind them.

========  =====================================================================================================
status    meaning
========  =====================================================================================================
0         done
1         failed for another reason (a crashed MPI rank, too few ensemble members); finished work is kept
2         bad input: a file or field is named, and nothing already written is lost
3         a fit diverged (a NaN or infinite loss); the last checkpoint is kept
130       interrupted (Ctrl-C, SIGINT, SIGTERM); checkpoints and finished trials are kept, ``--resume`` continues
========  =====================================================================================================
"""

from __future__ import annotations

__all__ = [
    "EXIT_CODES",
    "EXIT_DIVERGED",
    "EXIT_FAILED",
    "EXIT_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "NonFiniteLossError",
    "RunFailedError",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INPUT = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "done",
    EXIT_FAILED: "failed for another reason (a crashed MPI rank, too few ensemble members); finished work is kept",
    EXIT_INPUT: "bad input: the file or field is named, nothing already written is lost",
    EXIT_DIVERGED: "a fit diverged (NaN or infinite loss); the last checkpoint is kept",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C, SIGINT, SIGTERM); checkpoints and finished trials are kept: --resume",
}


class NonFiniteLossError(RuntimeError):
    """A training loss became NaN or infinite; the message names the model, the step and the last finite losses."""


class RunFailedError(RuntimeError):
    """A run stopped for a reason that is neither bad input nor divergence (exit status 1); work done is kept."""
