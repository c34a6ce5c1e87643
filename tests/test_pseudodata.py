import json

import numpy as np
import pytest
import torch
from scipy import stats

from physics import generate as generate_cli
from physics.config import PhysicsConfig
from physics.datasets import Experiment
from physics.pseudodata import (
    generate_pseudodata,
    load_events,
    poisson_replica_weights,
    poisson_replicas,
    save_events,
)


def test_counts_are_poisson_with_the_expected_mean(experiment_c):
    nu = np.array([d.expected for d in experiment_c.datasets])
    counts = np.array([generate_pseudodata(experiment_c, seed=s).counts for s in range(300)])
    # Pearson dispersion statistic: sum over seeds of (n - nu)^2 / nu ~ chi2(300) per dataset for Poisson.
    dispersion = ((counts - nu) ** 2 / nu).sum(0)
    p = stats.chi2.sf(dispersion, 300)
    assert np.all((p > 1e-3) & (p < 1 - 1e-3)), (dispersion, p)
    z = (counts.mean(0) - nu) / np.sqrt(nu / 300)
    assert np.all(np.abs(z) < 4), z


def test_events_follow_the_truth_and_are_reproducible(experiment_b):
    a = generate_pseudodata(experiment_b, seed=7)
    b = generate_pseudodata(experiment_b, seed=7)
    c = generate_pseudodata(experiment_b, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a.events, b.events))
    assert a.counts != c.counts
    for ds, x in zip(experiment_b.datasets, a.events):
        assert x.min() >= ds.spec.x_min and x.max() <= ds.spec.x_max
    assert a.meta["seed"] == 7 and a.meta["case"] == "B" and a.meta["truth"] == experiment_b.theory.truth


def test_round_trip(tmp_path, experiment_b, data_b):
    save_events(data_b, tmp_path / "d")
    back = load_events(tmp_path / "d", experiment_b)
    assert back.names == data_b.names
    assert all(np.array_equal(x, y) for x, y in zip(back.events, data_b.events))
    assert back.meta["datasets"][0]["observed"] == data_b.counts[0]
    assert not list((tmp_path / "d").glob("*.tmp"))


def _corrupt(directory, how):
    meta = json.loads((directory / "meta.json").read_text())
    target = directory / "sigma1_high.npz"
    if how == "missing_file":
        target.unlink()
    elif how == "garbage":
        target.write_bytes(b"not a zip file at all")
    elif how == "no_x":
        np.savez(target, y=np.ones(3))
    elif how == "shape":
        np.savez(target, x=np.full((meta["datasets"][1]["observed"], 2), 0.5))
    elif how == "nan":
        x = np.load(target)["x"].copy()
        x[3] = np.nan
        np.savez(target, x=x)
    elif how == "outside":
        x = np.load(target)["x"].copy()
        x[0] = 0.2
        np.savez(target, x=x)
    elif how == "count":
        np.savez(target, x=np.load(target)["x"][:-1])
    return target


@pytest.mark.parametrize(
    ("how", "needle"),
    [
        ("missing_file", "missing"),
        ("garbage", "cannot read"),
        ("no_x", "no array 'x'"),
        ("shape", "1-D"),
        ("nan", "NaN"),
        ("outside", "outside the dataset range"),
        ("count", "observed"),
    ],
)
def test_bad_files_name_the_file(tmp_path, experiment_b, data_b, how, needle):
    save_events(data_b, tmp_path)
    target = _corrupt(tmp_path, how)
    with pytest.raises(ValueError) as err:
        load_events(tmp_path, experiment_b)
    assert needle in str(err.value) and str(target) in str(err.value)


def test_bad_meta_and_mismatching_config(tmp_path, experiment_b, data_b):
    with pytest.raises(ValueError, match=r"meta\.json: missing"):
        load_events(tmp_path)
    save_events(data_b, tmp_path)
    other = Experiment(
        PhysicsConfig.model_validate(
            {
                "datasets": [
                    {"name": "sigma1_low", "observable": "sigma1", "x_min": 0.1, "x_max": 0.25},
                    {"name": "sigma1_high", "observable": "sigma1", "x_min": 0.25, "x_max": 1.0},
                    {"name": "sigma2_low", "observable": "sigma2", "x_min": 0.1, "x_max": 0.3},
                    {"name": "sigma2_high", "observable": "sigma2", "x_min": 0.3, "x_max": 1.0},
                ]
            }
        )
    )
    with pytest.raises(ValueError, match="does not match"):
        load_events(tmp_path, other)
    (tmp_path / "meta.json").write_text("{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_events(tmp_path)


def test_poisson_replicas(data_b):
    weights = poisson_replica_weights(data_b.counts, 50, seed=3)
    assert [tuple(w.shape) for w in weights] == [(50, n) for n in data_b.counts]
    w = torch.cat([w.flatten() for w in weights]).numpy()
    n = len(w)
    # Poisson(1): mean 1 and variance 1, each within 5 standard errors.
    assert abs(w.mean() - 1) < 5 / np.sqrt(n)
    assert abs(w.var() - 1) < 5 * np.sqrt(3.0 / n)
    again = poisson_replica_weights(data_b.counts, 5, seed=3)
    assert all(torch.equal(a, b[:5]) for a, b in zip(again, weights))
    reps = poisson_replicas(data_b, 3, seed=3)
    for r, rep in enumerate(reps):
        assert rep.counts == [int(wj[r].sum()) for wj in weights]
        assert rep.meta["replica"] == r


def test_generate_cli(tmp_path, capsys):
    out = tmp_path / "caseC"
    assert generate_cli.main(["--case", "C", "--seed", "5", "--out", str(out)]) == 0
    data = load_events(out)
    assert data.meta["case"] == "C" and data.meta["seed"] == 5
    assert "sigma2_high" in capsys.readouterr().out
    assert generate_cli.main(["--case", "C", "--seed", "6", "--out", str(out)]) == 2
    assert "holds a data set already" in capsys.readouterr().err
    before = (out / "sigma1_low.npz").read_bytes()
    assert generate_cli.main(["--case", "C", "--seed", "5", "--out", str(out), "--resume"]) == 0
    assert "kept" in capsys.readouterr().out and (out / "sigma1_low.npz").read_bytes() == before
    assert generate_cli.main(["--case", "C", "--seed", "6", "--out", str(out), "--resume"]) == 2
    assert generate_cli.main(["--case", "C", "--seed", "6", "--out", str(out), "--overwrite"]) == 0
    assert load_events(out).meta["seed"] == 6
    assert generate_cli.main(["--case", "Q", "--seed", "6", "--out", str(tmp_path / "x")]) == 2
