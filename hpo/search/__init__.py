"""Hyperparameter search: DeepHyper's centralized Bayesian optimisation of an inverse solver.

Layers inside (imports point down): ``space`` (the ``HpProblem``), ``plots`` -> ``results`` (results.csv read back,
best.yaml, summary, report) -> ``stopping`` (early stopping through a file ledger) / ``trial`` (DeepHyper's run
function: k folds of one point, scored) -> ``run`` (the evaluators and the CBO loop) -> ``cli``
(``python -m hpo.search``). Importing this package never initializes MPI.
"""

from hpo.search.results import read_results
from hpo.search.run import EVALUATORS, run_search

__all__ = ["EVALUATORS", "read_results", "run_search"]
