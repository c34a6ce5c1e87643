"""VAIM, the Variational Autoencoder Inverse Mapper: every parameter set that explains an observation.

Layers inside (imports point down): ``config`` -> ``model`` (:class:`VAIM`, its file format) -> ``training``
(:func:`fit_vaim`); ``simulate`` (pairs from the prior box and the simulator) -> ``analysis`` (modes, forward
consistency) -> ``report`` / ``plots`` -> ``run`` (:func:`run_vaim`) -> ``cli`` (``python -m inverse.vaim``).
"""

from inverse.vaim.config import VAIMConfig
from inverse.vaim.model import VAIM, load_vaim, save_vaim
from inverse.vaim.run import run_vaim
from inverse.vaim.training import fit_vaim

__all__ = ["VAIM", "VAIMConfig", "fit_vaim", "load_vaim", "run_vaim", "save_vaim"]
