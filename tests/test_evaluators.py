"""Every evaluator finishes the quick search with default settings, and a search survives a killed MPI worker.

The searches run as the user runs them: ``python -m hpo.search`` in a fresh process with the environment as it is
(no ``OMP_NUM_THREADS``), each under a time limit: a process pool forked after the manager used torch's OpenMP
threads would wait forever instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "configs" / "hpo_quick.yaml"
LIMIT_S = 300


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def _search(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "hpo.search", "--config", str(QUICK), "--out", str(out), "--quiet", *extra]


@pytest.mark.parametrize(
    "evaluator",
    [
        pytest.param("serial", marks=pytest.mark.slow),
        pytest.param("thread", marks=pytest.mark.slow),
        pytest.param("process", marks=pytest.mark.slow),
        pytest.param("mpi", marks=pytest.mark.mpi),
    ],
)
def test_every_evaluator_finishes_the_quick_search_with_default_settings(evaluator, tmp_path):
    out = tmp_path / evaluator
    cmd = _search(out, "--evaluator", evaluator, "--workers", "2", "--max-evals", "4")
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=LIMIT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 4 and (df["job_status"] == "DONE").all()
    assert pd.to_numeric(df["objective"], errors="coerce").notna().all(), df["objective"].tolist()
    assert time.monotonic() - start < LIMIT_S


def _worker_pids(root_pid: int) -> list[int]:
    """PIDs of the MPI worker ranks (PMI_RANK >= 1) among the descendants of ``root_pid``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            todo.append(child)
            try:
                env = (Path("/proc") / str(child) / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            rank = next((e.split(b"=", 1)[1] for e in env if e.startswith(b"PMI_RANK=")), None)
            if rank is not None and rank.isdigit() and int(rank) >= 1:
                found.append(child)
    return found


@pytest.mark.mpi
def test_a_killed_mpi_worker_loses_only_its_trial_and_resume_completes_the_search(tmp_path):
    out = tmp_path / "run"
    cmd = _search(out, "--evaluator", "mpi", "--workers", "2", "--max-evals", "10")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + LIMIT_S
    rows = 0
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.3)
        if (out / "results.csv").is_file():
            rows = len(pd.read_csv(out / "results.csv"))
            if rows >= 2:
                break
    workers = _worker_pids(proc.pid)
    assert proc.poll() is None and rows >= 2 and len(workers) == 2, (rows, workers)
    os.kill(workers[0], signal.SIGKILL)  # in the middle of its trial: the trials are running back to back
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err[-3000:]
    assert "--resume" in err
    before = pd.read_csv(out / "results.csv")
    assert 2 <= len(before) < 10 and (before["job_status"] == "DONE").all()
    done = subprocess.run([*cmd, "--resume"], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=LIMIT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    after = pd.read_csv(out / "results.csv")
    assert len(after) == 10 and after["job_id"].is_unique
    # Every row finished before the kill is kept as it was.
    pd.testing.assert_frame_equal(after.iloc[: len(before)][before.columns], before, check_dtype=False)
