"""MCMC event sampling from the unnormalised sigma(x; theta), with score-function gradients.

Real theory codes evaluate sigma but have neither its integral nor an inverse CDF. :class:`MCMCSampler` draws the
events of one dataset for B parameter sets at once with random-walk Metropolis:

- state: v = logit((x - x_min) / (x_max - x_min)), so the chains move on the real line and never leave the range;
  the target in v is sigma(x) dx/dv;
- ``ceil(n / samples_per_chain)`` chains per parameter set start from uniform x (the base uniforms given as
  ``noise``, so common random numbers reproduce a draw);
- warm-up: ``warmup`` iterations in which each parameter set's step size follows a Robbins-Monro recursion
  towards ``target_acceptance`` (0.44, the optimum of a one-dimensional random walk); they are dropped, and the
  step size is frozen afterwards so that the kept states come from a fixed Metropolis kernel;
- thinning: every ``thin``-th state is kept; ``last_diagnostics`` holds the acceptance rate, step size and the
  effective sample size per parameter set of the last call.

Gradients. The states are not differentiable in theta. With p = sigma / I,

    grad E_p[f] = E_p[(f - b) grad log sigma] - E_p[f - b] E_p[grad log sigma]   for any constant b,

which needs neither I nor a CDF. :meth:`MCMCSampler.sample_weighted` returns the events with weights
w = exp(log sigma(x) - stop_gradient(log sigma(x))): their value is 1 and their gradient grad log sigma(x), so a
self-normalised weighted mean sum w f / sum w has exactly this gradient (its estimator is also invariant to b,
the self-normalised baseline). The inverse GAN uses its weighted losses with any weighted sampler.

References:
    Metropolis et al., J. Chem. Phys. 21 (1953) 1087; Roberts, Gelman and Gilks, Ann. Appl. Probab. 7 (1997) 110
    and Roberts and Rosenthal, Stat. Sci. 16 (2001) 351 (the 0.44 acceptance in one dimension);
    Andrieu and Thoms, Stat. Comput. 18 (2008) 343 (adaptive MCMC, Robbins-Monro step sizes);
    Sokal, "Monte Carlo methods in statistical mechanics" (1997), sec. 3 (integrated autocorrelation time);
    Mohamed et al., "Monte Carlo gradient estimation in machine learning", JMLR 21 (2020) 132, sec. 4.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.nn.functional import logsigmoid

from physics.config import DatasetSpec, MCMCConfig
from physics.sampling import EventSampler
from physics.theory import Terms, Theory, terms_log_density

__all__ = ["MCMCSampler", "adaptive_walk", "effective_sample_size", "integrated_autocorrelation_time"]


def integrated_autocorrelation_time(chains: Tensor, window_factor: float = 5.0) -> Tensor:
    """Integrated autocorrelation time tau of chains [..., C, K] (C chains of K states), per leading index.

    The autocovariance is averaged over the chains around their pooled mean (FFT), and the sum
    tau = 1 + 2 sum_{t>=1} rho_t is cut at the first window M >= ``window_factor`` tau(M) (Sokal's automatic
    window), which keeps the estimate's variance ~ M / K small while its bias is ~exp(-M / tau).
    """
    k = chains.shape[-1]
    centred = chains - chains.mean(dim=(-2, -1), keepdim=True)
    size = 1 << (2 * k - 1).bit_length()
    spectrum = torch.fft.rfft(centred, n=size, dim=-1)
    acov = torch.fft.irfft(spectrum * spectrum.conj(), n=size, dim=-1)[..., :k].mean(-2)
    rho = acov / acov[..., :1].clamp_min(torch.finfo(acov.dtype).tiny)
    taus = 2.0 * rho.cumsum(-1) - 1.0  # tau(M) = 1 + 2 sum_{t=1}^{M} rho_t
    lags = torch.arange(k, device=chains.device, dtype=chains.dtype)
    ok = lags >= window_factor * taus
    first = torch.where(ok.any(-1), ok.float().argmax(-1), torch.full_like(ok[..., 0], k - 1, dtype=torch.long))
    return taus.gather(-1, first.unsqueeze(-1)).squeeze(-1).clamp_min(1.0 / k)


def effective_sample_size(chains: Tensor) -> Tensor:
    """C K / tau for chains [..., C, K]."""
    return chains.shape[-2] * chains.shape[-1] / integrated_autocorrelation_time(chains)


def adaptive_walk(
    move: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]],
    v: Tensor,
    log_p: Tensor,
    n_keep: int,
    config: MCMCConfig,
) -> tuple[Tensor, Tensor, Tensor]:
    """Random-walk chains: ``config.warmup`` Robbins-Monro iterations of the step size, then thinned states.

    Args:
        move: one Metropolis transition (states, log target, log step [B, 1]) -> (states, log target, accepted),
            for states [B, C, ...] (B parameter sets of C chains).
        v: starting states.
        log_p: the log target at ``v``.
        n_keep: kept states per chain, each ``config.thin`` transitions apart.
        config: warm-up, thinning and the target acceptance.

    Returns:
        Kept states [B, C, K, ...], the per-transition acceptance rates summed over the kept transitions [B] and the
        frozen log step sizes [B].
    """
    b, dtype, device = v.shape[0], v.dtype, v.device
    # About the scale of the target in a logit coordinate (a logistic when the density is flat).
    log_step = torch.full((b, 1), math.log(2.0), dtype=dtype, device=device)
    for t in range(config.warmup):
        v, log_p, accept = move(v, log_p, log_step)
        rate = accept.to(dtype).mean(-1, keepdim=True)
        log_step = log_step + 2.0 * (rate - config.target_acceptance) / (t + 1.0) ** 0.6
    kept, accepted = [], torch.zeros(b, dtype=dtype, device=device)
    for _ in range(n_keep):
        for _ in range(config.thin):
            v, log_p, accept = move(v, log_p, log_step)
            accepted = accepted + accept.to(dtype).mean(-1)
        kept.append(v)
    return torch.stack(kept, dim=2), accepted, log_step[:, 0]


class MCMCSampler(EventSampler):
    """Random-walk Metropolis event sampler of the datasets, batched over parameter sets and chains.

    Args:
        theory: the PDFs and observables (only sigma's values are used).
        datasets: the datasets (observable and x range of each).
        config: chains, warm-up, thinning and the target acceptance.

    Example:
        >>> from physics.config import PhysicsConfig, MCMCConfig
        >>> cfg = PhysicsConfig()
        >>> sampler = MCMCSampler(Theory(cfg), cfg.datasets, MCMCConfig())
        >>> x = sampler.sample(Theory(cfg).truth_tensor(), 1000, 0, generator=torch.Generator().manual_seed(0))
        >>> tuple(x.shape), tuple(sampler.last_diagnostics["acceptance"].shape)
        ((1, 1000), (1,))
    """

    weighted = True
    per_event_noise = False  # the uniforms start chains and seed the proposals

    def __init__(self, theory: Theory, datasets: Sequence[DatasetSpec], config: MCMCConfig | None = None) -> None:
        super().__init__()
        self.theory = theory
        self.datasets = list(datasets)
        self.dataset_names = [d.name for d in self.datasets]
        self.config = config or MCMCConfig()
        self.last_diagnostics: dict[str, Tensor] = {}
        self.last_states = 0

    def _coordinates(self, v: Tensor, spec: DatasetSpec) -> tuple[Tensor, Tensor, Tensor]:
        """x, log x and log(1 - x) at chain states v, keeping 1 - x exact near x = 1."""
        span = spec.x_max - spec.x_min
        log_s, log_1ms = logsigmoid(v), logsigmoid(-v)
        x = spec.x_min + span * torch.exp(log_s)
        if spec.x_max == 1.0:
            log_1mx = math.log(span) + log_1ms
        else:
            log_1mx = torch.logaddexp(torch.full_like(v, math.log1p(-spec.x_max)), math.log(span) + log_1ms)
        return x, torch.log(x), log_1mx

    def _log_target(self, terms: Terms, v: Tensor, spec: DatasetSpec) -> Tensor:
        _, log_x, log_1mx = self._coordinates(v, spec)
        return terms_log_density(terms, log_x, log_1mx) + logsigmoid(v) + logsigmoid(-v)

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
        """Run ``n_chains`` chains per parameter set and return their kept states as x, [B, C, K] (no gradient).

        Args:
            theta: parameter sets, [B, D].
            n_chains: chains per parameter set, C.
            n_keep: kept (thinned) states per chain, K.
            dataset: dataset index or name.
            generator: random generator for the proposals and accept tests.
            starts: starting uniforms in (0, 1), [B, C] (default: drawn from ``generator``).
        """
        cfg = self.config
        j = self.dataset_index(dataset)
        spec = self.datasets[j]
        theta = self.theory.check_theta(theta).detach()
        b, dtype, device = theta.shape[0], theta.dtype, theta.device
        terms = self.theory.terms(theta, spec.observable).normalized()
        if starts is None:
            starts = torch.rand(b, n_chains, generator=generator, dtype=dtype, device=device)
        eps = torch.finfo(dtype).eps
        u0 = starts.to(dtype).clamp(eps, 1 - eps)
        v = torch.log(u0) - torch.log1p(-u0)
        log_p = self._log_target(terms, v, spec)

        def move(v: Tensor, log_p: Tensor, log_step: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            proposal = v + torch.exp(log_step) * torch.randn(v.shape, generator=generator, dtype=dtype, device=device)
            log_q = self._log_target(terms, proposal, spec)
            log_u = torch.log(torch.rand(v.shape, generator=generator, dtype=dtype, device=device))
            accept = log_u < log_q - log_p
            return torch.where(accept, proposal, v), torch.where(accept, log_q, log_p), accept

        with torch.no_grad():
            states, accepted, log_step = adaptive_walk(move, v, log_p, n_keep, cfg)
            x = self._coordinates(states, spec)[0].clamp(spec.x_min, spec.x_max)
        diag = {
            "acceptance": accepted / max(n_keep * cfg.thin, 1),
            "step_size": torch.exp(log_step),
        }
        if n_keep >= 4:
            diag["ess"] = effective_sample_size(states)
        self.last_diagnostics, self.last_states = diag, n_chains * n_keep
        return x

    def sample_weighted(
        self,
        theta: Tensor,
        n: int,
        dataset: int | str,
        *,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Events [B, n] (no gradient) and score weights [B, n] (value 1, gradient grad log sigma(x; theta))."""
        j = self.dataset_index(dataset)
        theta = self.theory.check_theta(theta)
        b = theta.shape[0]
        per_chain = self.config.samples_per_chain
        n_chains = -(-n // per_chain)
        n_keep = -(-n // n_chains)
        starts = None
        if noise is not None:
            if noise.shape != (b, n):
                raise ValueError(f"noise must have shape {(b, n)}, got {tuple(noise.shape)}")
            # The uniforms start the chains; their bits seed the rest, so the same noise gives the same events.
            starts = noise[:, :n_chains]
            seed = int(torch.sum(noise.detach().double() * (2.0**40)).remainder(2.0**62).item())
            generator = torch.Generator(device=theta.device).manual_seed(seed)
        x = self.chains(theta, n_chains, n_keep, j, generator=generator, starts=starts)
        # Interleave so that the first n events take every chain's first kept state, then the second, ...
        x = x.transpose(1, 2).reshape(b, -1)[:, :n].contiguous()
        spec = self.datasets[j]
        log_sigma = terms_log_density(self.theory.terms(theta, spec.observable), torch.log(x), torch.log1p(-x))
        weights = torch.exp(log_sigma - log_sigma.detach())
        return x, weights

    def sample(
        self,
        theta: Tensor,
        n: int,
        dataset: int | str,
        *,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """Events [B, n] (values only; gradients come from :meth:`sample_weighted`'s weights)."""
        return self.sample_weighted(theta, n, dataset, generator=generator, noise=noise)[0]
