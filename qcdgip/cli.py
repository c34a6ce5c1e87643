"""The command-line convention every command of the suite follows.

Options every command takes (:func:`command_parser`):

``--config FILE``      the YAML runcard (default: the built-in defaults)
``--out DIR``          the run directory (default ``runs/<config file stem>``, or ``runs/<command>``)
``--resume``           continue the run in ``--out`` (same config, except what only changes the report)
``--overwrite``        start over in ``--out``
``--quiet``            no progress bars or tables
``--no-plots``         no PNG figures
``--set a.b.c=VALUE``  set any runcard field (repeatable; VALUE is read as YAML), checked and validated by name
``--threads N``        torch threads (default: the free cores of this process's share, :mod:`qcdgip.runtime`)

A command's own shortcuts (``--case``, ``--steps``, ...) are dotted paths too (:func:`resolve_runcard`), applied
before ``--set``. :func:`run_command` maps what a command raises to the exit codes of :mod:`qcdgip.errors`.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from qcdgip.config import load_yaml, override_config, parse_assignments, parse_config
from qcdgip.errors import (
    EXIT_DIVERGED,
    EXIT_FAILED,
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    NonFiniteLossError,
    RunFailedError,
)

__all__ = ["command_parser", "default_out", "joined_values", "resolve_runcard", "run_command", "shortcut_values"]

_M = TypeVar("_M", bound=BaseModel)


def command_parser(
    prog: str,
    description: str,
    *,
    resume_help: str = "continue the run in --out (same config)",
    resume_aliases: tuple[str, ...] = (),
    epilog: str | None = None,
) -> argparse.ArgumentParser:
    """An argument parser with the options every command takes (module docstring).

    Args:
        prog: how the command is typed, e.g. ``python -m inverse.closure``.
        description: one line.
        resume_help: what ``--resume`` continues for this command.
        resume_aliases: other spellings of ``--resume`` (``--restart`` of a search).
        epilog: text after the options.
    """
    p = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=epilog or "exit status: 0 done, 1 failed otherwise, 2 bad input, 3 diverged, 130 interrupted",
    )
    p.add_argument("--config", type=Path, help="YAML runcard (default: the built-in defaults)")
    p.add_argument("--out", type=Path, help="run directory (default: runs/<config file stem> or runs/<command>)")
    p.add_argument("--resume", *resume_aliases, action="store_true", help=resume_help)
    p.add_argument("--overwrite", action="store_true", help="start over in a run directory that holds a run")
    p.add_argument("--quiet", action="store_true", help="no progress bars or tables")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="A.B.C=VALUE",
        help="set a runcard field (repeatable; VALUE is YAML), e.g. --set gan.training.steps=100",
    )
    p.add_argument("--threads", type=int, help="torch threads (default: the free cores of this process's share)")
    return p


def default_out(args: argparse.Namespace, command: str) -> Path:
    """``--out``, else ``runs/<config file stem>``, else ``runs/<command>``."""
    if getattr(args, "out", None) is not None:
        return Path(args.out)
    config = getattr(args, "config", None)
    return Path("runs") / (Path(config).stem if config else command)


def shortcut_values(args: argparse.Namespace, shortcuts: Mapping[str, str]) -> dict[str, Any]:
    """The dotted-path values of the shortcut options that were given (``{"steps": "gan.training.steps"}``)."""
    return {path: getattr(args, dest) for dest, path in shortcuts.items() if getattr(args, dest, None) is not None}


def joined_values(argv: list[str] | None, options: tuple[str, ...] = ("--truth",)) -> list[str]:
    """The command line with ``--truth -0.3,3.0`` joined into ``--truth=-0.3,3.0``.

    argparse takes a value that starts with ``-`` and is not a plain number for the next option.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    out: list[str] = []
    i = 0
    while i < len(args):
        if args[i] in options and i + 1 < len(args) and args[i + 1][:1] == "-" and args[i + 1][1:2] in "0123456789.":
            out.append(f"{args[i]}={args[i + 1]}")
            i += 2
        else:
            out.append(args[i])
            i += 1
    return out


def truth_values(text: str, names: list[str]) -> dict[str, float]:
    """The dotted-path values of ``--truth a,b,...``: one number per parameter, in the runcard's order."""
    try:
        truth = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"--truth: not a comma-separated list of numbers: {text!r}") from None
    if len(truth) != len(names):
        raise ValueError(f"--truth: need {len(names)} values ({names}), got {len(truth)}")
    return {f"physics.parameters.{i}.truth": v for i, v in enumerate(truth)}


def resolve_runcard(
    model: type[_M], args: argparse.Namespace, shortcuts: Mapping[str, Any] | None = None, section: str | None = None
) -> _M:
    """The runcard of ``--config`` (or the defaults), with the shortcut values and then ``--set`` applied.

    Args:
        model: the runcard's model.
        args: the parsed options (``config``, ``set``).
        shortcuts: dotted path -> value from the command's own options (already filtered to the given ones).
        section: validate only this top-level section of the file (a generator reading a closure runcard).

    Raises:
        ValueError: the file, a field or a ``--set`` path is bad (named).
    """
    raw: dict[str, Any] = load_yaml(args.config) if args.config else {}
    if section is not None:
        raw = raw.get(section) or {}
    config = parse_config(model, raw, str(args.config) if args.config else "<defaults>")
    config = override_config(config, dict(shortcuts or {}), "command line")
    return override_config(config, parse_assignments(getattr(args, "set", None)), "--set")


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_command(body: Callable[[], int | None], out_hint: Callable[[], Path | None] | None = None) -> int:
    """Run a command's body and map what it raises to the suite's exit codes.

    ValueError -> 2 (bad input), :class:`NonFiniteLossError` -> 3 (diverged), :class:`RunFailedError` -> 1,
    KeyboardInterrupt / SIGINT / SIGTERM -> 130; Lightning's own exit after an interrupted training becomes 130.

    Args:
        body: the command; returns its status (None: 0).
        out_hint: the run directory, named in the messages on divergence and interruption.
    """
    from qcdgip.training import interrupted

    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    where = lambda: (out_hint() if out_hint else None) or "the run directory"  # noqa: E731
    try:
        status = body()
        return EXIT_OK if status is None else int(status)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT
    except NonFiniteLossError as err:
        print(f"error: training diverged: {err}; the last checkpoint is kept in {where()}", file=sys.stderr)
        return EXIT_DIVERGED
    except RunFailedError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"\ninterrupted: what finished is kept in {where()}; continue with --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as exc:
        if interrupted():  # Lightning exits with status 1 after it handled a KeyboardInterrupt
            print(f"\ninterrupted: the last checkpoint is kept in {where()}; continue with --resume", file=sys.stderr)
            return EXIT_INTERRUPTED
        raise exc
    finally:
        signal.signal(signal.SIGTERM, previous)
