"""``python -m hpo.ensemble``: an ensemble of a search's best trials (:mod:`hpo.ensemble.cli`)."""

from hpo.ensemble.cli import main

raise SystemExit(main())
