"""``python -m inverse.closure``: the closure test of the GAN inverse solver (the suite's main job).

The command lives in :mod:`inverse.gan.cli`; this module keeps the documented name.
"""

from inverse.gan.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
