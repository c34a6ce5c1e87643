import json

import numpy as np
import yaml

from physics import reference


def tiny_config(tmp_path, seed=4):
    path = tmp_path / "ref.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "physics": {"case": "C"},
                "data": {"seed": seed, "n_bins": 5},
                "posterior": {"n_chains": 4, "n_warmup": 300, "n_samples": 300, "seed": 1},
            }
        )
    )
    return path


def test_main_job_writes_a_complete_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    cfg = tiny_config(tmp_path)
    assert reference.main(["--config", str(cfg), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Cramér–Rao" in printed and "MCMC reference posterior" in printed
    for name in (
        "summary.json",
        "config.yaml",
        "run.log",
        "posterior_samples.npz",
        "data.png",
        "posterior.png",
        "pdfs.png",
        "data/meta.json",
    ):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["case"] == "C" and summary["seed"] == 4
    assert set(summary["crlb"]) == {"A", "B", "C"}
    assert abs(summary["crlb"]["A"]["sd"]["Nu"] - 0.084) < 5e-4
    post = summary["posterior"]["parameters"]
    samples = np.load(out / "posterior_samples.npz")["samples"]
    assert samples.shape == (300, 4, 6)
    assert abs(post["Nu"]["mean"] - samples[..., 0].mean()) < 1e-9
    # Resolved config is reloadable and equal to what ran.
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["posterior"]["n_samples"] == 300 and resolved["physics"]["case"] == "C"

    # A second start needs --resume (which reuses the data); another seed into the same directory is refused, the
    # data untouched.
    before = (out / "data" / "sigma1_low.npz").read_bytes()
    config_before = (out / "config.yaml").read_text()
    assert reference.main(["--config", str(cfg), "--out", str(out), "--no-plots"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert reference.main(["--config", str(cfg), "--out", str(out), "--no-plots", "--resume"]) == 0
    assert "reused" in capsys.readouterr().out
    assert reference.main(["--config", str(cfg), "--out", str(out), "--seed", "9", "--quiet", "--resume"]) == 2
    assert "differing fields: data.seed" in capsys.readouterr().err
    assert (out / "data" / "sigma1_low.npz").read_bytes() == before
    assert (out / "config.yaml").read_text() == config_before


def test_bad_config_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("posterior:\n  n_chains: 1\n")
    assert reference.main(["--config", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "posterior.n_chains" in err and str(path) in err
