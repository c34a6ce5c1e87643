"""The batch scripts on a real one-node Slurm cluster started here (tests/slurm_cluster.py): Debian's slurmctld and
slurmd, a private munged, a node declared with ``Features=gpu Gres=gpu:4``.

- ``slurm/perlmutter.sh``, unmodified, runs a DeepHyper search over MPI (4 workers + 1 manager through srun), binds
  each worker to its own GPU, and continues the search when resubmitted.
- ``slurm/train.sh`` trains one GAN with 2 data-parallel CPU processes (gloo) under srun; the loss curve and the
  replicas' estimates equal those of one process on the same global batch.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.slurm_cluster import LocalSlurm, SlurmUnavailableError

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[1]
JOB_TIMEOUT = 600


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    try:
        slurm = LocalSlurm(tmp_path_factory.mktemp("slurm"))
        slurm.start()
    except SlurmUnavailableError as err:
        pytest.skip(f"no local Slurm cluster: {err}")
    yield slurm
    slurm.stop()


def _env(**extra: str) -> dict[str, str]:
    # Submitted from a temporary directory (where the job's output file lands), the job finds the repository through
    # QCDGIP_HOME and activates the environment running these tests, whatever its path.
    return {"QCDGIP_HOME": str(ROOT), "QCDGIP_VENV": sys.prefix, "SBATCH_ACCOUNT": "m0000", **extra}


def _finished(cluster: LocalSlurm, job: int) -> str:
    info = cluster.wait(job, timeout=JOB_TIMEOUT)
    log = Path(info["StdOut"]).read_text() if Path(info.get("StdOut", "")).is_file() else ""
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", f"{info}\n{log[-3000:]}"
    return log


def test_perlmutter_script_searches_over_mpi_and_resumes(cluster, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "solver": "gan",
                "base": str(ROOT / "configs" / "closure_gan.yaml"),
                "overrides": {
                    "gan.training.steps": 20,
                    "gan.training.events_per_param": 128,
                    "gan.training.checkpoint_every": 1000,
                },
                "kfold": {"replicas": 2},
                "space": {
                    "gan.optimizer_g.lr": {"low": 0.05, "high": 1.0, "log": True},
                    "gan.discriminator.width": {"values": [8, 16]},
                },
                "search": {"max_evals": 6, "n_initial_points": 3},
            }
        )
    )
    scratch = tmp_path / "scratch"
    env = _env(SCRATCH=str(scratch), QCDGIP_CONFIG=str(config))
    script = ROOT / "slurm" / "perlmutter.sh"
    log = _finished(cluster, cluster.sbatch(script, env=env, cwd=tmp_path))
    run = scratch / "qcdgip" / "tiny"  # the script's default run directory under $SCRATCH
    assert "4 workers + 1 manager" in log
    first = pd.read_csv(run / "results.csv").sort_values("job_id").reset_index(drop=True)
    assert sorted(first["job_id"]) == list(range(6))
    assert pd.to_numeric(first["objective"], errors="coerce").notna().all(), first["objective"].tolist()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["workers"] == 4 and summary["failed"] == 0
    # Every worker rank had one GPU of its own, among the 4 Slurm gave the job.
    gpu_of = first.groupby("m:worker")["m:gpu"].agg(lambda g: set(g.astype(str)))
    assert all(len(g) == 1 for g in gpu_of), gpu_of
    gpus = [next(iter(g)) for g in gpu_of]
    assert len(set(gpus)) == len(gpus) and set(gpus) <= {"0", "1", "2", "3"}, gpu_of

    # Resubmitting continues the same search with a larger budget; finished trials are kept as they were.
    log = _finished(cluster, cluster.sbatch(script, env={**env, "QCDGIP_ARGS": "--max-evals 9 --quiet"}, cwd=tmp_path))
    assert "--resume" in log
    second = pd.read_csv(run / "results.csv").sort_values("job_id").reset_index(drop=True)
    assert sorted(second["job_id"]) == list(range(9))
    pd.testing.assert_frame_equal(second.iloc[:6][first.columns], first)


def _curves(run: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = list(csv.DictReader((run / "lightning_logs" / "version_0" / "metrics.csv").open()))
    losses = np.array([[float(r["g_loss"]), float(r["d_loss"])] for r in rows if r.get("g_loss")])
    return losses, np.array(json.loads((run / "summary.json").read_text())["replica_estimates"])


def test_train_script_data_parallel_equals_one_process(cluster, tmp_path):
    config = tmp_path / "ddp.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "posterior": {"n_chains": 4, "n_warmup": 200, "n_samples": 300},
                "report": {"bootstrap_mles": False},
                "gan": {
                    "training": {
                        "replicas": 4,
                        "steps": 20,
                        "events_per_param": 512,
                        "dtype": "float64",  # rounding differences of the all-reduce stay at 1e-15
                        "accelerator": "cpu",
                        "log_every": 1,
                        "checkpoint_every": 10,
                    }
                },
            }
        )
    )
    one = tmp_path / "one"
    subprocess.run(
        [sys.executable, "-m", "inverse.closure", "--config", str(config), "--out", str(one), "--quiet", "--no-plots"],
        cwd=ROOT,
        check=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    two = tmp_path / "two"
    env = _env(QCDGIP_CONFIG=str(config), QCDGIP_RUN_DIR=str(two), QCDGIP_ARGS="--quiet --no-plots")
    # 2 CPU processes on this small node instead of the script's 4 GPUs per node: sbatch's options override it.
    script = ROOT / "slurm" / "train.sh"
    job = cluster.sbatch(script, "--ntasks-per-node=2", env=env, cwd=tmp_path)
    info = cluster.wait(job, timeout=JOB_TIMEOUT)
    if info["JobState"] != "COMPLETED" and "Aborted" in (first := Path(info["StdOut"]).read_text()):
        # Once in CI (not reproduced in ~20 runs here) a rank aborted inside gloo's rendezvous. The script's answer to
        # a crashed job is resubmission (--resume), so that is what is tested then: the result must still be equal.
        warnings.warn(f"train.sh job {job} aborted; resubmitted:\n{first[-1500:]}", stacklevel=1)
        job = cluster.sbatch(script, "--ntasks-per-node=2", env=env, cwd=tmp_path)
    log = _finished(cluster, job)
    assert "MEMBER: 2/2" in log and "--devices 2 --num-nodes 1" in log

    losses_one, est_one = _curves(one)
    losses_two, est_two = _curves(two)
    assert losses_one.shape == losses_two.shape == (20, 2)
    np.testing.assert_allclose(losses_two, losses_one, rtol=1e-9)
    np.testing.assert_allclose(est_two, est_one, rtol=1e-9, atol=1e-12)
    # A real training: the generator loss moved by much more than the tolerance.
    assert np.ptp(losses_one[:, 0]) > 1e-3 * np.abs(losses_one[:, 0]).max()
