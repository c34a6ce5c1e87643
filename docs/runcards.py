"""The runcard reference: one table per runcard of every field, generated from the pydantic models.

:data:`RUNCARDS` is the only list of runcards. Each entry names its model as ``"module:Class"`` candidates, tried in
order: the first that imports is documented, so a model that moves between modules needs only a new (or reordered)
string here. A candidate whose module is absent falls through to the next one; when none imports, or a module that
exists fails to import or lacks the class, :func:`load_model` raises :class:`RuncardImportError` naming every path
it tried.

The table walks the model recursively. A nested model's fields get dotted paths (``gan.training.steps``), the
items of a list of models ``[]`` (``physics.parameters[].truth``) and the values of a mapping to models ``<key>``
(``space.<key>.low``). Each row gives the type, the default (as YAML; the effective default, so a section whose
default differs from its class's defaults shows its own values) and the description: the field's
``Field(description=...)``, else, for a field holding a model, the first line of that model's docstring, else
:data:`UNDOCUMENTED`.

``python docs/runcards.py`` prints the page; the site's build adds it through ``docs/hooks.py``.
"""

from __future__ import annotations

import html
import importlib
import inspect
import json
import re
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

__all__ = [
    "PAGE",
    "RUNCARDS",
    "UNDOCUMENTED",
    "Row",
    "Runcard",
    "RuncardImportError",
    "fields",
    "load_model",
    "render_page",
]

ROOT = Path(__file__).resolve().parents[1]

PAGE = "reference/runcards.md"
"""Where the generated page lives in the site (it is never written into ``docs/``)."""

UNDOCUMENTED = "(no description)"
"""The description cell of a field that has no description of its own (tests look for it)."""


@dataclass(frozen=True)
class Runcard:
    """One runcard: its title, the command that reads it, its model candidates and the YAML files that use it."""

    title: str
    command: str
    models: tuple[str, ...]
    yaml: tuple[str, ...]


RUNCARDS: tuple[Runcard, ...] = (
    Runcard(
        "Statistical reference",
        "python -m physics.reference",
        ("physics.config:ReferenceConfig",),
        ("configs/reference.yaml",),
    ),
    Runcard(
        "GAN closure test",
        "python -m inverse.closure",
        ("inverse.gan.config:ClosureConfig",),
        (
            "configs/closure_gan.yaml",
            "configs/closure_detector.yaml",
            "configs/closure_mcmc.yaml",
            "configs/calibration_posterior.yaml",
        ),
    ),
    Runcard(
        "VAIM",
        "python -m inverse.vaim",
        ("inverse.vaim.config:VAIMConfig",),
        (
            "configs/vaim_x2.yaml",
            "configs/vaim_sin.yaml",
            "configs/vaim_circle.yaml",
            "configs/vaim_pdf_shapes.yaml",
            "configs/vaim_pdf_counts.yaml",
        ),
    ),
    Runcard(
        "Surrogate training",
        "python -m surrogates.train",
        ("surrogates.config:SurrogateConfig",),
        ("configs/surrogate_flow.yaml", "configs/surrogate_gan.yaml", "configs/surrogate_vae.yaml"),
    ),
    Runcard(
        "Hyperparameter search",
        "python -m hpo.search",
        ("hpo.config:SearchConfig",),
        (
            "configs/hpo_gan.yaml",
            "configs/hpo_quick.yaml",
            "configs/hpo_stopper.yaml",
            "configs/hpo_vaim.yaml",
        ),
    ),
    Runcard(
        "Ensemble of the best trials",
        "python -m hpo.ensemble",
        ("hpo.ensemble.config:EnsembleConfig",),
        (),
    ),
    Runcard(
        "Inclusive DIS problem",
        "python -m physics.dis.build",
        ("physics.dis.config:DISConfig",),
        (),
    ),
)


class RuncardImportError(ImportError):
    """None of a runcard's model paths gives a model class."""


def _absent(err: ModuleNotFoundError, module: str) -> bool:
    """Whether ``err`` says that ``module`` itself (or a package above it) does not exist."""
    parts = module.split(".")
    prefixes = {".".join(parts[: i + 1]) for i in range(len(parts))}
    if err.name in prefixes:
        return True
    # ``inverse.gan`` may still be a module, not a package: importing ``inverse.gan.config`` then fails so.
    return bool(re.search(r"is not a package", str(err)))


