"""Hyperparameter optimisation: DeepHyper CBO over MPI scored by NNPDF-style k-fold losses, and ensembles.

Filled in by the HPO issue. Importing this package never initializes MPI.
"""

__all__: list[str] = []
