"""How many torch threads a process uses: the cores other processes leave free, within this process's share.

torch's OpenMP threads spin while they wait for each other. On a node where another process keeps one of the cores
busy, a team of threads as large as the node waits at every parallel region for the thread that lost its core, and
a step of the GAN became 15x slower with 2 threads than with 1 on 2 cores. Alone, 2 threads are twice as fast as 1.
No fixed setting is right in both situations, so the choice follows the cores that are actually free:

- the **share** of this process: the cores of its affinity mask (``os.sched_getaffinity``), divided among the
  processes it was launched with (srun's ``-c``; MPI workers or data-parallel ranks per node, given by the caller);
- the **free cores**: the affinity mask's cores minus what other processes used during a short window, read from
  ``/proc/stat`` (all processes, per core) less this process's own CPU time (``/proc/self/stat``);
- threads = max(1, min(share, free cores rounded)), chosen at start and re-checked during training every
  ``RECHECK_S`` seconds from the CPU time used since the last check (:class:`ThreadGovernor`, a Lightning callback
  of every trainer of the suite), so a job that starts next to ours later does not stall it either.

``training.threads`` (or ``--threads N``) pins the count and switches the re-check off. With the shipped runcards
the count changes speed only (a GAN fit is bit-identical with 1 and 2 threads, tested); other shapes can make a
BLAS kernel split a sum differently and change the last bits, so pin the count where a run must reproduce another
bit for bit.

References:
    OpenMP 5.2 specification, section 6.11 (``OMP_WAIT_POLICY``: active waiting is the GNU runtime's default).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "RECHECK_S",
    "ThreadPolicy",
    "affinity_cores",
    "choose_threads",
    "configure_threads",
    "current_policy",
    "policy_summary",
    "process_share",
]

RECHECK_S = 10.0
"""Seconds of training between two re-checks of the free cores."""

_WINDOW_S = 0.25
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def affinity_cores() -> list[int]:
    """The cores this process may run on (its affinity mask; all cores where the mask is unknown)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def process_share(processes: int = 1) -> int:
    """Cores this process may use: srun's ``-c`` under srun, else its affinity mask divided among ``processes``.

    Args:
        processes: processes on this node that divide the cores among them (MPI workers, data-parallel ranks).
    """
    per_task = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if per_task.isdigit() and "SLURM_STEP_ID" in os.environ:
        return max(1, int(per_task))
    return max(1, len(affinity_cores()) // max(1, processes))


def _cpu_ticks(cores: list[int]) -> tuple[float, float] | None:
    """(busy, total) clock ticks of ``cores`` since boot, from /proc/stat (None where it cannot be read)."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    wanted = {f"cpu{c}" for c in cores}
    busy = total = 0.0
    for line in lines:
        name, *values = line.split()
        if name in wanted:
            ticks = [float(v) for v in values[:8]]
            idle = ticks[3] + ticks[4]  # idle + iowait
            busy += sum(ticks) - idle
            total += sum(ticks)
    return (busy, total) if total > 0 else None


def _own_ticks() -> float:
    """Clock ticks of CPU time used by this process (all its threads) since it started."""
    times = os.times()
    return (times.user + times.system) * _CLOCK_TICKS


@dataclass
class _Sample:
    busy: float
    total: float
    own: float


def _sample(cores: list[int]) -> _Sample | None:
    ticks = _cpu_ticks(cores)
    return None if ticks is None else _Sample(ticks[0], ticks[1], _own_ticks())


def _busy_elsewhere(first: _Sample, second: _Sample, n_cores: int) -> float:
    """Cores that other processes kept busy between two samples."""
    elapsed = (second.total - first.total) / max(1, n_cores)
    if elapsed <= 0:
        return 0.0
    others = (second.busy - first.busy) - (second.own - first.own)
    return max(0.0, others / elapsed)


@dataclass
class ThreadPolicy:
    """The thread choice of this process (written into every run's summary as ``runtime``).

    Attributes:
        threads: torch threads now.
        pinned: the count asked for (``training.threads`` / ``--threads``), or None for the automatic choice.
        share: the cores this process may use.
        cores: the cores of its affinity mask.
        busy_elsewhere: cores other processes used at the last check.
        changes: (seconds since start, threads) at each change after the first choice.
    """

    threads: int
    pinned: int | None
    share: int
    cores: int
    busy_elsewhere: float | None = None
    changes: list[tuple[float, int]] = field(default_factory=list)
    _last: _Sample | None = field(default=None, repr=False)
    _start: float = field(default_factory=time.monotonic, repr=False)

    def summary(self) -> dict[str, Any]:
        """JSON-ready description."""
        out = asdict(self)
        out.pop("_last")
        out.pop("_start")
        out["policy"] = "pinned" if self.pinned else "free cores within the share"
        return out

    def recheck(self) -> int:
        """Re-read the free cores from the CPU time used since the last check; returns the thread count."""
        if self.pinned:
            return self.threads
        cores = affinity_cores()
        now = _sample(cores)
        if now is None or self._last is None:
            self._last = now
            return self.threads
        self.busy_elsewhere = _busy_elsewhere(self._last, now, len(cores))
        self._last = now
        threads = choose_threads(self.share, len(cores), self.busy_elsewhere)
        if threads != self.threads:
            _set_torch_threads(threads)
            self.threads = threads
            self.changes.append((round(time.monotonic() - self._start, 1), threads))
        return self.threads


def choose_threads(share: int, cores: int, busy_elsewhere: float) -> int:
    """max(1, min(share, free cores)), with the free cores rounded up from 0.7 of a core.

    >>> choose_threads(2, 2, 0.02), choose_threads(2, 2, 1.0), choose_threads(4, 16, 3.0), choose_threads(8, 8, 7.9)
    (2, 1, 4, 1)
    """
    free = cores - busy_elsewhere
    return max(1, min(share, math.floor(free + 0.3)))


def _set_torch_threads(threads: int) -> None:
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


_POLICY: ThreadPolicy | None = None


def configure_threads(pinned: int | None = None, processes: int = 1, window_s: float = _WINDOW_S) -> ThreadPolicy:
    """Choose and set this process's torch threads (see the module docstring); returns the policy.

    Args:
        pinned: a fixed count (``training.threads`` / ``--threads``); None or 0: the automatic choice.
        processes: processes on this node sharing its cores (MPI workers, data-parallel ranks).
        window_s: how long to watch the other processes before the first choice.
    """
    global _POLICY
    cores = affinity_cores()
    share = process_share(processes)
    if pinned:
        policy = ThreadPolicy(threads=int(pinned), pinned=int(pinned), share=share, cores=len(cores))
    else:
        first = _sample(cores)
        busy = None
        if first is not None and window_s > 0:
            time.sleep(window_s)
            second = _sample(cores)
            busy = _busy_elsewhere(first, second, len(cores)) if second is not None else None
        threads = share if busy is None else choose_threads(share, len(cores), busy)
        policy = ThreadPolicy(threads=threads, pinned=None, share=share, cores=len(cores), busy_elsewhere=busy)
        policy._last = _sample(cores)
    _set_torch_threads(policy.threads)
    _POLICY = policy
    return policy


def current_policy() -> ThreadPolicy | None:
    """The policy set by :func:`configure_threads` in this process (None before)."""
    return _POLICY


def policy_summary() -> dict[str, Any] | None:
    """The current policy as written into a run's summary.json (None when no policy was configured)."""
    return None if _POLICY is None else _POLICY.summary()
