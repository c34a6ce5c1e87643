"""The benchmark scripts run end to end on tiny settings and print the JSON they promise (their numbers are
measurements, reported in docs/benchmarks.md, not asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> list[dict]:
    out = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, check=True
    ).stdout
    rows = []
    for line in out.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # part of an indented summary or a progress line
    return rows


@pytest.mark.slow
def test_losses_benchmark_prints_runs_and_contracts(tmp_path):
    rows = _run(
        "benchmarks/losses.py",
        *("--losses", "density_ratio", "--optimizers", "natural", "--replicas", "1", "--steps", "4"),
        *("--contract-d-steps", "20", "--out", str(tmp_path)),
    )
    final = rows[-1]
    assert [r["loss"] for r in final["runs"]] == ["density_ratio"]
    assert set(final["contract"]) == {"density_ratio@1sd", "density_ratio@3sd"}
    assert -1.0 <= final["contract"]["density_ratio@3sd"]["cosine"] <= 1.0
    assert (tmp_path / "learning_curves.png").is_file() and (tmp_path / "losses.json").is_file()


@pytest.mark.slow
def test_replicas_benchmark_compares_vectorized_and_loop():
    rows = _run("benchmarks/replicas.py", "--replicas", "1", "2", "--steps", "3")
    by_r = {r["replicas"]: r for r in rows if "replicas" in r and "results" not in r}
    assert set(by_r) == {1, 2} and by_r[2]["loop_step_s"] > 0 and by_r[2]["per_replica_vs_r1"] > 0


@pytest.mark.slow
def test_samplers_benchmark_measures_every_sampler_with_and_without_the_detector(tmp_path):
    rows = _run(
        "benchmarks/samplers.py",
        *("--events", "200", "--batches", "1", "2", "--repeats", "3", "--flow", str(tmp_path / "absent.pt")),
    )
    measured = [r for r in rows if "events_per_s" in r]
    assert {(r["sampler"], r["detector"], r["batch"]) for r in measured} == {
        (s, d, b) for s in ("exact", "mcmc") for d in (False, True) for b in (1, 2)
    }
    assert all(r["events_per_s"] > 0 and r["grad_var_per_event"] > 0 for r in measured)
    assert any(r.get("sampler") == "flow" and "skipped" in r for r in rows)
    assert rows[-1]["benchmark"] == "samplers"


@pytest.mark.slow
def test_hpo_benchmark_compares_the_search_with_and_without_its_stopper():
    out = subprocess.run(
        [sys.executable, "benchmarks/hpo.py", "--workers", "--skip-kfold", "--budget", "15", "--seeds", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout
    result = json.loads(out)
    run = result["stopper"]["runs"][0]
    for kind in ("none", "successive_halving"):
        assert run[kind]["trials"] == run[kind]["complete"] + run[kind]["stopped"] + run[kind]["failed"]
        assert 0 < run[kind]["worker_utilisation"] <= 1
    assert run["none"]["stopped"] == 0
