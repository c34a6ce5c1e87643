"""Ensembles of a search's best trials: refitted on all data, the uncertainty split into aleatoric and epistemic.

Layers inside (imports point down): ``config`` (the ensemble runcard), ``split`` (law of total variance),
``plots`` / ``report`` -> ``members`` (selection and refits on DeepHyper's evaluators) -> ``combine`` (the split,
the PDF bands, the posterior comparison) -> ``cli`` (``python -m hpo.ensemble``).
"""

from hpo.ensemble.config import EnsembleConfig
from hpo.ensemble.split import closure_comparison, variance_split

__all__ = ["EnsembleConfig", "closure_comparison", "variance_split"]
