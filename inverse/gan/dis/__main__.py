"""``python -m inverse.gan.dis``: the GAN closure test on inclusive DIS."""

from inverse.gan.dis.cli import main

raise SystemExit(main())
