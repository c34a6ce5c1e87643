"""``python -m inverse.gan``: the GAN closure test (the same command as ``python -m inverse.closure``)."""

from inverse.gan.cli import main

raise SystemExit(main())
