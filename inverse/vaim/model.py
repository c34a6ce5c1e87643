"""VAIM, the Variational Autoencoder Inverse Mapper: every parameter set that explains an observation.

The encoder maps parameters x to (predicted observables y_hat, latent mean mu, latent log-variance); the
decoder maps (observables y, latent z) back to parameters. Training on simulated pairs (x, y = f(x) + noise)
minimizes

    L = w_rec |x_hat - x|^2 + w_fwd |y_hat - y|^2 + w_kl KL(N(mu, diag sigma^2) || N(0, I)),

with x_hat = decoder(y, z), z = mu + sigma * eps (the Gaussian reparameterisation, so gradients reach mu and
log sigma^2). The latent keeps what y does not say about x, e.g. the sign of x for y = x^2. At inference an
observation is decoded with z drawn from the prior, and different draws land on the different solutions.
Parameters are scaled to [-1, 1] by the prior box and observables (optionally log(1 + y)) standardized by their
training moments;
both scalings are buffers of the model, so a saved VAIM works in physical units.

Run it with ``python -m inverse.vaim --config configs/vaim_x2.yaml --out DIR`` (see :mod:`inverse.vaim.run`).
:func:`save_vaim` / :func:`load_vaim` write and read a trained model (``model.pt``, format ``qcdgip-vaim/1``).

References:
    Almaeen, Alanazi, Sato, Melnitchouk, Kuchera, Li, "Variational Autoencoder Inverse Mapper: An End-to-End
    Deep Learning Framework for Inverse Problems", IJCNN 2021, doi:10.1109/IJCNN52387.2021.9534012.
    Kingma and Welling, "Auto-Encoding Variational Bayes", arXiv:1312.6114.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from inverse.vaim.config import VAIMConfig
from qcdgip.config import parse_config
from qcdgip.nn import activation

__all__ = ["VAIM", "ResidualMLP", "gaussian_kl", "load_vaim", "reparameterize", "save_vaim", "transform_observables"]


class ResidualMLP(nn.Module):
    """in -> Linear -> [x + Linear(act(Linear(act(x))))] * blocks -> act -> Linear -> out.

    Args:
        n_in: input features.
        n_out: output features.
        width: hidden width.
        blocks: residual blocks.
        activation_name: hidden activation.
    """

    def __init__(self, n_in: int, n_out: int, width: int, blocks: int, activation_name: str) -> None:
        super().__init__()
        self.inp = nn.Linear(n_in, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                activation(activation_name),
                nn.Linear(width, width),
                activation(activation_name),
                nn.Linear(width, width),
            )
            for _ in range(blocks)
        )
        self.out = nn.Sequential(activation(activation_name), nn.Linear(width, n_out))

    def forward(self, x: Tensor) -> Tensor:
        """Map [..., n_in] to [..., n_out]."""
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


def reparameterize(mu: Tensor, log_var: Tensor, eps: Tensor) -> Tensor:
    """Z = mu + exp(log_var / 2) * eps: a draw of N(mu, diag exp(log_var)) differentiable in mu and log_var."""
    return mu + torch.exp(0.5 * log_var) * eps


def gaussian_kl(mu: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mu, diag exp(log_var)) || N(0, I)) = 1/2 sum (mu^2 + exp(log_var) - 1 - log_var), per row."""
    return 0.5 * (mu**2 + torch.exp(log_var) - 1.0 - log_var).sum(-1)


def transform_observables(y: Tensor, log: bool) -> Tensor:
    """Observables before standardization: y, or log(1 + y) when ``log`` (``model.log_observables``)."""
    if not log:
        return y
    if bool((y < 0).any()):
        raise ValueError("model.log_observables needs observables >= 0")
    return torch.log1p(y)


