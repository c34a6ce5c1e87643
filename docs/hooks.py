"""mkdocs hook: adds the generated runcard reference to the site (``mkdocs.yml``: ``hooks: [docs/hooks.py]``).

The page is built in memory from the pydantic models by ``docs/runcards.py``; nothing is written into ``docs/``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files


def _runcards() -> ModuleType:
    """``docs/runcards.py`` as a module (``docs/`` is not a package)."""
    name = "qcdgip_docs_runcards"
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("runcards.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add ``reference/runcards.md``, rendered from every runcard model."""
    runcards = _runcards()
    files.append(File.generated(config, runcards.PAGE, content=runcards.render_page()))
    return files
