"""The search space as DeepHyper sees it: an ``HpProblem`` with conditions, and the base runcard's own point.

A range is ``{low, high, log}`` (integer ends give an integer range), a categorical ``{values: [...]}``; ``when``
makes an entry active only where categorical entries take the given values (ConfigSpace conditions).
"""

from __future__ import annotations

from typing import Any

from hpo.config import SearchConfig

__all__ = ["base_point", "build_problem"]


def build_problem(config: SearchConfig) -> Any:
    """DeepHyper's ``HpProblem`` of the search space, conditions included."""
    import ConfigSpace as cs  # noqa: N813 (ConfigSpace's own convention)
    from deephyper.hpo import HpProblem

    problem = HpProblem()
    hps = {}
    for name, dim in config.space.items():
        default = dim.default
        if dim.values is not None:
            hps[name] = problem.add_hyperparameter(list(dim.values), name, default_value=default)
        else:
            kind = int if dim.is_integer else float
            bounds = (kind(dim.low), kind(dim.high), "log-uniform" if dim.log else "uniform")
            hps[name] = problem.add_hyperparameter(bounds, name, default_value=default)
    for name, dim in config.space.items():
        for parent, value in (dim.when or {}).items():
            if isinstance(value, list):
                problem.add_condition(cs.InCondition(hps[name], hps[parent], value))
            else:
                problem.add_condition(cs.EqualsCondition(hps[name], hps[parent], value))
    return problem


def base_point(config: SearchConfig, runcard: dict[str, Any]) -> dict[str, Any] | None:
    """The base runcard's own values as a point of the space (None if one lies outside it)."""
    point = {}
    for name, dim in config.space.items():
        node: Any = runcard
        for key in name.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        if dim.when:
            active = all(point.get(p) in (v if isinstance(v, list) else [v]) for p, v in dim.when.items() if p in point)
            if not active:
                continue
        if dim.values is not None:
            if node not in dim.values:
                return None
        elif node is None or not (dim.low <= node <= dim.high):
            return None
        point[name] = int(node) if dim.is_integer else node
    return point
