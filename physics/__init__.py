"""The forward model of the toy DIS-like problem and its statistical reference.

Layers inside (imports point down): ``config`` -> ``theory`` -> ``quadrature`` -> ``sampling`` / ``mcmc`` /
``detector`` -> ``datasets`` -> ``pseudodata`` -> ``likelihood`` / ``binned`` -> ``bootstrap`` / ``posterior``; the
command-line tools ``generate`` and ``reference`` and the ``plots`` sit on top and are not imported here.
"""

from physics.binned import BinnedView
from physics.bootstrap import fit_bootstrap_mles
from physics.config import (
    DatasetSpec,
    ObservableSpec,
    ParameterSpec,
    PhysicsConfig,
    PosteriorConfig,
    QuadratureConfig,
    ReferenceConfig,
)
from physics.datasets import Dataset, Experiment
from physics.likelihood import ExtendedLikelihood, cramer_rao, fisher_information, fit_mle
from physics.posterior import PosteriorResult, sample_posterior
from physics.pseudodata import EventData, generate_pseudodata, load_events, poisson_replica_weights, save_events
from physics.sampling import EventSampler, InverseCDFSampler
from physics.theory import Theory
from qcdgip._version import __version__
from qcdgip.config import load_config

__all__ = [
    "BinnedView",
    "Dataset",
    "DatasetSpec",
    "EventData",
    "EventSampler",
    "Experiment",
    "ExtendedLikelihood",
    "InverseCDFSampler",
    "ObservableSpec",
    "ParameterSpec",
    "PhysicsConfig",
    "PosteriorConfig",
    "PosteriorResult",
    "QuadratureConfig",
    "ReferenceConfig",
    "Theory",
    "__version__",
    "cramer_rao",
    "fisher_information",
    "fit_bootstrap_mles",
    "fit_mle",
    "generate_pseudodata",
    "load_config",
    "load_events",
    "poisson_replica_weights",
    "sample_posterior",
    "save_events",
]
