"""Ensembles of the best trials: the law-of-total-variance split, the CLI end to end on a real search, bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from hpo.ensemble.cli import main
from hpo.ensemble.split import variance_split
from hpo.search.cli import main as search_main
from qcdgip.config import load_yaml

ROOT = Path(__file__).resolve().parents[1]
SEARCH = {
    "solver": "gan",
    "base": str(ROOT / "configs" / "closure_gan.yaml"),
    "overrides": {
        "gan.training.steps": 30,
        "gan.training.events_per_param": 128,
        "gan.training.checkpoint_every": 10,
        "posterior.n_chains": 4,
        "posterior.n_warmup": 200,
        "posterior.n_samples": 300,
    },
    "kfold": {"replicas": 2, "n_bins": 4},
    "space": {
        # The trust region, not the learning rate, sets the generator's step length: vary it for distinct members.
        "gan.optimizer_g.max_step": {"low": 0.2, "high": 3.0, "log": True},
        "gan.discriminator.width": {"values": [8, 16]},
    },
    "search": {"max_evals": 4, "n_initial_points": 4, "torch_threads": 1, "seed": 1},
}


@pytest.fixture(scope="module")
def search_dir(tmp_path_factory) -> Path:
    """A real finished search (4 trials, serial)."""
    root = tmp_path_factory.mktemp("search")
    path = root / "search.yaml"
    path.write_text(yaml.safe_dump(SEARCH))
    assert search_main(["--config", str(path), "--out", str(root / "run"), "--quiet"]) == 0
    return root / "run"


def test_split_is_the_law_of_total_variance_exactly() -> None:
    """aleatoric + epistemic = the variance of all K x R estimates pooled, for the diagonal and the covariance."""
    rng = np.random.default_rng(0)
    est = rng.normal(size=(5, 7, 3)) * [1.0, 2.0, 0.5] + rng.normal(size=(5, 1, 3))
    s = variance_split(est)
    pooled = est.reshape(-1, 3)
    np.testing.assert_allclose(s["total"], pooled.var(0), rtol=1e-12)
    np.testing.assert_allclose(s["total_cov"], np.cov(pooled, rowvar=False, ddof=0), rtol=1e-12)
    np.testing.assert_allclose(np.diag(s["aleatoric_cov"]), s["aleatoric"], rtol=1e-12)
    np.testing.assert_allclose(np.diag(s["epistemic_cov"]), s["epistemic"], rtol=1e-12)
    np.testing.assert_allclose(s["mean"], pooled.mean(0), rtol=1e-12)
    # Identical members: no epistemic part at all.
    same = variance_split(np.repeat(est[:1], 4, axis=0))
    assert np.all(same["epistemic"] < 1e-24)


def test_split_recovers_known_components() -> None:
    """Members mu_m ~ N(0, tau^2), replicas ~ N(mu_m, s^2). With the mixture's normalisation
    E[aleatoric] = s^2 (R-1)/R and E[epistemic] = (tau^2 + s^2/R)(K-1)/K; each within 4 of its own sd
    (chi-square variances: sqrt(2(R-1)/K) s^2/R and sqrt(2(K-1))/K (tau^2 + s^2/R))."""
    rng = np.random.default_rng(1)
    k, r = 2000, 10
    tau, s = np.array([0.3, 1.0, 0.0]), np.array([1.0, 0.5, 2.0])
    mu = rng.normal(size=(k, 1, 3)) * tau
    est = mu + rng.normal(size=(k, r, 3)) * s
    split = variance_split(est)
    ale_mean, ale_sd = s**2 * (r - 1) / r, np.sqrt(2 * (r - 1) / k) * s**2 / r
    ep_mean = (tau**2 + s**2 / r) * (k - 1) / k
    ep_sd = np.sqrt(2 * (k - 1)) / k * (tau**2 + s**2 / r)
    assert np.all(np.abs(split["aleatoric"] - ale_mean) < 4 * ale_sd)
    assert np.all(np.abs(split["epistemic"] - ep_mean) < 4 * ep_sd)
    # With tau = 0 the epistemic part is the Monte Carlo floor of the member means.
    assert abs(split["epistemic"][2] - split["epistemic_floor"][2] * r / (r - 1)) < 4 * ep_sd[2]


def test_ensemble_cli_end_to_end_and_resume(search_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ens"
    args = ["--search", str(search_dir), "--top", "3", "--out", str(out), "--replicas", "4", "--quiet"]
    assert main(args) == 0
    s = load_yaml(out / "ensemble.json")
    df = pd.read_csv(search_dir / "results.csv")
    best3 = df.assign(loss=-pd.to_numeric(df["objective"])).sort_values("loss")["job_id"].head(3).tolist()
    assert [m["job_id"] for m in s["members"]] == best3
    est = np.stack([np.load(out / "members" / f"job-{j}" / "estimates.npy") for j in best3])
    assert est.shape == (3, 4, 6)
    np.testing.assert_allclose(s["total"], est.reshape(-1, 6).var(0), rtol=1e-9)
    np.testing.assert_allclose(np.asarray(s["aleatoric"]) + np.asarray(s["epistemic"]), s["total"], rtol=1e-12)
    c = s["closure"]
    post_sd = np.asarray(c["posterior_std"])
    np.testing.assert_allclose(c["pull"], (np.asarray(s["mean"]) - s["truth"]) / post_sd, rtol=1e-9)
    assert np.all(np.asarray(c["std_ratio_total"]) >= np.asarray(c["std_ratio_aleatoric"]))
    assert isinstance(c["epistemic_improves_coverage"], bool)
    for name in ("report.md", "contributions.png", "pdfs.png", "reference.npz", "ensemble.yaml"):
        assert (out / name).is_file(), name
    # A killed run: one member finished, one never did. The rerun refits only the missing one.
    keep = out / "members" / f"job-{best3[0]}" / "estimates.npy"
    stamp = keep.stat().st_mtime_ns
    (out / "members" / f"job-{best3[1]}" / "estimates.npy").unlink()
    assert main(args) == 2  # a second start needs --resume
    assert main([*args, "--resume"]) == 0
    assert keep.stat().st_mtime_ns == stamp
    np.testing.assert_allclose(load_yaml(out / "ensemble.json")["mean"], s["mean"], rtol=1e-9)
    # Another selection in the same directory is refused, --overwrite starts over.
    assert main([*args[:-3], "--replicas", "3", "--quiet", "--resume"]) == 2
    assert main([*args[:-3], "--replicas", "3", "--quiet", "--reference", "off", "--overwrite"]) == 0
    assert "closure" not in load_yaml(out / "ensemble.json")


def test_bad_input_is_named(search_dir: Path, tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "ens")
    assert main(["--search", str(search_dir), "--top", "9", "--out", out]) == 2
    assert "--top 9" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--search", str(empty), "--top", "2", "--out", out]) == 2
    assert "no results.csv" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.yaml", "base.yaml"):
        (broken / name).write_text((search_dir / name).read_text())
    pd.read_csv(search_dir / "results.csv").drop(columns=["p:gan.discriminator.width"]).to_csv(
        broken / "results.csv", index=False
    )
    assert main(["--search", str(broken), "--top", "2", "--out", out]) == 2
    assert "missing column(s) ['p:gan.discriminator.width']" in capsys.readouterr().err
    (broken / "config.yaml").unlink()
    pd.read_csv(search_dir / "results.csv").to_csv(broken / "results.csv", index=False)
    assert main(["--search", str(broken), "--top", "2", "--out", out]) == 2
    assert "config.yaml is missing" in capsys.readouterr().err
    assert main(["--search", str(search_dir), "--top", "2", "--out", out, "--replicas", "1"]) == 2
    assert "replicas: Input should be greater than or equal to 2" in capsys.readouterr().err


@pytest.mark.mpi
def test_ensemble_refits_over_mpi(search_dir: Path, tmp_path: Path) -> None:
    """The refits on DeepHyper's MPI evaluator (re-launched under mpiexec) equal the serial ones.

    Up to float32 rounding: a serial refit uses both cores' threads, an MPI worker one, and the sums differ in the
    last bits."""
    serial, mpi = tmp_path / "serial", tmp_path / "mpi"
    common = ["--search", str(search_dir), "--top", "2", "--replicas", "3", "--reference", "off", "--quiet"]
    assert main([*common, "--out", str(serial)]) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "hpo.ensemble", *common, "--out", str(mpi), "--evaluator", "mpi", "--workers", "2"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "launching 2 MPI workers + 1 manager" in proc.stdout
    a, b = load_yaml(serial / "ensemble.json"), load_yaml(mpi / "ensemble.json")
    np.testing.assert_allclose(a["mean"], b["mean"], rtol=1e-5)
    np.testing.assert_allclose(a["total"], b["total"], rtol=1e-4)