def load_model(runcard: Runcard) -> tuple[str, type[BaseModel]]:
    """The first of ``runcard.models`` that imports, as (path, class).

    Raises:
        RuncardImportError: no candidate imports; or a module that exists fails on import, or lacks the class, or
            holds something that is not a pydantic model. The message names every path tried.
    """
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    tried = []
    for path in runcard.models:
        module_name, _, attr = path.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if _absent(err, module_name):
                tried.append(f"{path}: {err}")
                continue
            raise RuncardImportError(f"runcard {runcard.title!r}: {path} fails to import: {err}") from err
        except Exception as err:
            raise RuncardImportError(f"runcard {runcard.title!r}: {path} fails to import: {err!r}") from err
        model = getattr(module, attr, None)
        if not (inspect.isclass(model) and issubclass(model, BaseModel)):
            raise RuncardImportError(f"runcard {runcard.title!r}: {path}: {module_name} has no pydantic model {attr}")
        return path, model
    raise RuncardImportError(
        f"runcard {runcard.title!r} ({runcard.command}): none of its model paths imports:\n  " + "\n  ".join(tried)
    )


@dataclass(frozen=True)
class Row:
    """One row of a runcard table."""

    path: str
    type: str
    default: str
    description: str
    documented: bool


_MISSING = object()


