"""``python -m inverse.vaim``: the VAIM command (:mod:`inverse.vaim.cli`)."""

from inverse.vaim.cli import main

raise SystemExit(main())
