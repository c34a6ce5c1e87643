"""The documentation: the generated runcard reference, links, the README's size, and the site's strict build."""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CODE_PACKAGES = ("physics", "surrogates", "inverse", "hpo", "qcdgip")
README_MAX_LINES = 250


def _runcards() -> types.ModuleType:
    name = "qcdgip_docs_runcards"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, DOCS / "runcards.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# --- the generated runcard reference -------------------------------------------------------------------------


def _held_models(annotation: typing.Any) -> list[tuple[str, type[BaseModel]]]:
    """(separator, model) for every model a field holds: itself ("."), as list items ("[]."), as mapping values."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return [(".", annotation)]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return [held for arg in args for held in _held_models(arg)]
    if origin in (list, tuple, set, frozenset):
        return [("[].", m) for arg in args if arg is not Ellipsis for sep, m in _held_models(arg) if sep == "."]
    if origin is dict and len(args) == 2:
        return [(".<key>.", m) for sep, m in _held_models(args[1]) if sep == "."]
    return []


def _expected(model: type[BaseModel], prefix: str = "") -> dict[str, bool]:
    """Every field path under ``model`` -> whether it has a description (its own, or its section model's docstring)."""
    out: dict[str, bool] = {}
    for name, info in model.model_fields.items():
        path = prefix + name
        held = _held_models(info.annotation)
        documented = bool((info.description or "").strip()) or bool(held and (held[0][1].__doc__ or "").strip())
        out.setdefault(path, documented)
        for sep, sub in held:
            for key, value in _expected(sub, path + sep).items():
                out.setdefault(key, value)
    return out


def _page_sections(page: str) -> dict[str, dict[str, str]]:
    """Runcard title -> {field path: description cell} from the generated page."""
    sections: dict[str, dict[str, str]] = {}
    current = None
    for line in page.splitlines():
        if line.startswith("## "):
            current = sections.setdefault(line[3:].strip(), {})
        elif current is not None and line.startswith("| `"):
            path = line.split("`")[1]
            cells = re.split(r"(?<!\\)\|", re.sub(r"`[^`]*`", "``", line))
            current[path] = cells[-2].strip()
    return sections


@pytest.fixture(scope="module")
def runcard_page() -> tuple[types.ModuleType, str]:
    runcards = _runcards()
    return runcards, runcards.render_page()


def test_runcard_page_lists_every_field(runcard_page: tuple[types.ModuleType, str]) -> None:
    runcards, page = runcard_page
    sections = _page_sections(page)
    for card in runcards.RUNCARDS:
        _, model = runcards.load_model(card)
        expected = _expected(model)
        assert card.title in sections, f"no section for runcard {card.title!r}"
        listed = sections[card.title]
        missing = sorted(set(expected) - set(listed))
        extra = sorted(set(listed) - set(expected))
        assert not missing, f"{card.title}: fields missing from the runcard reference: {missing}"
        assert not extra, f"{card.title}: rows that are no field of {model.__name__}: {extra}"
        marked = {path for path, cell in listed.items() if cell == runcards.UNDOCUMENTED}
        bare = {path for path, documented in expected.items() if not documented}
        assert marked == bare, f"{card.title}: marked {sorted(marked ^ bare)} wrongly as (un)documented"
    assert "DESIGN.md" not in page, "the runcard reference quotes a docstring that mentions DESIGN.md"


def test_runcard_yaml_files_exist() -> None:
    for card in _runcards().RUNCARDS:
        for name in card.yaml:
            assert (ROOT / name).is_file(), f"runcard {card.title!r} lists {name}, which does not exist"


def test_runcard_models_fall_back_and_fail_loudly() -> None:
    runcards = _runcards()
    fallback = runcards.Runcard("t", "cmd", ("qcdgip_no_such_module.config:Model", "pydantic:BaseModel"), ())
    assert runcards.load_model(fallback) == ("pydantic:BaseModel", BaseModel)
    absent = runcards.Runcard("t", "cmd", ("qcdgip_no_such_module.config:Model",), ())
    with pytest.raises(runcards.RuncardImportError, match=re.escape("qcdgip_no_such_module.config:Model")):
        runcards.load_model(absent)
    no_class = runcards.Runcard("t", "cmd", ("pydantic:NoSuchModel",), ())
    with pytest.raises(runcards.RuncardImportError, match=re.escape("pydantic:NoSuchModel")):
        runcards.load_model(no_class)


# --- no pointers outside the repository ----------------------------------------------------------------------


def _mentions(paths: list[Path], needle: str) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths if needle in p.read_text(encoding="utf-8")]


def test_docs_do_not_mention_design_notes() -> None:
    pages = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    found = _mentions(pages, "DESIGN.md")
    assert not found, f"pages that mention DESIGN.md (the documentation must stand alone): {found}"


def test_code_does_not_mention_design_notes() -> None:
    files = [p for pkg in CODE_PACKAGES if (ROOT / pkg).is_dir() for p in sorted((ROOT / pkg).rglob("*.py"))]
    found = _mentions(files, "DESIGN.md")
    assert not found, f"modules that mention DESIGN.md (docstrings must stand alone): {found}"


# --- the README and the links ----------------------------------------------------------------------------------


def test_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"


_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _links(text: str) -> list[str]:
    text = re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.M | re.S)  # fenced code
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code
    return _LINK.findall(text)


def test_relative_links_point_to_files() -> None:
    generated = {DOCS / _runcards().PAGE}
    broken = []
    for page in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]:
        for target in _links(page.read_text(encoding="utf-8")):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if not (path.exists() or path in generated):
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, f"links to files that do not exist: {broken}"


# --- the site --------------------------------------------------------------------------------------------------


def test_site_builds_strict(tmp_path: Path) -> None:
    for module in ("mkdocs", "material"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install -c constraints.txt 'mkdocs>=1.6' mkdocs-material)")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "NO_MKDOCS_2_WARNING": "1"}
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert (tmp_path / "reference" / "runcards" / "index.html").is_file()
