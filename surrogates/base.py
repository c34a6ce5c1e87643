"""What every learned event generator shares: coordinates, conditioning, base noise, and the model file.

A surrogate is a :class:`physics.sampling.EventSampler` trained on exact events. It works in the dataset's
log-scaled coordinate t = (log x - log x_min) / (log x_max - log x_min) in [0, 1], where every member of the PDF
family is smooth. It reads the parameters scaled to [-1, 1] over the prior box, plus each flavour's share of the
summed normalisations N_f / sum_g N_g: event shapes do not change under a common scale of the N_f, so the shares
are what they depend on, and they stay well resolved where every N_f is small (there, the scaled parameters
crowd into a corner of the box and the first surrogates were least accurate). Its base noise is
``noise_dim`` uniforms per event, so a caller can pass common random numbers exactly as to the exact sampler.

The model file (``model.pt``) holds the format tag, the surrogate kind, the full training config (whose
``physics`` section fixes the parameters' box and the datasets) and the weights. :func:`load_surrogate`
refuses a file of another kind, one trained for other parameters or datasets, and a damaged file, naming it.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from physics.config import PhysicsConfig
from physics.dis.config import DISConfig
from physics.sampling import EventSampler
from qcdgip.nn import activation as _activation
from surrogates.config import SurrogateConfig
from surrogates.counts import CountModel

__all__ = ["FORMAT", "ConditionedMLP", "Surrogate", "SurrogateFileError", "activation", "physics_signature"]

FORMAT = "qcdgip-surrogate/1"


class SurrogateFileError(ValueError):
    """A surrogate model file is missing, damaged, or does not fit the requested kind or physics."""


def activation(name: str) -> nn.Module:
    """The activation module called ``name`` (leaky_relu with torch's default slope 0.01)."""
    return _activation(name, negative_slope=0.01)


def mlp(n_in: int, n_out: int, width: int, depth: int, act: str) -> nn.Sequential:
    """Plain MLP with ``depth`` hidden layers of ``width``."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(n_in if i == 0 else width, width), activation(act)]
    layers.append(nn.Linear(width if depth else n_in, n_out))
    return nn.Sequential(*layers)


class ConditionedMLP(nn.Module):
    """Per-event MLP modulated by the condition (FiLM: every hidden layer scaled and shifted).

    The condition network runs once per parameter set, the per-event layers once per event, so sampling n
    events for B parameter sets costs B large passes plus B n small ones.

    Args:
        n_in: per-event inputs.
        n_out: per-event outputs.
        n_context: condition inputs.
        width: per-event hidden width.
        depth: per-event hidden layers.
        context_width: hidden width of the condition network (two hidden layers).
        act: activation name.

    References:
        Perez et al., "FiLM: Visual Reasoning with a General Conditioning Layer", arXiv:1709.07871.
    """

    def __init__(
        self, n_in: int, n_out: int, n_context: int, width: int, depth: int, context_width: int, act: str
    ) -> None:
        super().__init__()
        self.width, self.depth = width, depth
        self.film = mlp(n_context, 2 * width * depth, context_width, 2, act)
        # Start as an unconditioned network: zero modulation.
        nn.init.zeros_(self.film[-1].weight)
        nn.init.zeros_(self.film[-1].bias)
        self.layers = nn.ModuleList([nn.Linear(n_in if i == 0 else width, width) for i in range(depth)])
        self.act = activation(act)
        self.out = nn.Linear(width, n_out)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        """X [B, n, n_in], context [B, n_context] -> [B, n, n_out]."""
        mod = self.film(context).view(-1, self.depth, 2, 1, self.width)
        h = x
        for i, layer in enumerate(self.layers):
            h = self.act(layer(h) * (1.0 + mod[:, i, 0]) + mod[:, i, 1])
        return self.out(h)


def physics_signature(physics: PhysicsConfig | DISConfig) -> dict[str, Any]:
    """The parts of a problem's config a surrogate depends on (the truth and the cases do not matter)."""
    common = {"parameters": [(p.name, p.low, p.high) for p in physics.parameters]}
    if isinstance(physics, DISConfig):
        parts = ("pdf", "theory", "grid", "kinematics", "datasets")
        return {"problem": "dis", **common, **physics.model_dump(include=set(parts))}
    return {
        "flavors": list(physics.flavors),
        **common,
        "observables": [o.model_dump() for o in physics.observables],
        "datasets": [d.model_dump() for d in physics.datasets],
    }


class Surrogate(EventSampler):
    """Base of the learned event generators.

    Args:
        config: the training config (its ``physics`` section fixes box and datasets).

    Subclasses implement :meth:`sample_t` (and :meth:`log_prob_t` if they have a density) and
    :meth:`training_loss` (the cGAN trains adversarially instead).
    """

    kind: str = ""
    noise_dim: int = 1

    def __init__(self, config: SurrogateConfig) -> None:
        super().__init__()
        self.config = config
        problem = config.problem
        self.dataset_names = [d.name for d in problem.datasets]
        self.n_params = len(problem.parameters)
        self.n_datasets = len(problem.datasets)
        # The toy's event shapes depend on the normalisations only through their shares (N, a, b per flavour).
        self.norm_index = [3 * f for f in range(len(problem.flavors))] if config.dis is None else []
        self.n_context = self.n_params + len(self.norm_index)
        self.register_buffer("low", torch.tensor(problem.low))
        self.register_buffer("high", torch.tensor(problem.high))
        if config.dis is None:
            self.register_buffer("log_min", torch.tensor([d.x_min for d in problem.datasets]).log())
            self.register_buffer("log_max", torch.tensor([d.x_max for d in problem.datasets]).log())
        # The learned expected counts nu_j(theta) and the luminosities they were learned at.
        self.counts = CountModel(self.low, self.high, self.n_datasets, config.counts)
        self.register_buffer("luminosity", torch.ones(self.n_datasets))

    # -- coordinates ------------------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the weights."""
        return self.low.dtype

    def context(self, theta: Tensor) -> Tensor:
        """Network input [B, D + F]: parameters scaled to [-1, 1] over the box and the toy's normalisation shares."""
        if theta.dim() != 2 or theta.shape[1] != self.n_params:
            raise ValueError(f"theta must have shape [B, {self.n_params}], got {tuple(theta.shape)}")
        theta = theta.to(self.dtype)
        scaled = 2.0 * (theta - self.low) / (self.high - self.low) - 1.0
        if not self.norm_index:
            return scaled
        norms = theta[:, self.norm_index].clamp_min(0.0)
        total = norms.sum(-1, keepdim=True)
        safe = torch.where(total > 0, total, torch.ones_like(total))
        shares = torch.where(total > 0, norms / safe, torch.full_like(norms, 1.0 / len(self.norm_index)))
        return torch.cat([scaled, 2.0 * shares - 1.0], dim=-1)

    def one_hot(self, j: int, n: int) -> Tensor:
        """Dataset indicator [n, J]."""
        out = torch.zeros(n, self.n_datasets, dtype=self.dtype, device=self.low.device)
        out[:, j] = 1.0
        return out

    def to_t(self, x: Tensor, j: int) -> Tensor:
        """X -> t in [0, 1] (log-scaled position in dataset j's range)."""
        return (torch.log(x) - self.log_min[j]) / (self.log_max[j] - self.log_min[j])

    def from_t(self, t: Tensor, j: int) -> Tensor:
        """T -> x, clamped to dataset j's range."""
        lo, hi = self.log_min[j], self.log_max[j]
        return torch.exp(lo + t * (hi - lo)).clamp(torch.exp(lo), torch.exp(hi))

    def log_dt_dx(self, x: Tensor, j: int) -> Tensor:
        """Log |dt/dx| = -log(x (log x_max - log x_min))."""
        return -torch.log(x) - torch.log(self.log_max[j] - self.log_min[j])

    @property
    def has_counts(self) -> bool:
        """Whether the expected counts were learned (``python -m surrogates.train`` does it)."""
        return bool(self.counts.trained)

    def expected_counts(self, theta: Tensor, luminosity: Tensor | None = None) -> Tensor:
        """Learned expected counts nu_j(theta), [B, J] in theta's dtype, rescaled to ``luminosity`` [J] if given.

        Raises:
            ValueError: the counts were never learned.
        """
        if not self.has_counts:
            raise ValueError(f"this {self.kind} surrogate has no learned expected counts (train it again)")
        nu = self.counts(theta)
        if luminosity is not None:
            nu = nu * (torch.as_tensor(luminosity).to(theta) / self.luminosity.to(theta))
        return nu

    # -- sampling ---------------------------------------------------------------------------------------------
    def base_noise(
        self,
        n_batch: int,
        n: int,
        generator: torch.Generator | None,
        noise: Tensor | None,
        like: Tensor | None = None,
    ) -> Tensor:
        """Uniform base noise [B, n, noise_dim] in the weights' dtype, fresh or from ``noise``.

        As :meth:`EventSampler.base_noise`; with ``noise_dim`` 1, ``noise`` may also be [B, n, 1].
        """
        if noise is not None and noise.dim() == 3 and noise.shape[-1] == 1 and self.noise_dim == 1:
            noise = noise[..., 0]
        u = super().base_noise(n_batch, n, generator, noise, self.low if like is None else like)
        return u[..., None] if self.noise_dim == 1 else u

    def sample(
        self,
        theta: Tensor,
        n: int,
        dataset: int | str,
        *,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """Draw n events of ``dataset`` per parameter set, reparameterised; returns [B, n] in theta's dtype."""
        j = self.dataset_index(dataset)
        ctx = self.context(theta)
        u = self.base_noise(theta.shape[0], n, generator, noise)
        x = self.from_t(self.sample_t(ctx, u, j), j)
        return x.to(theta.dtype)

    def log_prob(self, x: Tensor, theta: Tensor, dataset: int | str) -> Tensor:
        """Normalized log density of events x ([B, n] or [n]) per parameter set; -inf outside the range."""
        if not self.has_log_prob:
            return super().log_prob(x, theta, dataset)
        j = self.dataset_index(dataset)
        ctx = self.context(theta)
        xs = x.to(self.dtype)
        if xs.dim() == 1:
            xs = xs.expand(ctx.shape[0], -1)
        lo, hi = torch.exp(self.log_min[j]), torch.exp(self.log_max[j])
        inside = (xs >= lo) & (xs <= hi)
        xs = torch.where(inside, xs, torch.full_like(xs, 0.5) * (lo + hi))
        values = self.log_prob_t(self.to_t(xs, j).clamp(0.0, 1.0), ctx, j) + self.log_dt_dx(xs, j)
        return torch.where(inside, values, torch.full_like(values, -torch.inf)).to(x.dtype)

    @abstractmethod
    def sample_t(self, context: Tensor, u: Tensor, j: int) -> Tensor:
        """T [B, n] of dataset j from base uniforms u [B, n, noise_dim] and the context [B, D]."""

    def log_prob_t(self, t: Tensor, context: Tensor, j: int) -> Tensor:
        """Log density of t [B, n] (surrogates with a density only)."""
        raise NotImplementedError(f"{type(self).__name__} has no log_prob")

    def training_loss(self, context: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Mean loss on exact events t [B, J, n] of the parameter sets in ``context`` (likelihood-trained kinds).

        ``generator`` seeds any noise the loss draws (the VAE's encoder samples), so resumed training repeats it.
        """
        raise NotImplementedError(f"{type(self).__name__} trains adversarially")

    # -- files ------------------------------------------------------------------------------------------------
    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write the model file (atomically): format, kind, config and weights, plus ``extra`` metadata."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        blob = {"format": FORMAT, "kind": self.kind, "config": self.config.model_dump(), "state_dict": state}
        blob["extra"] = extra or {}
        tmp = path.with_name(path.name + ".tmp")
        torch.save(blob, tmp)
        tmp.replace(path)
        return path


def read_model_file(path: str | Path) -> dict[str, Any]:
    """The raw contents of a surrogate model file, checked for the format tag and the keys it needs."""
    path = Path(path)
    if not path.is_file():
        raise SurrogateFileError(f"{path}: surrogate model file not found (train one with python -m surrogates.train)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise SurrogateFileError(
            f"{path}: not a readable surrogate model file (damaged, truncated, or not written by surrogates.train): "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise SurrogateFileError(f"{path}: not a surrogate model file of format {FORMAT!r} (found {found!r})")
    missing = [k for k in ("kind", "config", "state_dict") if k not in blob]
    if missing:
        raise SurrogateFileError(f"{path}: surrogate model file lacks {missing}")
    return blob


def check_physics(path: str | Path, trained: PhysicsConfig | DISConfig, wanted: PhysicsConfig | DISConfig) -> None:
    """Raise :class:`SurrogateFileError` if the surrogate was trained for another problem, parameters or datasets."""
    if type(trained) is not type(wanted):
        names = {PhysicsConfig: "the toy", DISConfig: "inclusive DIS"}
        raise SurrogateFileError(f"{path}: the surrogate was trained for {names[type(trained)]}, "
                                 f"not {names[type(wanted)]}")  # fmt: skip
    a, b = physics_signature(trained), physics_signature(wanted)
    diff = [k for k in a if a[k] != b[k]]
    if diff:
        details = "; ".join(f"{k}: file {a[k]} vs config {b[k]}" for k in diff)
        raise SurrogateFileError(
            f"{path}: the surrogate was trained for other physics ({', '.join(diff)} differ). {details[:600]}"
        )