def _unwrap(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    return annotation


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _type_name(annotation: Any, nested: bool = False) -> str:
    """A short, readable type (no ``|``, which would split a table cell); unions inside containers in brackets."""
    annotation = _unwrap(annotation)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    if origin is typing.Literal:
        return "one of " + ", ".join(json.dumps(a) for a in args)
    if _is_union(annotation):
        text = " or ".join(_type_name(a, nested) for a in args)
        return f"({text})" if nested else text
    if origin in (list, tuple, set, frozenset):
        if origin is tuple and args and (len(args) != 2 or args[1] is not Ellipsis):
            return "(" + ", ".join(_type_name(a, True) for a in args) + ")"
        return f"list of {_type_name(args[0], True)}" if args else "list"
    if origin is dict:
        return f"mapping of {_type_name(args[0], True)} to {_type_name(args[1], True)}" if args else "mapping"
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return f"section ({annotation.__name__})"
    return getattr(annotation, "__name__", str(annotation))


def _models_in(annotation: Any) -> tuple[str, list[type[BaseModel]]]:
    """How a field holds models ("", "[]" or "<key>") and which models (none for a plain value)."""
    annotation = _unwrap(annotation)
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return "", [annotation]
    origin = typing.get_origin(annotation)
    args = [_unwrap(a) for a in typing.get_args(annotation)]
    if _is_union(annotation):
        found: list[type[BaseModel]] = []
        kind = ""
        for arg in args:
            sub_kind, sub = _models_in(arg)
            if sub:
                kind = sub_kind
                found += [m for m in sub if m not in found]
        return kind, found
    if origin in (list, tuple, set, frozenset):
        inner: list[type[BaseModel]] = []
        for arg in args:
            sub_kind, sub = _models_in(arg) if arg is not Ellipsis else ("", [])
            if sub and not sub_kind:
                inner += [m for m in sub if m not in inner]
        return ("[]", inner) if inner else ("", [])
    if origin is dict and len(args) == 2:
        sub_kind, sub = _models_in(args[1])
        return ("<key>", sub) if sub and not sub_kind else ("", [])
    return "", []


def _first_line(doc: str | None) -> str:
    if not doc:
        return ""
    return inspect.cleandoc(doc).strip().split("\n\n")[0].replace("\n", " ").strip()


_COMPUTED = object()


def _own_default(info: Any) -> Any:
    if info.is_required():
        return _MISSING
    if info.default_factory is not None:
        if getattr(info, "default_factory_takes_data", False):
            return _COMPUTED
        return info.default_factory()
    return None if info.default is PydanticUndefined else info.default


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _default_cell(value: Any) -> str:
    """A default as YAML in a code span; a list of sections as its length and item names."""
    if isinstance(value, list | tuple) and value and all(isinstance(v, BaseModel) for v in value):
        names = [getattr(v, "name", None) for v in value]
        listed = ": " + ", ".join(f"`{n}`" for n in names) if all(isinstance(n, str) for n in names) else ""
        return f"{len(value)} items{listed}"
    text = json.dumps(_plain(value), default=str, ensure_ascii=False)
    return f"`{text if len(text) <= 160 else text[:157] + '...'}`"


def fields(model: type[BaseModel], prefix: str = "", defaults: Any = _MISSING) -> list[Row]:
    """Every field of ``model`` and of the models inside it, depth first, in declaration order.

    Args:
        model: the pydantic model.
        prefix: the dotted path of ``model`` in the runcard ("" at the top).
        defaults: an instance whose values are the effective defaults (a section's own default), if any.
    """
    rows: list[Row] = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        default = getattr(defaults, name, _MISSING) if isinstance(defaults, BaseModel) else _MISSING
        if default is _MISSING:
            default = _own_default(info)
        kind, inner = _models_in(info.annotation)
        description = (info.description or "").strip()
        if not description and inner:
            description = _first_line(inner[0].__doc__)
        if default is _MISSING:
            shown = "required"
        elif default is _COMPUTED:
            shown = "(from the other fields)"
        elif inner and not kind and isinstance(default, BaseModel):
            shown = "(section)"
        else:
            shown = _default_cell(default)
        rows.append(Row(path, _type_name(info.annotation), shown, description or UNDOCUMENTED, bool(description)))
        for sub in inner:
            below = default if (not kind and isinstance(default, sub)) else _MISSING
            seen = {r.path for r in rows}
            inner_prefix = {"": f"{path}.", "[]": f"{path}[].", "<key>": f"{path}.<key>."}[kind]
            rows += [r for r in fields(sub, inner_prefix, below) if r.path not in seen]
    return rows


def _cell(text: str) -> str:
    """Markdown-safe table cell: code spans kept (RST double backticks become single), the rest escaped."""
    text = text.replace("``", "`")
    parts = text.split("`")
    out = []
    for i, part in enumerate(parts):
        if i % 2:  # inside a code span
            out.append("`" + part + "`")  # Python-Markdown keeps a pipe inside a code span in its cell
        else:
            part = html.escape(part, quote=False)
            out.append(re.sub(r"([\\*_\[\]|])", r"\\\1", part))
    return "".join(out)


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def render_page() -> str:
    """The Markdown of the runcard reference, every runcard of :data:`RUNCARDS`."""
    lines = [
        "# Runcard reference",
        "",
        "<!-- Generated by docs/runcards.py at build time: edit the models' Field(description=...), not this page. -->",
        "",
        "Every runcard is a YAML file validated by a pydantic model. Every key is optional unless its default",
        "reads *required*; an unknown key or a bad value stops the command with the file and the field named",
        "(exit 2). On the command line, `--set PATH=VALUE` sets a path of these tables, VALUE read as YAML (see",
        "[the CLI convention](../cli.md)). Paths with `[]` are keys of every item of a list, and `<key>` stands",
        "for a key of a mapping: set such a list or mapping as a whole. Defaults are written as YAML.",
        "",
        "| runcard | command | model | used by |",
        "|---|---|---|---|",
    ]
    sections = []
    for card in RUNCARDS:
        path, model = load_model(card)
        files = ", ".join(f"`{f}`" for f in card.yaml)
        lines.append(f"| [{card.title}](#{_anchor(card.title)}) | `{card.command}` | `{path}` | {files} |")
        rows = fields(model)
        body = [
            "",
            f"## {card.title}",
            "",
            f"`{card.command} --config FILE` reads this runcard (`{path}`). "
            f"{_cell(_first_line(model.__doc__))} YAML files: {files}.",
            "",
            "| path | type | default | description |",
            "|---|---|---|---|",
        ]
        body += [f"| `{r.path}` | {_cell(r.type)} | {r.default} | {_cell(r.description)} |" for r in rows]
        sections += body
    return "\n".join(lines + sections) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_page())
