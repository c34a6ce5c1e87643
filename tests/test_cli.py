"""One convention for every command: the shared options, --set for any runcard field, one exit-code table.

Exit codes (qcdgip.errors): 0 done, 2 bad input (the field named, nothing written), 3 a fit diverged (the
checkpoint kept), 130 interrupted (the checkpoint kept, --resume continues), 1 failed otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hpo.ensemble.cli import main as ensemble_main
from hpo.search.cli import build_parser as search_parser
from hpo.search.cli import main as search_main
from inverse.gan.cli import build_parser as closure_parser
from inverse.gan.cli import main as closure_main
from inverse.gan.cli import resolve_config
from inverse.gan.dis.cli import build_parser as dis_parser
from inverse.gan.dis.cli import main as closure_dis_main
from inverse.gan.refinement import main as refine_main
from inverse.vaim.cli import main as vaim_main
from physics.generate import main as generate_main
from physics.reference import main as reference_main
from qcdgip.cli import joined_values, truth_values
from qcdgip.config import parse_assignments
from qcdgip.console import COMMANDS
from qcdgip.console import main as console_main
from qcdgip.errors import EXIT_CODES
from surrogates.train import main as surrogate_main

ROOT = Path(__file__).resolve().parents[1]
COMMON = ("--config", "--out", "--resume", "--overwrite", "--quiet", "--no-plots", "--set", "--threads")
MAINS = {
    "closure": closure_main,
    "reference": reference_main,
    "generate": generate_main,
    "surrogate": surrogate_main,
    "refine": refine_main,
    "vaim": vaim_main,
    "search": search_main,
    "ensemble": ensemble_main,
    "closure-dis": closure_dis_main,
}


def tiny_closure(tmp_path: Path, **training) -> Path:
    raw = {
        "physics": {"case": "C"},
        "posterior": {"n_chains": 4, "n_warmup": 200, "n_samples": 300},
        "report": {"bootstrap_mles": False},
        "gan": {
            "discriminator": {"depth": 1, "width": 8},
            "training": {"replicas": 3, "steps": 20, "events_per_param": 256, "checkpoint_every": 10, **training},
        },
    }
    path = tmp_path / "closure.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("name", sorted(MAINS))
def test_every_command_takes_the_shared_options(name, capsys):
    with pytest.raises(SystemExit) as stop:
        MAINS[name](["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    missing = [option for option in COMMON if option not in text]
    assert not missing, f"{name}: {missing}"
    assert "130 interrupted" in " ".join(text.split())


def test_restart_is_an_alias_of_resume_in_the_search():
    args = search_parser().parse_args(["--config", "x.yaml", "--restart"])
    assert args.resume is True


def test_the_console_script_lists_and_dispatches_every_command(capsys):
    assert console_main([]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in COMMANDS) and set(COMMANDS) == set(MAINS)
    assert console_main(["nonsense"]) == 2
    with pytest.raises(SystemExit) as stop:
        console_main(["closure", "--help"])
    assert stop.value.code == 0 and "--truth" in capsys.readouterr().out


def test_a_truth_that_starts_with_a_minus_sign_is_read_as_its_value(tmp_path):
    argv = ["--config", str(tiny_closure(tmp_path)), "--truth", "-2,-0.4,3,1,-0.5,4"]
    args = closure_parser().parse_args(joined_values(argv))
    assert args.truth == "-2,-0.4,3,1,-0.5,4"
    assert joined_values(["--truth", "2,3", "--steps", "-1"]) == ["--truth", "2,3", "--steps", "-1"]
    dis = dis_parser().parse_args(joined_values(["--truth", "-.3,3,0.1,-1.1,-0.8"]))
    assert truth_values(dis.truth, list("abcde"))["physics.parameters.0.truth"] == -0.3


def test_set_reads_yaml_values_and_reaches_any_field_lists_included(tmp_path):
    assert parse_assignments(["a.b=3", "c=[1, 2]", "d=null", "e=x"]) == {"a.b": 3, "c": [1, 2], "d": None, "e": "x"}
    args = closure_parser().parse_args(
        [
            *("--config", str(tiny_closure(tmp_path))),
            *("--set", "gan.training.steps=7", "--set", "physics.parameters.1.truth=-0.25"),
            *("--set", "physics.detector.resolution=0.08", "--steps", "9"),
        ]
    )
    config = resolve_config(args)
    # --set comes after the shortcut options, so it wins over --steps.
    assert config.gan.training.steps == 7
    assert config.physics.parameters[1].truth == -0.25 and config.physics.parameters[0].truth == 2.1875
    assert config.physics.detector is not None and config.physics.detector.resolution == 0.08


@pytest.mark.parametrize(
    ("name", "argv", "named"),
    [
        ("closure", ["--set", "gan.training.stepz=3"], "gan.training has no field 'stepz'"),
        ("closure", ["--set", "gan.training.steps=-3"], "--set: gan.training.steps"),
        ("closure", ["--set", "gan.training"], "--set 'gan.training'"),
        ("reference", ["--set", "posterior.n_chains=1"], "--set: posterior.n_chains"),
        ("generate", ["--set", "physics.cass=C"], "physics has no field 'cass'"),
        ("surrogate", ["--set", "kind=glow"], "--set: kind"),
        ("vaim", ["--config", str(ROOT / "configs/vaim_x2.yaml"), "--set", "sampling.n_draw=4"], "'n_draw'"),
        ("search", ["--config", str(ROOT / "configs/hpo_quick.yaml"), "--set", "search.max_evals=0"], "max_evals"),
        ("ensemble", ["--search", "nowhere", "--set", "top=0"], "--set: top"),
    ],
)
def test_a_bad_set_is_refused_with_the_field_named_and_nothing_written(name, argv, named, tmp_path, capsys):
    out = tmp_path / "run"
    assert MAINS[name]([*argv, "--out", str(out), "--quiet"]) == 2
    assert named in capsys.readouterr().err
    assert not out.exists()


def test_exit_codes_are_documented_in_one_table():
    assert set(EXIT_CODES) == {0, 1, 2, 3, 130}
    page = (ROOT / "docs" / "cli.md").read_text()
    for code in EXIT_CODES:
        assert f"| {code} " in page or f"| `{code}` " in page, code


def test_a_diverging_fit_exits_3_and_keeps_the_last_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    # Least squares with a discriminator learning rate of 1e10: its outputs overflow float32 within a few steps.
    sets = ["--set", "gan.loss.kind=lsgan", "--set", "gan.optimizer_d.lr=1e10", "--set", "gan.training.steps=40"]
    status = closure_main(["--config", str(tiny_closure(tmp_path, checkpoint_every=1)), "--out", str(out), *sets])
    err = capsys.readouterr().err
    assert status == 3, err
    assert "diverged" in err and "not finite at step" in err
    assert (out / "checkpoints" / "last.ckpt").is_file() and not (out / "summary.json").exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_fit_exits_130_and_resumes_to_the_end(signum, tmp_path):
    config = tiny_closure(tmp_path, steps=400, checkpoint_every=5)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "inverse.closure", "--config", str(config), "--out", str(out), "--quiet"]
    # A shell's background job starts with SIGINT ignored, and Python keeps an ignored SIGINT ignored: give the run
    # the default disposition, as a foreground command has, so that the test holds wherever pytest was started.
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 240
    while not (out / "checkpoints" / "last.ckpt").is_file() and time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "--resume" in err
    assert (out / "checkpoints" / "last.ckpt").is_file() and not (out / "summary.json").exists()
    done = subprocess.run([*cmd, "--resume"], cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "summary.json").read_text())["steps"] == 400


def test_default_out_is_runs_and_the_config_stem(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tiny_closure(tmp_path)
    renamed = config.with_name("tiny.yaml")
    config.rename(renamed)
    assert closure_main(["--config", str(renamed), "--quiet", "--no-plots", "--set", "gan.training.steps=2"]) == 0
    assert (tmp_path / "runs" / "tiny" / "summary.json").is_file()
    summary = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())
    assert summary["runtime"]["threads"] >= 1 and summary["runtime"]["cores"] == len(os.sched_getaffinity(0))
