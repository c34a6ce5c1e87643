"""Building surrogates by kind, and loading saved ones with checks on kind, physics and file integrity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from physics.config import PhysicsConfig
from physics.dis.config import DISConfig
from surrogates.base import Surrogate, SurrogateFileError, check_physics, read_model_file
from surrogates.cgan import GANSurrogate
from surrogates.config import KINDS, SurrogateConfig
from surrogates.dis_flow import DISFlowSurrogate
from surrogates.flow import FlowSurrogate
from surrogates.vae import VAESurrogate

__all__ = ["SURROGATES", "build_surrogate", "load_surrogate"]

SURROGATES: dict[str, type[Surrogate]] = {"flow": FlowSurrogate, "gan": GANSurrogate, "vae": VAESurrogate}


def build_surrogate(config: SurrogateConfig) -> Surrogate:
    """A fresh (untrained) surrogate of ``config.kind`` (of (x, Q^2) events when the config has a ``dis`` section)."""
    if config.dis is not None:
        return DISFlowSurrogate(config)
    return SURROGATES[config.kind](config)


def load_surrogate(
    path: str | Path, kind: str | None = None, physics: PhysicsConfig | DISConfig | None = None
) -> tuple[Surrogate, dict[str, Any]]:
    """Load a model file written by ``python -m surrogates.train``.

    Args:
        path: the ``model.pt`` file.
        kind: the kind the caller expects (``flow``, ``gan``, ``vae``); None accepts any.
        physics: the problem the caller will use it for (the toy's physics or a DIS config); the file must have
            been trained for the same problem, parameters (names and box), observables or theory, and datasets.

    Returns:
        (the surrogate in eval mode with frozen weights, the file's ``extra`` metadata).

    Raises:
        SurrogateFileError: missing or damaged file, another kind, other physics, or weights that do not fit.
    """
    blob = read_model_file(path)
    if blob["kind"] not in KINDS:
        raise SurrogateFileError(f"{path}: unknown surrogate kind {blob['kind']!r} (known: {list(KINDS)})")
    if kind is not None and blob["kind"] != kind:
        raise SurrogateFileError(
            f"{path}: holds a {blob['kind']!r} surrogate, but the config asks for {kind!r} "
            f"(set the sampler kind to {blob['kind']!r} or point to a {kind!r} model file)"
        )
    try:
        config = SurrogateConfig.model_validate(blob["config"])
    except ValueError as err:
        raise SurrogateFileError(f"{path}: its stored config is not valid for this version: {err}") from None
    if config.kind != blob["kind"]:
        raise SurrogateFileError(f"{path}: damaged: kind {blob['kind']!r} but config kind {config.kind!r}")
    if physics is not None:
        check_physics(path, config.problem, physics)
    model = build_surrogate(config)
    state = dict(blob["state_dict"])
    # A file written without learned counts loads with untrained ones (the solver then uses the theory's counts).
    for key, value in model.state_dict().items():
        if key.startswith("counts.") or key == "luminosity":
            state.setdefault(key, value)
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as err:
        raise SurrogateFileError(f"{path}: weights do not fit the stored config: {str(err)[:400]}") from None
    model.eval().requires_grad_(False)
    return model, dict(blob.get("extra") or {})
