"""The search CLI: runcard errors, real DeepHyper searches (serial in-process, MPI through mpiexec), restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hpo.config import load_search_config
from hpo.search import build_parser, main, read_results, resolve
from inverse.config import ClosureConfig
from physics.config import load_yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "solver": "gan",
    "base": str(ROOT / "configs" / "closure_gan.yaml"),
    "overrides": {
        "gan.training.steps": 8,
        "gan.training.events_per_param": 128,
        "gan.training.checkpoint_every": 1000,
        "gan.training.log_every": 4,
    },
    "kfold": {"replicas": 2, "n_bins": 4},
    "space": {
        "gan.optimizer_g.lr": {"low": 0.05, "high": 1.0, "log": True},
        "gan.discriminator.width": {"values": [8, 16]},
    },
    "search": {"max_evals": 3, "n_initial_points": 2, "torch_threads": 1},
}


def write(tmp_path: Path, changes: dict | None = None, name: str = "search.yaml") -> Path:
    data = {**TINY, **(changes or {})}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"gan.optimizer_g.lrr": {"low": 0.1, "high": 1.0}}, r"space\.gan\.optimizer_g\.lrr"),
        ({"gan.optimizer_g.lr": {"low": 1.0, "high": 0.1}}, "low .* must be below high"),
        ({"gan.optimizer_g.lr": {"low": 0.1, "high": 1.0, "values": [1]}}, "either low and high"),
        ({"gan.optimizer_g.lr": {"low": 0.0, "high": 1.0, "log": True}}, "log-uniform range needs low > 0"),
        ({"gan.discriminator.width": {"values": [0, 16]}}, r"space\.gan\.discriminator\.width = 0 is refused"),
        (
            {"gan.optimizer_g.lr": {"low": 0.1, "high": 1.0, "when": {"gan.scheduler.kind": "cosine"}}},
            "must be a categorical hyperparameter",
        ),
        ({}, "at least one hyperparameter"),
    ],
)
def test_bad_search_space_is_a_clear_error(tmp_path: Path, space: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_search_config(write(tmp_path, {"space": space}))


def test_bad_runcard_fields_and_files_are_named(tmp_path: Path, capsys) -> None:
    with pytest.raises(ValueError, match="loss_type"):
        load_search_config(write(tmp_path, {"loss": {"loss_type": "chi3"}}))
    with pytest.raises(ValueError, match=r"base: runcard .*missing\.yaml does not exist"):
        load_search_config(write(tmp_path, {"base": "missing.yaml"}))
    with pytest.raises(ValueError, match="penalties"):
        load_search_config(write(tmp_path, {"loss": {"penalties": ["integrability"]}}))
    assert main(["--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "run")]) == 2
    assert "--config: " in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"gan\.training\.devices / num_nodes: a trial trains on its worker's one"):
        load_search_config(write(tmp_path, {"overrides": {"gan.training.devices": 2}}))
    with pytest.raises(ValueError, match="--time-left"):
        resolve(build_parser().parse_args(["--config", str(write(tmp_path, {})), "--out", "x", "--time-left", "0"]))
    args = build_parser().parse_args(["--config", str(write(tmp_path, {})), "--out", "x", "--time-left", "50"])
    assert resolve(args)[0].search.timeout == 50  # the job's time left caps the search ...
    args = build_parser().parse_args(["--config", str(write(tmp_path, {})), "--out", "x", "--time-left", "50"])
    args.timeout = 20
    assert resolve(args)[0].search.timeout == 20  # ... unless the search's own timeout is shorter


def test_serial_search_records_failures_and_writes_a_usable_best_runcard(tmp_path: Path) -> None:
    """A real CBO search in this process: a combination the solver refuses becomes a failed trial."""
    space = {
        **TINY["space"],
        # Each value alone is valid; set_size 4 with 126 events per parameter set is refused at trial time.
        "gan.discriminator.set_size": {"values": [1, 4]},
        "gan.training.events_per_param": {"values": [128, 126]},
    }
    search = {"max_evals": 6, "n_initial_points": 6, "torch_threads": 1, "seed": 3}
    out = tmp_path / "run"
    assert main(["--config", str(write(tmp_path, {"space": space, "search": search})), "--out", str(out)]) == 0
    df = read_results(out)
    assert len(df) == 6 and sorted(df["job_id"]) == list(range(6))
    bad = (df["p:gan.discriminator.set_size"] == 4) & (df["p:gan.training.events_per_param"] == 126)
    assert bad.any(), "seed 3 draws the refused combination (pick another seed if the space changes)"
    assert (df.loc[bad, "objective"] == "F_exception").all()
    assert df.loc[bad, "m:failure"].str.contains("multiple of").all()
    assert (df.loc[~bad, "loss"] > 0).all()
    # The first trial is the base runcard's own values.
    assert df.iloc[0]["p:gan.optimizer_g.lr"] == pytest.approx(0.3)
    best = ClosureConfig.model_validate(load_yaml(out / "best.yaml"))
    row = df.loc[df["loss"].idxmin()]
    assert best.gan.optimizer_g.lr == pytest.approx(row["p:gan.optimizer_g.lr"])
    assert best.gan.training.replicas == 100  # the base runcard's R, not the folds'
    for name in ("objective.png", "summary.json", "report.md", "config.yaml", "base.yaml", "data/meta.json"):
        assert (out / name).is_file(), name
    # A second run in the same directory must not mix searches.
    assert main(["--config", str(tmp_path / "search.yaml"), "--out", str(out)]) == 2


def test_threshold_fails_trials_without_ending_the_search(tmp_path: Path) -> None:
    out = tmp_path / "run"
    path = write(tmp_path, {"loss": {"threshold": 1e-6}, "search": {**TINY["search"], "max_evals": 2}})
    assert main(["--config", str(path), "--out", str(out), "--quiet"]) == 0
    df = read_results(out)
    assert len(df) == 2 and (df["objective"] == "F_threshold").all()
    assert df["m:failure"].str.startswith("threshold: fold 0").all()
    assert not (out / "best.yaml").exists()


def _run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.mpi
def test_mpi_search_under_mpiexec(tmp_path: Path) -> None:
    """3 ranks (1 manager, 2 workers) started by mpiexec; the sentinel line is the CLI's closing line."""
    mpiexec = str(Path(sys.executable).parent / "mpiexec")
    out = tmp_path / "run"
    path = write(tmp_path, {"search": {**TINY["search"], "max_evals": 6}})
    cmd = [mpiexec, "-n", "3", sys.executable, "-m", "hpo.search", "--config", str(path), "--out", str(out)]
    proc = _run([*cmd, "--evaluator", "mpi", "--quiet"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "6 trials (0 failed)" in proc.stdout
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 6 and (df["job_status"] == "DONE").all()
    assert df["m:worker"].nunique() == 2  # both worker ranks ran trials, the manager none
    summary = load_yaml(out / "summary.json")
    assert summary["workers"] == 2 and 0 < summary["this_session"]["worker_utilisation"] <= 1


@pytest.mark.mpi
def test_mpi_evaluator_relaunches_itself(tmp_path: Path) -> None:
    out = tmp_path / "run"
    path = write(tmp_path, {"search": {**TINY["search"], "max_evals": 4}})
    cmd = [sys.executable, "-m", "hpo.search", "--config", str(path), "--out", str(out), "--evaluator", "mpi"]
    proc = _run([*cmd, "--workers", "2", "--quiet"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "launching 2 MPI workers + 1 manager" in proc.stdout
    assert len(pd.read_csv(out / "results.csv")) == 4


@pytest.mark.slow
def test_restart_after_a_kill_keeps_finished_trials(tmp_path: Path) -> None:
    out = tmp_path / "run"
    path = write(tmp_path, {"search": {**TINY["search"], "max_evals": 8}})
    cmd = [sys.executable, "-m", "hpo.search", "--config", str(path), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    rows = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
        if (out / "results.csv").is_file():
            rows = len(pd.read_csv(out / "results.csv"))
            if rows >= 3:
                break
    assert proc.poll() is None and rows >= 3, "the search ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = pd.read_csv(out / "results.csv")
    assert len(before) < 8
    assert main(["--config", str(path), "--out", str(out), "--quiet"]) == 2  # no silent restart
    assert main(["--config", str(path), "--out", str(out), "--restart", "--quiet"]) == 0
    after = pd.read_csv(out / "results.csv")
    assert len(after) == 8 and sorted(after["job_id"]) == list(range(8))
    # Finished trials are kept as they were, and none is proposed again.
    pd.testing.assert_frame_equal(after.iloc[: len(before)][before.columns], before, check_dtype=False)
    params = [c for c in after.columns if c.startswith("p:")]
    assert not after.duplicated(subset=params).any()
