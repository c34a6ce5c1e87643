"""Objects named in a runcard by ``"package.module:attribute"``, with errors that name the runcard field."""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["import_callable"]


def import_callable(
    spec: str, kwargs: dict[str, Any] | None = None, field: str = "simulator", probe: tuple = ()
) -> Callable[..., Any]:
    """Import ``"package.module:function"`` (dotted attributes allowed) and bind ``kwargs`` to it.

    Args:
        spec: the import path.
        kwargs: keyword arguments passed on every call.
        field: the config field named in errors.
        probe: positional arguments the callable will receive, used only to check that ``kwargs`` fit its signature.

    Returns:
        The callable, with ``kwargs`` bound.

    Raises:
        ValueError: the string is malformed, the module or attribute does not import, it is not callable, or it
            does not accept ``kwargs``.
    """
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ValueError(f"{field}: expected 'package.module:function', got {spec!r}")
    module_name, attr = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:
        raise ValueError(f"{field}: cannot import module {module_name!r} ({type(err).__name__}: {err})") from err
    func = module
    for part in attr.split("."):
        if not hasattr(func, part):
            raise ValueError(f"{field}: module {module_name!r} has no attribute {attr!r}")
        func = getattr(func, part)
    if not callable(func):
        raise ValueError(f"{field}: {spec!r} is not callable")
    kwargs = dict(kwargs or {})
    if kwargs:
        try:
            inspect.signature(func).bind(*probe, **kwargs)
        except TypeError as err:
            raise ValueError(f"{field}: {spec!r} does not take the arguments {sorted(kwargs)}: {err}") from err
        except ValueError:  # builtins without a signature: found out at the first call
            pass
    return functools.partial(func, **kwargs) if kwargs else func
