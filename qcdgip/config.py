"""Runcards: YAML loading, validation with errors that name the file and the field, and dotted-path overrides.

Every runcard of the suite is a pydantic model derived from :class:`StrictModel` (unknown keys are errors, values
are frozen). :func:`parse_config` turns pydantic's error into one line per field, ``source: section.field: reason``,
so a user sees ``configs/x.yaml: posterior.n_chains: Input should be greater than or equal to 2``. Overrides are
dotted paths into a runcard (``gan.training.steps``), given as ``--set a.b.c=value`` on a command line
(:func:`parse_assignments`) or as a search's hyperparameters (:func:`apply_overrides`); :func:`override_config`
checks that each path names a field of the model before validating the result.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = [
    "StrictModel",
    "apply_overrides",
    "check_paths",
    "flatten",
    "load_config",
    "load_yaml",
    "override_config",
    "parse_assignments",
    "parse_config",
    "set_path",
]

_M = TypeVar("_M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML runcard into a mapping, with errors that name the file.

    Args:
        path: the YAML file.

    Returns:
        The mapping at the top of the file (empty if the file is empty).

    Raises:
        ValueError: the file is missing, unreadable, not YAML, or not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def parse_config(model: type[_M], data: dict[str, Any], source: str = "<config>") -> _M:
    """Validate ``data`` as ``model``, turning pydantic's error into a ValueError naming source and field.

    Args:
        model: the pydantic model class.
        data: the raw mapping.
        source: where the mapping came from (file name), used in the message.

    Returns:
        The validated model.

    Raises:
        ValueError: one line per invalid field, ``source: section.field: reason``.
    """
    try:
        return model.model_validate(data)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            loc = ".".join(str(part) for part in e["loc"]) or "<top>"
            lines.append(f"{source}: {loc}: {e['msg']}")
        raise ValueError("invalid configuration\n" + "\n".join(lines)) from None


def load_config(path: str | Path, model: type[_M], section: str | None = None) -> _M:
    """Load and validate a YAML runcard.

    Args:
        path: the YAML file.
        model: the config model to validate against.
        section: if given, validate only this top-level section (e.g. ``"physics"``); missing means defaults.

    Returns:
        The validated config.
    """
    data = load_yaml(path)
    if section is not None:
        data = data.get(section) or {}
    return parse_config(model, data, str(path))


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts (an integer key indexes a list), creating sections on the way.

    >>> card = {"physics": {"parameters": [{"truth": 1.0}, {"truth": 2.0}]}}
    >>> set_path(card, "physics.parameters.1.truth", 2.5); card["physics"]["parameters"][1]
    {'truth': 2.5}

    Raises:
        ValueError: a key on the way holds a value, not a section, or an index is out of range.
    """
    keys = path.split(".")
    node: Any = data
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ValueError(f"{path}: {key!r} is not an index of a list of {len(node)} entries")
            if last:
                node[int(key)] = value
                return
            node = node[int(key)]
            continue
        if not isinstance(node, dict):
            raise ValueError(f"{path}: {keys[depth - 1]!r} is a value, not a section")
        if last:
            node[key] = value
            return
        if node.get(key) is None:
            node[key] = {}
        node = node[key]


def apply_overrides(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with each dotted path set (values that are None or NaN are inactive: skipped)."""
    out = copy.deepcopy(base)
    for path, value in values.items():
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        set_path(out, path, value.item() if hasattr(value, "item") else value)
    return out


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one mapping of dotted paths to leaf values.

    >>> flatten({"gan": {"training": {"steps": 300}}, "data": {"seed": 1}})
    {'gan.training.steps': 300, 'data.seed': 1}
    """
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def parse_assignments(items: list[str] | None, option: str = "--set") -> dict[str, Any]:
    """``["a.b=1", "c=[1, 2]"]`` -> ``{"a.b": 1, "c": [1, 2]}``: each value is read as YAML.

    >>> parse_assignments(["gan.training.steps=50", "physics.case=C", "gan.loss.rate=false"])
    {'gan.training.steps': 50, 'physics.case': 'C', 'gan.loss.rate': False}

    Raises:
        ValueError: an item without ``=``, an empty path, or a value that is not YAML.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        path, sep, text = item.partition("=")
        path = path.strip()
        if not sep or not path or any(not part for part in path.split(".")):
            raise ValueError(f"{option} {item!r}: expected a dotted path and a value, e.g. gan.training.steps=50")
        try:
            out[path] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as err:
            raise ValueError(f"{option} {path}: the value {text!r} is not YAML ({err})") from None
    return out


def _inner(annotation: Any) -> tuple[type[BaseModel] | None, bool, bool]:
    """(the pydantic model inside ``annotation``, whether it is a list of them, whether it is a free mapping)."""
    origin = getattr(annotation, "__origin__", None)
    if origin is dict:
        return None, False, True
    if origin is list:
        model, _, _ = _inner(annotation.__args__[0])
        return model, True, False
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate, False, False
        if getattr(candidate, "__origin__", None) is dict:
            return None, False, True
    return None, False, False


def check_paths(model: type[BaseModel], paths: list[str], option: str = "--set") -> None:
    """Refuse a dotted path that does not name a field of ``model`` (the message lists the section's fields).

    A path may index a list of sections (``physics.parameters.0.truth``) and go inside a free-form mapping
    (``physics.cases.D``), whose contents pydantic validates.

    Raises:
        ValueError: naming the option, the path and the fields that exist there.
    """
    for path in paths:
        current: type[BaseModel] | None = model
        keys = path.split(".")
        index = 0
        while current is not None and index < len(keys):
            key = keys[index]
            if key not in current.model_fields:
                where = ".".join(keys[:index]) or "the top level"
                fields = ", ".join(sorted(current.model_fields))
                raise ValueError(f"{option} {path}: {where} has no field {key!r} (fields: {fields})")
            current, is_list, is_mapping = _inner(current.model_fields[key].annotation)
            index += 1
            if is_mapping:
                break
            if is_list and index < len(keys):
                if not keys[index].isdigit():
                    raise ValueError(f"{option} {path}: {'.'.join(keys[:index])} is a list; index it with a number")
                index += 1


def override_config(config: _M, values: dict[str, Any], source: str = "--set") -> _M:
    """``config`` with dotted-path ``values`` set, every path checked and the result validated.

    Args:
        config: a validated runcard.
        values: dotted path -> value (as YAML would give it; None sets a field to null).
        source: named in errors (``--set``, ``command line``).

    Returns:
        The new validated config (``config`` itself when nothing changes).

    Raises:
        ValueError: an unknown path, or a value the model refuses (the field named).
    """
    if not values:
        return config
    check_paths(type(config), list(values), source)
    data = config.model_dump()
    for path, value in values.items():
        set_path(data, path, value)
    return parse_config(type(config), data, source)
