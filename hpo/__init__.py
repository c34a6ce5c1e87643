"""Hyperparameter optimisation: DeepHyper CBO over MPI, each trial scored by NNPDF-style k-fold losses.

Modules: ``hpo.kfold`` (folds of datasets left out by masks, R replicas each), ``hpo.losses`` (``HyperLoss``:
loss types and statistics), ``hpo.penalties``, ``hpo.config`` (the search runcard and its space), ``hpo.trial``
(DeepHyper's run function), ``hpo.stopping`` (early stopping of bad trials), ``hpo.search``
(``python -m hpo.search``) and ``hpo.ensemble`` (``python -m hpo.ensemble``: the best trials refitted, the
uncertainty split into aleatoric and epistemic parts). Importing this package never initializes MPI: DeepHyper
and mpi4py are imported when a search or an ensemble starts.
"""

from hpo.kfold import FoldResult, KFoldConfig, Partition, fold_masks, run_gan_folds, run_vaim_folds
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
