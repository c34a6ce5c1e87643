"""Run directories shared by every command-line tool: resolved config, summary.json, logs, tables.

Every CLI of the suite writes one directory holding ``config.yaml`` (the resolved, validated config),
``summary.json`` (machine-readable results, with the suite version, the command line and the thread policy),
plots (PNG) and ``run.log``. JSON and YAML files are written to a temporary name and renamed, so a crash never
leaves a truncated file. :func:`guard_run_dir` keeps runs apart: a directory that holds a run is continued
(``--resume``, same config but for the fields that only change what is reported) or started over
(``--overwrite``), never silently mixed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import yaml
from pydantic import BaseModel

from qcdgip import runtime
from qcdgip._version import __version__
from qcdgip.config import flatten, load_yaml, parse_config

__all__ = [
    "append_row",
    "format_table",
    "guard_run_dir",
    "open_run_dir",
    "resumable_rows",
    "to_jsonable",
    "write_json",
    "write_yaml",
]


def to_jsonable(value: Any) -> Any:
    """Convert numpy/torch scalars and arrays (recursively) to plain Python for JSON; NaN/inf become strings."""
    if isinstance(value, BaseModel):
        return to_jsonable(value.model_dump())
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return to_jsonable(value.detach().cpu().numpy())
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    path = Path(path)
    _atomic_write_text(path, json.dumps(to_jsonable(data), indent=2) + "\n")
    return path


def write_yaml(path: str | Path, data: Any) -> Path:
    """Write ``data`` as YAML, atomically."""
    path = Path(path)
    _atomic_write_text(path, yaml.safe_dump(to_jsonable(data), sort_keys=False))
    return path


def open_run_dir(out: str | Path, config: BaseModel, command: str) -> tuple[Path, logging.Logger, dict[str, Any]]:
    """Create (or reopen) a run directory, write the resolved config, and start logging to run.log.

    Args:
        out: the directory.
        config: the validated config, written as ``config.yaml``.
        command: name of the command, used as the logger name.

    Returns:
        (directory, logger, provenance dict to put into summary.json).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_yaml(out / "config.yaml", config.model_dump())
    logger = logging.getLogger(command)
    logger.setLevel(logging.INFO)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    file_handler = logging.FileHandler(out / "run.log")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(file_handler)
    provenance = {
        "command": command,
        "argv": sys.argv,
        "suite_version": __version__,
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if runtime.current_policy() is not None:
        provenance["runtime"] = runtime.policy_summary()
    logger.info("run directory %s (%s %s)", out, command, " ".join(sys.argv[1:]))
    return out, logger, provenance


def guard_run_dir(
    out: Path,
    config: BaseModel,
    *,
    resume: bool,
    overwrite: bool,
    outputs: Sequence[str] = (),
    folders: Sequence[str] = ("checkpoints", "lightning_logs"),
    markers: Sequence[str] = ("checkpoints", "model.pt", "summary.json"),
    free: Sequence[str] = (),
) -> None:
    """Guard a run directory: an existing run is resumed or overwritten, never mixed with another.

    Args:
        out: the run directory.
        config: the validated config of the new run; ``out/config.yaml`` is read back as the same model.
        resume: continue the run: its config must match except in the ``free`` fields.
        overwrite: start over: ``folders`` and ``outputs`` inside are deleted first (the data are kept).
        outputs: file names the command writes.
        folders: sub-directories the command writes.
        markers: files or folders whose presence means the directory holds a run.
        free: dotted prefixes of fields that only change what is reported (``report``, ``gan.training.threads``).

    Raises:
        ValueError: ``resume`` with ``overwrite``, a run there without either, or ``resume`` with another config
            (the differing fields are named).
    """
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other")
    saved = out / "config.yaml"
    started = any((out / m).exists() for m in markers)
    if resume:
        if saved.is_file():
            old = flatten(parse_config(type(config), load_yaml(saved), str(saved)).model_dump(mode="json"))
            new = flatten(config.model_dump(mode="json"))
            diff = sorted(
                k
                for k in old.keys() | new.keys()
                if old.get(k) != new.get(k) and not any(k == f or k.startswith(f + ".") for f in free)
            )
            if diff:
                shown = ", ".join(diff[:8]) + (f" and {len(diff) - 8} more" if len(diff) > 8 else "")
                raise ValueError(f"{saved}: --resume needs the same config; differing fields: {shown}")
        return
    if started and not overwrite:
        raise ValueError(f"{out}: holds a run already; use --resume to continue it or --overwrite to start over")
    if overwrite:
        for sub in folders:
            shutil.rmtree(out / sub, ignore_errors=True)
        for name in outputs:
            (out / name).unlink(missing_ok=True)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], floatfmt: str = ".4g") -> str:
    """Format a plain-text table with right-aligned columns.

    Args:
        headers: column names.
        rows: cell values (floats formatted with ``floatfmt``).
        floatfmt: format spec of floats.

    Returns:
        The table as one string.
    """
    cells = [[format(c, floatfmt) if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda items: "  ".join(s.rjust(w) for s, w in zip(items, widths))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def resumable_rows(path: Path, key: str, index: str) -> dict[int, dict[str, Any]]:
    """The rows of a JSON-lines study file that belong to ``key``, by their ``index`` field.

    Rows of another configuration (another ``key``) stay in the file untouched, so a study run with other settings
    in the same directory never loses them; only lines cut short by an interruption are dropped (the file is
    rewritten without them, so rows appended next (:func:`append_row`) start on a line of their own).
    """
    rows: dict[int, dict[str, Any]] = {}
    if not path.is_file():
        return rows
    text = path.read_text()
    lines = text.splitlines()
    kept: list[str] = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by an interruption
        kept.append(line)
        if isinstance(row, dict) and row.get("key") == key:
            rows[int(row[index])] = row
    if len(kept) < len(lines) or not text.endswith("\n"):
        _atomic_write_text(path, "".join(line + "\n" for line in kept))
    return rows


def append_row(handle: IO[str], row: dict[str, Any]) -> None:
    """Append one row to an open JSON-lines file and push it to disk (a killed study keeps every finished row)."""
    handle.write(json.dumps(row) + "\n")
    handle.flush()
    os.fsync(handle.fileno())
