"""The thread policy: threads follow the cores other processes leave free, and the count never changes a result."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from inverse.gan.config import GANConfig
from inverse.gan.model import InverseGAN
from inverse.gan.training import fit_gan
from qcdgip import runtime

CORES = len(runtime.affinity_cores())
needs_two = pytest.mark.skipif(CORES < 2, reason="needs at least 2 cores in the affinity mask")


@pytest.fixture
def busy_neighbour():
    """Another process keeping one core busy (a pure-Python spin loop)."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.5)  # let it start spinning
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
    runtime._POLICY = None


def test_a_pinned_count_is_used_as_given_and_never_rechecked():
    policy = runtime.configure_threads(pinned=1)
    assert torch.get_num_threads() == 1 and policy.pinned == 1
    assert policy.recheck() == 1 and policy.changes == []


@needs_two
def test_a_busy_neighbour_takes_a_core_out_of_the_choice(busy_neighbour):
    policy = runtime.configure_threads(window_s=0.5)
    assert policy.busy_elsewhere is not None and policy.busy_elsewhere >= 0.7, policy
    assert policy.threads <= CORES - 1
    assert torch.get_num_threads() == policy.threads


@needs_two
def test_this_process_own_work_is_not_counted_as_busy():
    stop = threading.Event()

    def spin() -> None:
        a = np.random.default_rng(0).standard_normal((300, 300))
        while not stop.is_set():
            a = np.tanh(a @ a.T / 300.0)

    worker = threading.Thread(target=spin)
    worker.start()
    try:
        first = runtime._sample(runtime.affinity_cores())
        time.sleep(0.6)
        second = runtime._sample(runtime.affinity_cores())
    finally:
        stop.set()
        worker.join()
    busy = runtime._busy_elsewhere(first, second, CORES)
    own = (second.own - first.own) / ((second.total - first.total) / CORES)
    assert own > 0.5, own  # the thread really worked ...
    assert busy < own - 0.3, (busy, own)  # ... and is not taken for another process


@needs_two
def test_the_recheck_follows_a_neighbour_that_comes_and_goes():
    policy = runtime.configure_threads(window_s=0.5)
    quiet = policy.busy_elsewhere
    if quiet is None or quiet > CORES - 1.3:
        pytest.skip(f"the machine is busy already ({quiet} cores used by others): no core left to take")
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        policy.recheck()  # a window that includes the neighbour's start
        time.sleep(1.0)
        crowded, busy = policy.recheck(), policy.busy_elsewhere
    finally:
        proc.kill()
        proc.wait()
    time.sleep(1.0)
    policy.recheck()
    time.sleep(1.0)
    freed, calm = policy.recheck(), policy.busy_elsewhere
    assert busy > quiet + 0.7 and calm < busy - 0.7, (quiet, busy, calm)
    assert crowded == runtime.choose_threads(policy.share, CORES, busy)
    assert freed == runtime.choose_threads(policy.share, CORES, calm) and freed >= crowded


def test_the_share_divides_the_cores_among_processes(monkeypatch):
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert runtime.process_share(1) == CORES
    assert runtime.process_share(CORES * 4) == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    assert runtime.process_share(8) == 3


def _fit(threads: int, experiment, data) -> np.ndarray:
    torch.set_num_threads(threads)
    config = GANConfig.model_validate({"training": {"replicas": 4, "steps": 25, "progress": False}})
    model = InverseGAN(config, experiment, data)
    fit_gan(model, progress=False)
    return model.estimates().double().numpy()


@needs_two
def test_a_fit_is_bit_identical_with_one_and_two_threads(experiment_b, data_b):
    assert os.cpu_count() and np.array_equal(_fit(1, experiment_b, data_b), _fit(2, experiment_b, data_b))
