"""Single source of the suite's version (read by pyproject.toml and written into every run directory)."""

__version__ = "0.1.0"
