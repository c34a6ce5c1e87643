"""The closure command: a tiny case-A fit moves every parameter toward the truth; the run directory, resume and
the errors of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from inverse.gan.cli import main
from inverse.gan.config import ClosureConfig, GANConfig
from inverse.gan.model import InverseGAN
from inverse.gan.training import fit_gan
from physics.datasets import Experiment
from physics.likelihood import cramer_rao, fisher_information
from physics.pseudodata import generate_pseudodata
from qcdgip.config import parse_config


def test_tiny_case_a_closure_moves_every_parameter_toward_the_truth(config):
    experiment = Experiment(config, case="A")
    data = generate_pseudodata(experiment, seed=5)
    gan = GANConfig.model_validate(
        {
            "generator": {"init_spread": 0.0},  # start at the box centre, away from the truth in every parameter
            "discriminator": {"depth": 1, "width": 8},
            "training": {
                "replicas": 2,
                "steps": 300,
                "events_per_param": 1024,
                "data_batch": 4096,
                "polyak": 0.2,
                "progress": False,
            },
            "optimizer_g": {"name": "adam", "lr": 0.05, "betas": [0.5, 0.9]},
        }
    )
    model = InverseGAN(gan, experiment, data)
    start = model.current_theta().numpy().mean(0)
    fit_gan(model)
    end = model.estimates().numpy().mean(0)
    truth = np.asarray(config.truth)
    assert np.all(np.abs(end - truth) < np.abs(start - truth)), (start, end, truth)
    # ... and lands within the statistical reach of the data (4 Cramér–Rao sd, from the Fisher information).
    sd = cramer_rao(fisher_information(experiment, torch.tensor(truth[None])))[0][0].numpy()
    assert np.all(np.abs(end - truth) < 4 * sd), (end - truth) / sd


def _write_config(tmp_path, **gan_training):
    raw = {
        "physics": {"case": "C"},
        "posterior": {"n_chains": 4, "n_warmup": 200, "n_samples": 300},
        "gan": {
            "discriminator": {"depth": 1, "width": 8},
            "training": {"replicas": 3, "steps": 20, "events_per_param": 256, "checkpoint_every": 10, **gan_training},
        },
        "report": {"bootstrap_mles": True},
    }
    path = tmp_path / "closure.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_closure_command_writes_the_run_and_refuses_to_mix_runs(tmp_path, capsys):
    cfg = _write_config(tmp_path)
    out = tmp_path / "run"
    assert main(["--config", str(cfg), "--out", str(out), "--quiet", "--seed", "3"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in (
        "params",
        "truth",
        "estimate_mean",
        "estimate_std",
        "posterior_mean",
        "posterior_std",
        "pull",
        "std_ratio",
        "replicas",
        "steps",
        "wall_s",
        "case",
        "seed",
    ):
        assert key in summary
    assert summary["replicas"] == 3 and summary["steps"] == 20 and summary["case"] == "C" and summary["seed"] == 3
    pull = (np.array(summary["estimate_mean"]) - summary["truth"]) / np.array(summary["posterior_std"])
    assert np.allclose(pull, summary["pull"])
    for name in ("report.md", "pdfs.png", "data.png", "replicas.png", "training.png", "run.log", "config.yaml"):
        assert (out / name).is_file(), name
    assert np.array(summary["bootstrap_mles"]).shape == (3, 6)

    # A second start without --resume must not touch the run; --resume with another config is refused too.
    before = (out / "summary.json").read_text()
    assert main(["--config", str(cfg), "--out", str(out), "--quiet", "--seed", "3"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["--config", str(cfg), "--out", str(out), "--quiet", "--seed", "4", "--resume"]) == 2
    assert "data.seed" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == before
    # Resuming a finished run re-evaluates it without training again.
    assert main(["--config", str(cfg), "--out", str(out), "--quiet", "--seed", "3", "--resume"]) == 0
    again = json.loads((out / "summary.json").read_text())
    assert np.allclose(again["estimate_mean"], summary["estimate_mean"])

    # Coverage can be added to a finished run; a larger K later fits only the new data sets.
    assert main(["--config", str(cfg), "--out", str(out), "--quiet", "--seed", "3", "--resume", "--coverage", "2"]) == 0
    first = (out / "coverage" / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["seed"] for line in first] == [4, 5]
    assert main(["--config", str(cfg), "--out", str(out), "--quiet", "--seed", "3", "--resume", "--coverage", "3"]) == 0
    rows = (out / "coverage" / "results.jsonl").read_text().splitlines()
    assert rows[:2] == first and len(rows) == 3
    cov = json.loads((out / "summary.json").read_text())["coverage"]
    assert cov["n_sets"] == 3 and (out / "coverage" / "coverage.png").is_file()
    hits = np.array([json.loads(line)["in68"] for line in rows], dtype=float)
    assert np.allclose(cov["levels"]["68"]["per_parameter"], hits.mean(0))
    assert "Coverage over 3 pseudo-data sets" in (out / "report.md").read_text()


def test_coverage_summary_counts_the_truths_inside_the_intervals():
    from inverse.gan.coverage import summarize_coverage

    rows = [
        {"in68": [True, False], "in95": [True, True], "fit_s": 1.0},
        {"in68": [True, True], "in95": [True, True], "fit_s": 3.0},
        {"in68": [False, False], "in95": [True, False], "fit_s": 2.0},
        {"in68": [True, True], "in95": [True, True], "fit_s": 2.0},
    ]
    s = summarize_coverage(rows, ["a", "b"], {"68": (0.63, 0.73), "95": (0.93, 0.97)})
    assert s["levels"]["68"]["per_parameter"] == [0.75, 0.5]
    assert s["levels"]["68"]["pooled"] == 0.625 and not s["levels"]["68"]["pooled_in_target"]
    assert s["levels"]["95"]["pooled"] == 0.875 and not s["levels"]["95"]["pooled_in_target"]
    assert s["levels"]["68"]["per_parameter_sd"] == pytest.approx(np.sqrt(0.68 * 0.32 / 4))
    assert s["fit_s_median"] == 2.0


def test_bad_input_is_named(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"gan": {"training": {"replicas": 3, "stepz": 4}}}))
    assert main(["--config", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "gan.training.stepz" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "x"), "--truth", "2,-0.5,3,1,-0.5,7"]) == 2
    assert "outside its box" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "x"), "--truth", "2,-0.5"]) == 2
    assert "--truth: need 6 values" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"gan\.loss\.kind"):
        parse_config(ClosureConfig, {"gan": {"loss": {"kind": "hinge"}}}, "x.yaml")
    assert not (tmp_path / "x" / "summary.json").exists()


@pytest.mark.slow
def test_closure_through_the_detector_with_mcmc_events_meets_the_targets(tmp_path):
    """The whole forward workflow (MCMC true events, detector, folded posterior) from the shipped runcard, case B,
    R = 10 replicas; shorter chains and fewer steps than the runcard so that it fits in CI (~2-3 minutes)."""
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "closure_mcmc.yaml").read_text())
    raw["posterior"].update(n_chains=8, n_warmup=400, n_samples=600)
    raw["gan"]["training"].update(replicas=10, steps=200, events_per_param=1024)
    cfg = tmp_path / "mcmc.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    assert main(["--config", str(cfg), "--out", str(out), "--quiet", "--no-plots"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["detector"]["resolution"] == 0.05 and s["sampler"]["kind"] == "mcmc" and s["replicas"] == 10
    assert s["targets_met"]["abs_pull_below_3"], s["pull"]
    assert s["targets_met"]["std_ratio_in_0.5_2"], s["std_ratio"]
    assert 0.3 < s["mcmc_last_draw"]["acceptance_mean"] < 0.6
    # Judged against the folded posterior: its widths follow the folded Cramér-Rao bound (0.83-1.09 with the full
    # runcard), and on average exceed the perfect detector's bound (1.01-1.42 there).
    truth, sd = torch.tensor([s["truth"]], dtype=torch.float64), torch.tensor(s["posterior_std"])
    cfg_folded = parse_config(ClosureConfig, raw, "mcmc.yaml").physics
    folded = sd / cramer_rao(fisher_information(Experiment(cfg_folded), truth))[0][0]
    plain = sd / cramer_rao(fisher_information(Experiment(ClosureConfig().physics), truth))[0][0]
    assert bool(((folded > 0.7) & (folded < 1.4)).all()), folded
    assert float(torch.log(plain).mean().exp()) > 1.05, plain
