"""Shared fixtures: the default toy, its experiments and a seeded pseudo-data set per case."""

from __future__ import annotations

import pytest

from physics.config import PhysicsConfig
from physics.datasets import Experiment
from physics.pseudodata import generate_pseudodata
from qcdgip import runtime

# The suite follows the same thread policy as the commands: on a machine shared with another busy process, torch's
# default team of threads would wait at every parallel region for the thread that lost its core.
runtime.configure_threads()


@pytest.fixture(scope="session")
def config() -> PhysicsConfig:
    return PhysicsConfig()


@pytest.fixture(scope="session")
def experiment_b(config: PhysicsConfig) -> Experiment:
    return Experiment(config, case="B")


@pytest.fixture(scope="session")
def experiment_c(config: PhysicsConfig) -> Experiment:
    return Experiment(config, case="C")


@pytest.fixture(scope="session")
def data_b(experiment_b: Experiment):
    return generate_pseudodata(experiment_b, seed=1)


@pytest.fixture(scope="session")
def data_c(experiment_c: Experiment):
    return generate_pseudodata(experiment_c, seed=3)
