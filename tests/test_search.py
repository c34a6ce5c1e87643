"""The search CLI: runcard errors, real DeepHyper searches (serial in-process, MPI through mpiexec), restart."""

from __future__ import annotations

import math
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
from hpo.ensemble.members import select_members
from hpo.search.cli import build_parser, main, resolve
from hpo.search.results import read_results
from inverse.gan.config import ClosureConfig
from qcdgip.config import load_yaml

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


STOPPED_SEARCH = {
    "overrides": {
        "gan.training.steps": 40,
        "gan.training.events_per_param": 256,
        "gan.training.checkpoint_every": 1000,
    },
    "kfold": {"replicas": 4},
    "space": {
        "gan.optimizer_g.lr": {"low": 0.001, "high": 1.0, "log": True},
        "gan.optimizer_d.lr": {"low": 0.001, "high": 0.1, "log": True},
    },
    "search": {"max_evals": 8, "n_initial_points": 4, "torch_threads": 1},
    "stopper": {"kind": "successive_halving", "every": 10, "min_fully_completed": 1},
}


@pytest.mark.parametrize("kind", ["successive_halving", "median"])
def test_stoppers_stop_bad_trials_and_record_them(tmp_path: Path, kind: str) -> None:
    """A real search with a DeepHyper stopper: trials report every 10 of 40 steps; those behind the rung's best
    third (successive halving) or its median are stopped, recorded as stopped (a numeric objective at a smaller
    budget, not F_*), and never chosen as the best trial."""
    out = tmp_path / "run"
    changes = {**STOPPED_SEARCH, "stopper": {**STOPPED_SEARCH["stopper"], "kind": kind}}
    assert main(["--config", str(write(tmp_path, changes)), "--out", str(out), "--quiet"]) == 0
    df = read_results(out)
    assert len(df) == 8 and not df["failed"].any()
    stopped = df[df["stopped"]]
    assert len(stopped) >= 1
    assert (pd.to_numeric(stopped["m:budget"]) < 4).all() and (
        pd.to_numeric(df.loc[df["complete"], "m:budget"]) == 4
    ).all()
    assert pd.to_numeric(stopped["objective"]).notna().all()
    # A trial is stopped at a rung only when it is worse than the best third of those that reached the rung.
    summary = load_yaml(out / "summary.json")
    assert summary["stopped"] == len(stopped) and summary["complete"] == 8 - len(stopped)
    assert summary["best"]["job_id"] in set(df.loc[df["complete"], "job_id"])
    assert len(list((out / "stopper").glob("*.json"))) == 8  # every trial reached rung 0 and left its record
    assert 0 < summary["worker_utilisation"] <= 1 and (out / "utilisation.png").is_file()
    # The stopped trials' loss at their budget is worse than the best complete one's (what halving promises).
    assert stopped["loss"].min() > df.loc[df["complete"], "loss"].min()
    # An ensemble draws its members from the complete trials only.
    complete = df[df["complete"]].sort_values("loss")
    _, _, members = select_members(out, len(complete))
    assert [m["job_id"] for m in members] == complete["job_id"].tolist()
    with pytest.raises(ValueError, match=rf"--top 8: .* has only {len(complete)} complete trials .* stopped early"):
        select_members(out, 8)


def test_future_test_needs_an_empty_last_partition(tmp_path: Path) -> None:
    loss = {"loss_type": "future_test"}
    parts = {"partitions": [{"datasets": ["sigma1_low"]}, {"datasets": ["sigma2_low"]}], "replicas": 2}
    with pytest.raises(ValueError, match=r"kfold\.partitions: loss_type future_test needs"):
        load_search_config(write(tmp_path, {"loss": loss, "kfold": parts}))
    parts["partitions"][-1] = {"datasets": []}
    config, _ = load_search_config(write(tmp_path, {"loss": loss, "kfold": parts}))
    assert config.loss.loss_type == "future_test"


def test_a_future_test_search_scores_the_past_fits_against_the_full_fit(tmp_path: Path) -> None:
    loss = {"loss_type": "future_test"}
    kfold = {"partitions": [{"datasets": ["sigma2_high"]}, {"datasets": ["sigma1_low"]}, {"datasets": []}]}
    out = tmp_path / "run"
    path = write(
        tmp_path, {"loss": loss, "kfold": {**TINY["kfold"], **kfold}, "search": {**TINY["search"], "max_evals": 2}}
    )
    assert main(["--config", str(path), "--out", str(out), "--quiet"]) == 0
    df = read_results(out)
    assert df["complete"].all()
    for _, row in df.iterrows():
        folds = yaml.safe_load(row["m:fold_losses"])
        assert len(folds) == 2 and all(v >= 0 for v in folds)  # the empty (full-data) fold has no loss of its own
        assert row["loss"] == pytest.approx(sum(folds) / 2, rel=1e-5)


def test_vaim_trials_report_after_each_fold_and_stop_there(tmp_path: Path) -> None:
    from hpo.search.trial import evaluate

    card = {
        "solver": "vaim",
        "base": str(ROOT / "configs" / "vaim_x2.yaml"),
        "overrides": {"training.n_train": 600, "training.steps": 20, "training.checkpoint_every": 100000},
        "kfold": {"folds": 3, "replicas": 1, "heldout_points": 32},
        "space": {"model.width": {"values": [32, 64]}},
        "stopper": {"kind": "median"},
    }
    config, runcard = load_search_config(write(tmp_path, card))
    seen: list[tuple[int, float]] = []
    result, folds = evaluate({}, config, runcard, None, lambda b, loss: seen.append((b, loss)) or b == 2)
    assert [b for b, _ in seen] == [1, 2] and len(folds) == 2  # stopped after the second of 3 folds
    assert all(math.isfinite(loss) and loss > 0 for _, loss in seen)
    assert result.loss == pytest.approx(seen[-1][1])