class VAIM(nn.Module):
    """Encoder x -> (y_hat, mu, log_var) and decoder (y, z) -> x, with the problem's scalings as buffers.

    Args:
        config: the runcard (sizes come from ``model``, weights of the loss from ``loss``).
        n_observables: m, the length of y.
        y_mean: training mean of the transformed y (:meth:`transform_y`), [m] (standardization).
        y_std: its training standard deviation, [m].
    """

    def __init__(self, config: VAIMConfig, n_observables: int, y_mean: Tensor, y_std: Tensor) -> None:
        super().__init__()
        self.config = config
        m, d, k = n_observables, len(config.problem.parameters), config.model.latent_dim
        c = config.model
        self.n_params, self.n_observables, self.latent_dim = d, m, k
        self.encoder = ResidualMLP(d, m + 2 * k, c.width, c.blocks, c.activation)
        self.decoder = ResidualMLP(m + k, d, c.width, c.blocks, c.activation)
        low = torch.tensor([p.low for p in config.problem.parameters], dtype=torch.float64)
        high = torch.tensor([p.high for p in config.problem.parameters], dtype=torch.float64)
        self.register_buffer("x_center", (low + high) / 2)
        self.register_buffer("x_half", (high - low) / 2)
        if y_mean.shape != (m,) or y_std.shape != (m,):
            raise ValueError(f"y_mean and y_std must have shape [{m}]")
        self.register_buffer("y_mean", y_mean.detach().to(torch.float64).clone())
        self.register_buffer("y_std", y_std.detach().to(torch.float64).clamp_min(1e-12).clone())

    # Scalings between physical and network units.
    def scale_x(self, x: Tensor) -> Tensor:
        """Parameters to [-1, 1] by the prior box."""
        return (x - self.x_center.to(x)) / self.x_half.to(x)

    def unscale_x(self, s: Tensor) -> Tensor:
        """Box-scaled parameters back to physical units."""
        return s * self.x_half.to(s) + self.x_center.to(s)

    def transform_y(self, y: Tensor) -> Tensor:
        """Observables before standardization: y, or log(1 + y) with ``model.log_observables``."""
        return transform_observables(y, self.config.model.log_observables)

    def scale_y(self, y: Tensor) -> Tensor:
        """Observables (transformed and) standardized by their training moments."""
        return (self.transform_y(y) - self.y_mean.to(y)) / self.y_std.to(y)

    def unscale_y(self, s: Tensor) -> Tensor:
        """Standardized observables back to physical units."""
        t = s * self.y_std.to(s) + self.y_mean.to(s)
        return torch.expm1(t) if self.config.model.log_observables else t

    def encode(self, xs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Scaled parameters [..., d] -> (scaled y_hat [..., m], mu [..., k], log_var [..., k])."""
        out = self.encoder(xs)
        m, k = self.n_observables, self.latent_dim
        # Bounded log-variance: exp() of an unbounded head overflows in float32 early in training.
        return out[..., :m], out[..., m : m + k], 8.0 * torch.tanh(out[..., m + k :] / 8.0)

    def decode(self, ys: Tensor, z: Tensor) -> Tensor:
        """(scaled y [..., m], z [..., k]) -> scaled parameters [..., d]."""
        return self.decoder(torch.cat([ys, z], dim=-1))

    def losses(self, xs: Tensor, ys: Tensor, eps: Tensor) -> dict[str, Tensor]:
        """The three loss terms and their weighted sum on a minibatch of scaled pairs.

        Args:
            xs: scaled parameters [B, d].
            ys: scaled observables [B, m].
            eps: standard normal noise [B, k] for the reparameterisation.

        Returns:
            ``reconstruction``, ``forward``, ``kl`` (batch means) and ``total``.
        """
        c = self.config.loss
        y_hat, mu, log_var = self.encode(xs)
        z = reparameterize(mu, log_var, eps)
        x_hat = self.decode(ys if c.decoder_input == "observed" else y_hat, z)
        parts = {
            "reconstruction": ((x_hat - xs) ** 2).mean(),
            "forward": ((y_hat - ys) ** 2).mean(),
            "kl": gaussian_kl(mu, log_var).mean(),
        }
        parts["total"] = (
            c.w_reconstruction * parts["reconstruction"] + c.w_forward * parts["forward"] + c.w_kl * parts["kl"]
        )
        return parts

    def draw(self, y: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Solutions for each observation: decode y with n latent draws from the prior.

        Args:
            y: observations in physical units, [B, m].
            n: draws per observation.
            generator: random stream (on y's device) for the latent draws.

        Returns:
            Parameters in physical units, [B, n, d], dtype and device of ``y``.
        """
        if y.ndim != 2 or y.shape[1] != self.n_observables:
            raise ValueError(f"observations must have shape [B, {self.n_observables}], got {tuple(y.shape)}")
        w = next(self.parameters())
        ys = self.scale_y(y.to(w)).unsqueeze(1).expand(-1, n, -1)
        z = torch.randn(y.shape[0], n, self.latent_dim, generator=generator, device=w.device, dtype=w.dtype)
        return self.unscale_x(self.decode(ys, z)).to(y)

    def repair(
        self, x: Tensor, y: Tensor, sigma: Tensor, target: float = 1.0, max_steps: int = 30
    ) -> tuple[Tensor, Tensor]:
        """Move draws that the learned forward map finds inconsistent with y back onto the solutions.

        A decoder is continuous in z, so prior draws between the latent regions of two solutions (z ~ 0 between
        the x = -2 and x = +2 branches of y = 4) decode to interpolations that solve nothing; the published VAIM
        keeps them. Here every draw whose learned-forward residual r = (f_hat(x) - y) / sigma has RMS above
        ``target`` takes damped Gauss-Newton (Levenberg) steps on |r|^2 in box-scaled coordinates, inside the
        box, until its RMS is at most ``target``. Draws already consistent are not touched, and along a
        degenerate direction (where f_hat is flat) a step does not move, so a family of solutions keeps its
        spread. Only the learned forward map is used: the simulator need not be differentiable.

        Args:
            x: draws in physical units, [B, n, d].
            y: observations, [B, m].
            sigma: noise scale of each observation, [B, m].
            target: RMS residual (in sigmas) below which a draw counts as repaired.
            max_steps: Gauss-Newton steps at most.

        Returns:
            (repaired draws [B, n, d] in x's dtype and device, mask [B, n] of the draws that were moved).
        """
        w = next(self.parameters())
        batch, n, d = x.shape
        xs = self.scale_x(x.to(w)).reshape(batch * n, d).detach().clone()
        yy = y.to(w).unsqueeze(1).expand(batch, n, -1).reshape(batch * n, -1)
        ss = sigma.to(w).unsqueeze(1).expand(batch, n, -1).reshape(batch * n, -1)

        def residual(x1: Tensor, y1: Tensor, s1: Tensor) -> Tensor:
            return (self.unscale_y(self.encode(x1)[0]) - y1) / s1

        batched = torch.func.vmap(residual)
        jacobian = torch.func.vmap(torch.func.jacrev(residual))
        with torch.no_grad():
            r = batched(xs, yy, ss)
        rms2 = (r**2).mean(-1)
        moved = rms2 > target**2
        damping = torch.full_like(rms2, 1e-3)
        eye = torch.eye(d, dtype=w.dtype, device=w.device)
        for _ in range(max_steps):
            idx = torch.nonzero(rms2 > target**2).squeeze(-1)
            if idx.numel() == 0:
                break
            jac = jacobian(xs[idx], yy[idx], ss[idx]).detach()  # [a, m, d]
            jtj = jac.transpose(1, 2) @ jac
            grad = jac.transpose(1, 2) @ r[idx].unsqueeze(-1)
            scale = jtj.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-12)
            step = torch.linalg.solve(jtj + (damping[idx] * scale)[:, None, None] * eye, grad).squeeze(-1)
            candidate = (xs[idx] - step).clamp(-1.0, 1.0)
            with torch.no_grad():
                r_new = batched(candidate, yy[idx], ss[idx])
            rms2_new = (r_new**2).mean(-1)
            better = rms2_new < rms2[idx]
            keep = idx[better]
            xs[keep], r[keep], rms2[keep] = candidate[better], r_new[better], rms2_new[better]
            damping[keep] = (damping[keep] / 3).clamp_min(1e-7)
            damping[idx[~better]] *= 4
        return self.unscale_x(xs).reshape(batch, n, d).to(x), moved.reshape(batch, n)

    def predict(self, x: Tensor) -> Tensor:
        """The learned forward map: parameters [..., d] -> observables [..., m], physical units."""
        w = next(self.parameters())
        return self.unscale_y(self.encode(self.scale_x(x.to(w)))[0]).to(x)

    def latent(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The encoder's latent mean and log-variance of parameters [..., d] (for latent-space plots)."""
        w = next(self.parameters())
        _, mu, log_var = self.encode(self.scale_x(x.to(w)))
        return mu.to(x), log_var.to(x)


def save_vaim(model: VAIM, path: Path, extra: dict[str, Any] | None = None) -> Path:
    """Write weights, config and scalings to ``path`` (atomically)."""
    blob = {
        "format": "qcdgip-vaim/1",
        "config": model.config.model_dump(),
        "n_observables": model.n_observables,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **(extra or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)
    return path


def load_vaim(path: str | Path) -> VAIM:
    """Read a VAIM written by :func:`save_vaim`; a file of another kind or a damaged one is refused by name."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: VAIM model file not found")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ValueError(f"{path}: not a readable torch file ({type(err).__name__}: {err})") from err
    if not isinstance(blob, dict) or blob.get("format") != "qcdgip-vaim/1":
        raise ValueError(
            f"{path}: not a VAIM model file (format {blob.get('format') if isinstance(blob, dict) else None!r})"
        )
    config = parse_config(VAIMConfig, blob["config"], str(path))
    state = blob["state_dict"]
    model = VAIM(config, blob["n_observables"], state["y_mean"], state["y_std"])
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not fit the stored config: {err}") from err
    return model.to(state["encoder.inp.weight"].dtype).eval()
