"""Sequential refinement: the proposal, simulations as the training set's, and rounds that resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from inverse.gan.refinement import main
from physics.config import PhysicsConfig
from surrogates.config import SurrogateConfig
from surrogates.io import load_surrogate
from surrogates.refine import _earlier, proposal, simulate_sets
from surrogates.train import train_surrogate

ROOT = Path(__file__).resolve().parents[1]


def test_the_proposal_has_the_replicas_mean_and_widened_covariance_inside_the_box():
    physics = PhysicsConfig()
    low, high = np.asarray(physics.low), np.asarray(physics.high)
    rng = np.random.default_rng(0)
    centre = np.array([2.0, -0.5, 3.0, 1.1, -0.5, 4.0])
    replicas = centre + rng.normal(size=(50, 6)) * np.array([0.1, 0.03, 0.1, 0.1, 0.05, 0.1])
    theta = proposal(replicas, low, high, 40_000, 2.0, seed=1).numpy()
    assert theta.shape == (40_000, 6) and theta.dtype == np.float64
    assert ((theta > low) & (theta < high)).all()
    # Far from the edges: the Gaussian's moments, within 5 standard errors of 40,000 draws.
    sd = 2.0 * replicas.std(0, ddof=1)
    assert (np.abs(theta.mean(0) - replicas.mean(0)) < 5 * sd / 200).all()
    np.testing.assert_allclose(theta.std(0), sd, rtol=0.03)
    near_edge = proposal(np.array([[0.05, -0.5, 3.0, 1.1, -0.5, 4.0]] * 2), low, high, 5000, 1.0, seed=2).numpy()
    assert (near_edge[:, 0] > low[0]).all() and np.allclose(near_edge[:, 1:], [-0.5, 3.0, 1.1, -0.5, 4.0], atol=0.01)


@pytest.fixture(scope="module")
def small_flow(tmp_path_factory) -> Path:
    """A small flow trained on the shipped black-box toy simulator."""
    out = tmp_path_factory.mktemp("flow")
    config = SurrogateConfig.model_validate(
        {
            "simulation": {"n_params": 300, "events_per_param": 64, "simulator": "physics.simulators:toy"},
            "flow": {"bins": 8, "depth": 2, "width": 32},
            "training": {"steps": 150, "batch_params": 32, "progress": False, "threads": 1},
            "counts": {"n_params": 300, "adam_steps": 200, "lbfgs_steps": 100},
            "evaluation": {"n_params": 3, "n_samples": 300, "plot_params": 0},
        }
    )
    train_surrogate(config, out, plots=False, progress=False)
    return out / "model.pt"


def test_earlier_rounds_join_with_the_fewest_events_per_set(tmp_path):
    old = tmp_path / "simulations.pt"
    torch.save({"theta": torch.ones(3, 6), "t": torch.zeros(3, 4, 5)}, old)
    theta, t = _earlier(torch.zeros(2, 6, dtype=torch.float64), torch.ones(2, 4, 8), [old, tmp_path / "missing.pt"])
    assert theta.shape == (5, 6) and theta.dtype == torch.float64 and t.shape == (5, 4, 5)
    assert float(t[:2].min()) == 1.0 and float(t[2:].max()) == 0.0


def test_refinement_simulates_where_the_training_set_came_from(small_flow):
    flow, _ = load_surrogate(small_flow)
    theta = torch.tensor([[2.0, -0.5, 3.0, 1.1, -0.5, 4.0]] * 3, dtype=torch.float64)
    t = simulate_sets(flow, theta, seed=5)
    assert t.shape == (3, 4, 64) and t.dtype == torch.float32
    assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    assert torch.equal(t, simulate_sets(flow, theta, seed=5)) and not torch.equal(t, simulate_sets(flow, theta, 6))


def _closure_runcard(tmp_path: Path) -> Path:
    raw = {
        "physics": {"case": "C"},
        "posterior": {"n_chains": 4, "n_warmup": 100, "n_samples": 200},
        "gan": {
            "discriminator": {"depth": 1, "width": 8},
            "training": {"replicas": 3, "steps": 15, "events_per_param": 128, "checkpoint_every": 5, "threads": 1},
        },
        "report": {"bootstrap_mles": True},
    }
    path = tmp_path / "closure.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _args(runcard: Path, flow: Path, out: Path) -> list[str]:
    return ["--config", str(runcard), "--surrogate", str(flow), "--out", str(out), "--quiet", "--rounds", "2",
            "--n-params", "40", "--steps", "30", "--tolerance", "1e-6"]  # fmt: skip


def test_refinement_rounds_resume_after_a_kill_and_end_where_an_unbroken_run_ends(small_flow, tmp_path):
    runcard = _closure_runcard(tmp_path)
    whole = tmp_path / "whole"
    assert main(_args(runcard, small_flow, whole)) == 0
    summary = json.loads((whole / "summary.json").read_text())
    rounds = summary["rounds"]
    assert len(rounds) == 3 and summary["stop"] == "2 refinement rounds done"
    assert [r["simulations"] for r in rounds] == [300, 340, 380]
    assert rounds[1]["refinement"]["n_params"] == 40 and (whole / "round_2" / "model.pt").is_file()
    # Each round fine-tunes on every round's simulations so far (sequential neural likelihood's accumulation).
    assert [r["refinement"]["trained_on_sets"] for r in rounds[1:]] == [40, 80]

    broken = tmp_path / "broken"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "inverse.gan.refinement", *_args(runcard, small_flow, broken)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = broken / "rounds.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and len(json.loads(state.read_text())["rounds"]) >= 1:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    time.sleep(1.0)  # into round 1's simulations or fine-tuning
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(json.loads(state.read_text())["rounds"]) < 3
    assert main(_args(runcard, small_flow, broken)) == 2  # without --resume the rounds are refused
    assert main([*_args(runcard, small_flow, broken), "--resume"]) == 0
    resumed = json.loads((broken / "summary.json").read_text())["rounds"]
    for a, b in zip(rounds, resumed):
        np.testing.assert_allclose(a["estimate_mean"], b["estimate_mean"], rtol=0, atol=1e-9)
