"""``python -m hpo.search``: the hyperparameter search (:mod:`hpo.search.cli`)."""

from hpo.search.cli import main

raise SystemExit(main())
