"""MCMC sampling of DIS events (x, Q^2) from each window's unnormalised density, with score-function gradients.

:class:`DISMCMCSampler` stands in for a theory code that evaluates the cross section but has neither its integral
nor an inverse CDF: it only calls the tabulated density p(u, w) of a window (:mod:`physics.dis.table`), never its
integrals, and draws the events of one window for B parameter sets at once with random-walk Metropolis. It
mirrors the toy's one-dimensional :class:`physics.mcmc.MCMCSampler`:

- state: v = (logit((u - u0) / (u1 - u0)), logit(w)) in R^2, with u = ln Q^2 in the window's [u0, u1] and w in
  [0, 1] the cut-to-cut fraction of logit x, so the chains never leave the window; the target in v is
  p(u, w) |d(u, w) / dv| (the constant u1 - u0 dropped);
- ``ceil(n / samples_per_chain)`` chains per parameter set start from uniform (u, w): the base uniforms, two per
  chain, given as ``noise`` (their bits also seed the proposals, so common random numbers reproduce a draw);
- warm-up: ``warmup`` iterations of an isotropic Gaussian walk whose step size, one per parameter set, follows
  a Robbins-Monro recursion towards ``target_acceptance``; they are dropped and the step is frozen afterwards,
  so the kept states come from one fixed Metropolis kernel. The config's default, 0.44, is the optimum of a
  one-dimensional walk; in two dimensions the optimum is nearer 0.35, but efficiency is flat over 0.2-0.5, so
  the shared default serves both;
- thinning: every ``thin``-th state is kept; ``last_diagnostics`` holds the acceptance rate, step size and
  effective sample sizes (of ln Q^2 and of w) per parameter set of the last call.

Gradients. The states do not depend on theta. :meth:`DISMCMCSampler.sample_weighted` returns weights
w = exp(log p(e) - stop_gradient(log p(e))) at the kept states: value 1, gradient grad log p(e; theta), so a
self-normalised weighted mean sum w f / sum w has the gradient E[f grad log p] - E[f] E[grad log p] = grad E[f]
without the window's integral (the score-function estimator with its self-normalised baseline). The Jacobian
from (u, w) to (x, Q^2) does not depend on theta, so this is also the score of the density in (x, Q^2).

References:
    Metropolis et al., J. Chem. Phys. 21 (1953) 1087 (the random-walk algorithm);
    Roberts and Rosenthal, Stat. Sci. 16 (2001) 351 (optimal scaling and acceptance rates of random walks);
    Andrieu and Thoms, Stat. Comput. 18 (2008) 343 (adaptive MCMC, Robbins-Monro step sizes);
    Mohamed et al., "Monte Carlo gradient estimation in machine learning", JMLR 21 (2020) 132, sec. 4
    (score-function gradients).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.functional import logsigmoid

from physics.config import MCMCConfig
from physics.dis.experiment import DISExperiment
from physics.dis.sampling import WindowTables
from physics.dis.table import WindowGrid
from physics.mcmc import adaptive_walk, effective_sample_size
from physics.sampling import EventSampler

__all__ = ["DISMCMCSampler"]


def _to_uw(grid: WindowGrid, v: Tensor) -> tuple[Tensor, Tensor]:
    """(u, w) of chain states v [..., 2]."""
    u0, u1 = float(grid.u[0]), float(grid.u[-1])
    u = u0 + (u1 - u0) * torch.sigmoid(v[..., 0])
    return u.clamp(u0, u1), torch.sigmoid(v[..., 1])


def _log_target(grid: WindowGrid, values: Tensor, v: Tensor) -> Tensor:
    """The log target, log p(u, w) + log |d(u, w) / dv| up to a constant, at states v [B, C, 2]: [B, C]."""
    u, w = _to_uw(grid, v)
    density = grid.density(values, u, w)
    # A vanishing density (possible at a cut) gives -inf: such proposals are refused and such starts always left.
    log_p = torch.log(density.clamp_min(0.0))
    return log_p + (logsigmoid(v) + logsigmoid(-v)).sum(-1)


class DISMCMCSampler(EventSampler):
    """Random-walk Metropolis (x, Q^2) events of the experiment's windows, batched over parameter sets and chains.

    Args:
        experiment: the DIS experiment (only its windows' density values are used).
        config: chains, warm-up, thinning and the target acceptance (default :class:`MCMCConfig`).

    Example:
        >>> from physics.dis import DISConfig, DISExperiment
        >>> sampler = DISMCMCSampler(DISExperiment(DISConfig()))
        >>> theta = sampler.experiment.truth_tensor()
        >>> events, weights = sampler.sample_weighted(theta, 64, 0, generator=torch.Generator().manual_seed(0))
        >>> tuple(events.shape), tuple(weights.shape), tuple(sampler.last_diagnostics["acceptance"].shape)
        ((1, 64, 2), (1, 64), (1,))
    """

    weighted = True
    per_event_noise = False  # the uniforms start chains and seed the proposals
    has_log_prob = False
    noise_dim = 2
    event_dim = 2

    def __init__(self, experiment: DISExperiment, config: MCMCConfig | None = None) -> None:
        super().__init__()
        self.experiment = experiment
        self.dataset_names = list(experiment.names)
        self.config = config or MCMCConfig()
        self._tables = WindowTables(experiment)
        self.last_diagnostics: dict[str, Tensor] = {}
        self.last_states = 0

    def _check(self, theta: Tensor, n: int, name: str = "n") -> None:
        """Refuse parameters of the wrong shape and counts (``name``) below one."""
        d = len(self.experiment.parameter_names)
        if theta.ndim != 2 or theta.shape[1] != d:
            raise ValueError(f"theta must have shape [B, {d}], got {tuple(theta.shape)}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {n!r}")

    def _layout(self, n: int) -> tuple[int, int]:
        """Chains per parameter set and kept states per chain for n events."""
        n_chains = -(-n // self.config.samples_per_chain)
        return n_chains, -(-n // n_chains)

    def _run(
        self, values: Tensor, grid: WindowGrid, starts: Tensor, n_keep: int, generator: torch.Generator | None
    ) -> Tensor:
        """Chains from ``starts`` [B, C, 2] in (0, 1)^2 under vertex values [B, R+1, C+1]: (u, w) [B, C, K, 2]."""
        dtype, device = values.dtype, values.device
        eps = torch.finfo(dtype).eps
        s = starts.clamp(eps, 1 - eps)
        v = torch.log(s) - torch.log1p(-s)

        def move(v: Tensor, log_p: Tensor, log_step: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            step = torch.exp(log_step)[..., None]
            proposal = v + step * torch.randn(v.shape, generator=generator, dtype=dtype, device=device)
            log_q = _log_target(grid, values, proposal)
            log_r = torch.log(torch.rand(log_p.shape, generator=generator, dtype=dtype, device=device))
            accept = log_r < log_q - log_p
            return torch.where(accept[..., None], proposal, v), torch.where(accept, log_q, log_p), accept

        states, accepted, log_step = adaptive_walk(move, v, _log_target(grid, values, v), n_keep, self.config)
        u, w = _to_uw(grid, states)
        diag = {"acceptance": accepted / (n_keep * self.config.thin), "step_size": torch.exp(log_step)}
        if n_keep >= 4:
            ess_u, ess_w = effective_sample_size(u), effective_sample_size(w)
            diag.update(ess=torch.minimum(ess_u, ess_w), ess_u=ess_u, ess_w=ess_w)
        self.last_diagnostics, self.last_states = diag, u.shape[1] * u.shape[2]
        return torch.stack([u, w], dim=-1)

    def chains(
        self,
        theta: Tensor,
        n_chains: int,
        n_keep: int,
        dataset: int | str,
        *,
        generator: torch.Generator | None = None,
        starts: Tensor | None = None,
    ) -> Tensor:
        """Run ``n_chains`` chains per parameter set; their kept states in (u, w), [B, C, K, 2] (no gradient).

        Args:
            theta: parameter sets, [B, D].
            n_chains: chains per parameter set, C.
            n_keep: kept (thinned) states per chain, K.
            dataset: dataset index or name.
            generator: random generator (on theta's device) for the starts, proposals and accept tests.
            starts: starting (u, w) as uniforms in (0, 1)^2, [B, C, 2] (default: drawn from ``generator``).

        Raises:
            ValueError: an unknown dataset, theta of the wrong shape, counts below one or starts of another shape.
        """
        j = self.dataset_index(dataset)
        self._check(theta, n_chains, "n_chains")
        self._check(theta, n_keep, "n_keep")
        b, dtype, device = theta.shape[0], theta.dtype, theta.device
        if starts is None:
            starts = torch.rand(b, n_chains, 2, generator=generator, dtype=dtype, device=device)
        elif tuple(starts.shape) != (b, n_chains, 2):
            raise ValueError(f"starts must have shape {(b, n_chains, 2)}, got {tuple(starts.shape)}")
        with torch.no_grad():
            values = self.experiment.vertex_values(theta.detach(), only=j)[0]
            return self._run(values, self.experiment.grids[j], starts.to(dtype=dtype, device=device), n_keep, generator)

    def _states(self, theta: Tensor, n: int, j: int, generator: torch.Generator | None, noise: Tensor | None) -> Tensor:
        """The first n kept states (u, w) of every parameter set, [B, n, 2], interleaved across chains."""
        b = theta.shape[0]
        n_chains, n_keep = self._layout(n)
        starts = None
        if noise is not None:
            noise = self.base_noise(b, n, None, noise, theta)
            starts = noise[:, :n_chains]
            # Noise bits seed the walk, so the same base uniforms give the same events (common random numbers).
            seed = int(torch.sum(noise.double() * 2.0**40).remainder(2.0**62).item())
            generator = torch.Generator(device=theta.device).manual_seed(seed)
        uw = self.chains(theta, n_chains, n_keep, j, generator=generator, starts=starts)
        # Event i takes state i // C of chain i % C: any first n events spread over all chains.
        return uw.transpose(1, 2).reshape(b, -1, 2)[:, :n].contiguous()

    def _events(self, j: int, uw: Tensor) -> Tensor:
        """(x, Q^2) [B, n, 2] of states (u, w) [B, n, 2]."""
        x, q2, _ = self.experiment.grids[j].to_xq2(uw[..., 0], uw[..., 1])
        return torch.stack([x, q2], dim=-1)

    def sample_weighted(
        self,
        theta: Tensor,
        n: int,
        dataset: int | str,
        *,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Draw n events of ``dataset`` per parameter set, with score weights.

        Args:
            theta: parameter sets, [B, D].
            n: events per parameter set.
            dataset: dataset index or name.
            generator: random generator (on theta's device).
            noise: base uniforms [B, n, 2] instead of fresh draws: the first ceil(n / samples_per_chain) start the
                chains, and all of them seed the walk.

        Returns:
            Events [B, n, 2] (x, Q^2; no gradient) and weights [B, n] (value 1, gradient grad log p(e; theta)).

        Raises:
            ValueError: an unknown dataset, theta of the wrong shape, n < 1 or noise of another shape.
        """
        j = self.dataset_index(dataset)
        self._check(theta, n)
        uw = self._states(theta, n, j, generator, noise)
        values = self._tables(theta, j)
        log_p = torch.log(self.experiment.grids[j].density(values, uw[..., 0], uw[..., 1]))
        return self._events(j, uw), torch.exp(log_p - log_p.detach())

    def sample(
        self,
        theta: Tensor,
        n: int,
        dataset: int | str,
        *,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """Events [B, n, 2] (x, Q^2), values only: gradients come from :meth:`sample_weighted`'s weights.

        Raises:
            ValueError: as :meth:`sample_weighted`.
        """
        j = self.dataset_index(dataset)
        self._check(theta, n)
        return self._events(j, self._states(theta, n, j, generator, noise))
