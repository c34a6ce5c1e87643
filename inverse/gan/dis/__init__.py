"""The GAN closure test on inclusive DIS: (x, Q^2) events, the exact reference, LHAPDF sets of the replicas.

``python -m inverse.gan.dis --config configs/closure_dis.yaml`` (``make closure-dis``).
"""

from inverse.gan.dis.config import DISClosureConfig
from inverse.gan.dis.run import run_dis_closure

__all__ = ["DISClosureConfig", "run_dis_closure"]
