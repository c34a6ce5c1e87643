"""Hyperparameter optimisation: DeepHyper CBO over MPI, each trial scored by NNPDF-style k-fold losses.

Scoring: :mod:`hpo.kfold` (folds of datasets left out by masks, R replicas each; the GAN's in
:mod:`hpo.kfold_gan`, VAIM's in :mod:`hpo.kfold_vaim`), :mod:`hpo.losses` (``HyperLoss``: loss types and
statistics), :mod:`hpo.penalties`, :mod:`hpo.config` (the search runcard and its space). Commands:
:mod:`hpo.search` (``python -m hpo.search``) and :mod:`hpo.ensemble` (``python -m hpo.ensemble``: the best trials
refitted, the uncertainty split into aleatoric and epistemic parts). Importing this package never initializes MPI:
DeepHyper and mpi4py are imported when a search or an ensemble starts.
"""

from hpo.kfold import FoldResult, KFoldConfig, Partition, fold_masks
from hpo.kfold_gan import run_gan_folds
from hpo.kfold_vaim import run_vaim_folds
from hpo.losses import LOSS_TYPES, STATISTICS, FoldPoints, HyperLoss, HyperLossResult
from hpo.penalties import PENALTIES, patience, saturation

__all__ = [
    "LOSS_TYPES",
    "PENALTIES",
    "STATISTICS",
    "FoldPoints",
    "FoldResult",
    "HyperLoss",
    "HyperLossResult",
    "KFoldConfig",
    "Partition",
    "fold_masks",
    "patience",
    "run_gan_folds",
    "run_vaim_folds",
    "saturation",
]
