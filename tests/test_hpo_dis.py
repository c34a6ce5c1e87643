"""The hyperparameter search on inclusive DIS: a real DeepHyper search whose folds leave out Q^2 windows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from hpo.kfold import KFoldConfig
from hpo.kfold_gan import _Folds
from inverse.gan.dis.config import DISClosureConfig
from physics.dis import DISConfig, DISExperiment
from physics.dis.pseudodata import generate_dis_events
from physics.pseudodata import EventData
from qcdgip.config import load_yaml, parse_config

ROOT = Path(__file__).resolve().parents[1]


def test_dis_folds_hold_out_q2_windows_and_score_the_truth_at_chi2_one():
    experiment = DISExperiment(DISConfig())
    events = generate_dis_events(experiment, seed=5)
    data = EventData(list(experiment.names), [e.numpy() for e in events], {"seed": 5})
    folds = _Folds(experiment, data, KFoldConfig(replicas=2, dis_bins=(2, 4)), np.asarray(experiment.config.truth))
    assert [p.datasets for p in folds.parts] == [[n] for n in experiment.names]
    assert folds.masks.tolist() == (1 - torch.eye(4, dtype=torch.float64)).tolist()
    chi2, points = 0.0, 0
    for k in range(len(folds.parts)):
        held = folds.held(k, [np.tile(p, (2, 1)) for p in folds.truth_pred], slice(0, 2), None)
        assert held["obs"].shape == (8,) and held["obs"].sum() == len(events[k])
        chi2 += float((((held["obs"] - held["law"]) ** 2) / held["law"]).sum())
        points += held["obs"].size
    # The truth's predictions fit the held-out counts: Pearson chi2 of 32 Poisson bins (p > 0.001).
    assert stats.chi2.sf(chi2, points) > 1e-3, chi2


@pytest.mark.slow
def test_a_dis_search_over_q2_window_folds_finishes_and_writes_a_dis_runcard(tmp_path):
    out = tmp_path / "hpo-dis"
    cmd = [sys.executable, "-m", "hpo.search", "--config", "configs/hpo_dis.yaml", "--out", str(out),
           "--evaluator", "serial", "--quiet", "--set", "search.max_evals=2"]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, check=True, timeout=900)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["solver"] == "gan_dis" and summary["trials"] == 2 and summary["failed"] == 0
    df = pd.read_csv(out / "results.csv")
    assert all(len(json.loads(v)) == 4 for v in df["m:fold_losses"])  # one loss per held-out Q^2 window
    assert np.all(np.isfinite(df["objective"].astype(float)))
    best = parse_config(DISClosureConfig, load_yaml(out / "best.yaml"), "best.yaml")
    assert best.gan.discriminator.degree in (2, 3) and best.gan.optimizer_d.name == "newton"
