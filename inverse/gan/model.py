"""The GAN inverse solver: R bootstrap replicas of a parameter generator against per-dataset discriminators.

Each replica r fits its own Poisson-bootstrap copy of the data (weights k ~ Poisson(1) per event, the Monte Carlo
replica method of NNPDF): its generator proposes parameters, the event sampler (exact inverse CDF, MCMC or a
surrogate, through the ``physics.EventSampler`` interface; :mod:`inverse.gan.sampler`) turns them into events, and
its discriminators compare those with the replica's data. The spread of the replicas' estimates is the
uncertainty. All replicas live in one model (``inverse.stacked``) and are evaluated in chunks of
``training.replica_chunk``; the events each process uses in a step come from :mod:`inverse.gan.batches`.

References:
    Kaji, Manresa & Pouliot, arXiv:2007.06169 (adversarial estimation); NNPDF, arXiv:2109.02653 (replicas).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from functools import partial

import torch
from torch import Tensor, nn

from inverse.gan.batches import StepBatches
from inverse.gan.config import GANConfig
from inverse.gan.losses import GENERATOR_WEIGHT, discriminator_loss, generator_loss, gradient_penalty, rate_loss
from inverse.gan.models import (
    EventDiscriminators,
    ParameterGenerator,
    basis_degree,
    basis_size,
    event_features,
    monomials,
    whitening,
)
from inverse.gan.sampler import Generated, build_sampler, learned_experiment
from inverse.stacked import replica_generator
from physics.datasets import Experiment
from physics.likelihood import fisher_information
from physics.pseudodata import EventData, poisson_replica_weights
from physics.quasirandom import rotated, sobol_points
from physics.sampling import EventSampler

__all__ = ["CPU_CHUNK", "InverseGAN"]

CPU_CHUNK = 25


def _checked_replicas(
    config: GANConfig, experiment: Experiment, data: EventData, sampler: EventSampler, replicas: Sequence[int] | None
) -> list[int]:
    """The replica indices, after checking that sampler, data and experiment fit together."""
    if list(sampler.dataset_names) != experiment.names:
        raise ValueError(f"sampler datasets {sampler.dataset_names} differ from {experiment.names}")
    if list(data.names) != experiment.names:
        raise ValueError(f"data datasets {data.names} differ from the experiment's {experiment.names}")
    if sampler.event_dim > 1 and config.discriminator.set_size > 1:
        raise ValueError(f"discriminator.set_size: {sampler.event_dim}-dimensional events need set_size 1")
    if sampler.weighted and config.discriminator.set_size > 1:
        raise ValueError(
            "discriminator.set_size: weighted generated events (sampler mcmc, or a detector) need set_size 1"
        )
    empty = [n for n, c in zip(data.names, data.counts) if c == 0]
    if empty:
        raise ValueError(f"datasets {empty} have zero events: nothing to fit (check the case's event counts)")
    ids = list(range(config.training.replicas)) if replicas is None else [int(r) for r in replicas]
    if not ids or min(ids) < 0 or len(set(ids)) != len(ids):
        raise ValueError(f"replicas must be distinct non-negative indices, got {ids}")
    return ids


def _moments(feats: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation of features [N, F] over the events (sd 1 for a single event, floored)."""
    std = feats.std(0).clamp_min(1e-6) if len(feats) > 1 else torch.ones_like(feats[0])
    return feats.mean(0), std


def _half_ranges(feats: Tensor) -> tuple[Tensor, Tensor]:
    """Centre and half-width of the features' range over the events [N, F] (half-width 1 for a single event)."""
    low, high = feats.min(0).values, feats.max(0).values
    half = ((high - low) / 2).clamp_min(1e-6) if len(feats) > 1 else torch.ones_like(feats[0])
    return (low + high) / 2, half


class InverseGAN(StepBatches, nn.Module):
    """Generator, discriminators, data and bootstrap weights of R replicas, and their losses.

    Args:
        config: the GAN settings.
        experiment: datasets, luminosities and theory (for the rate term).
        data: the measured events, one array per dataset in the experiment's order.
        sampler: event sampler (default: the one ``config.sampler`` names, the exact inverse-CDF sampler unless
            a surrogate file is given).
        replicas: which replica indices to hold (default ``range(config.training.replicas)``); replica r has the
            same seeds, weights and initialization whatever the others are.
        dataset_mask: which datasets each replica fits, [R, J] or [J] of 0/1 (default: all). A k-fold fit
            (``hpo.kfold``) masks its held-out datasets: their discriminator, adversarial and rate terms and their
            part of the natural-gradient metric are multiplied by 0, so every replica keeps the same shapes
            and several folds train in one model.

    Raises:
        ValueError: datasets do not match, a dataset has no events, replica indices are invalid, or a replica's
            mask leaves no dataset to fit.
    """

    def __init__(
        self,
        config: GANConfig,
        experiment: Experiment,
        data: EventData,
        sampler: EventSampler | None = None,
        replicas: Sequence[int] | None = None,
        dataset_mask: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.experiment = experiment
        t = config.training
        self.sampler = sampler if sampler is not None else build_sampler(config.sampler, experiment)
        # A flow with learned counts brings its own rate term and Fisher matrix: the fit then calls no theory.
        experiment = self.experiment = learned_experiment(self.sampler, experiment)
        self.weighted = self.sampler.weighted
        if t.uniforms == "sobol" and not self.sampler.per_event_noise:
            raise ValueError(
                f"gan.training.uniforms: sobol needs a sampler that maps each event's own uniforms to the event; "
                f"{type(self.sampler).__name__}'s uniforms start chains and seed proposals (use uniforms: random)"
            )
        ids = self.replica_ids = _checked_replicas(config, experiment, data, self.sampler, replicas)
        self.n_datasets = len(data.names)
        mean, std, basis = self._register_data(data, ids)
        self._register_mask(dataset_mask, len(ids))
        theory = experiment.theory
        self.generator = ParameterGenerator(config.generator, theory.low, theory.high, ids, t.seed)
        self.discriminators = EventDiscriminators(
            config.discriminator, mean, std, ids, t.seed, self.sampler.event_dim, basis
        )
        self.register_buffer("step_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("theta_history", torch.zeros(t.steps, len(ids), theory.n_params))
        self.register_buffer("loss_history", torch.zeros(t.steps, len(ids), 2))
        self._rngs: list[torch.Generator] | None = None
        self._pending_rng: list[Tensor] | None = None
        self.rank, self.world = 0, 1
        self.to(getattr(torch, t.dtype))

    def _register_data(self, data: EventData, ids: list[int]) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
        """Buffers of the events, the replicas' bootstrap weights and counts.

        Returns:
            The centre and scale of the data's features [J, F] (mean and standard deviation; with
            ``discriminator.degree > 1`` the centre and half-width of their range), and with ``degree > 1`` the
            whitening of the scaled features' monomials, ([J, K], [J, K, K]).
        """
        t = self.config.training
        if t.bootstrap:
            weights = poisson_replica_weights(data.counts, max(ids) + 1, seed=t.seed)
        else:
            weights = [torch.ones(max(ids) + 1, c, dtype=torch.float64) for c in data.counts]
        index = torch.tensor(ids)
        degree = self.config.discriminator.degree
        moments: list[list[tuple[Tensor, Tensor]]] = [[], []]
        for j, x in enumerate(data.events):
            xt = torch.as_tensor(x, dtype=torch.float64)
            self.register_buffer(f"data_{j}", xt, persistent=False)
            self.register_buffer(f"weights_{j}", weights[j][index], persistent=False)
            feats = event_features(xt, self.config.discriminator.features, self.sampler.event_dim)
            moments[0].append(_moments(feats) if degree == 1 else _half_ranges(feats))
            if degree > 1:
                z = (feats - moments[0][-1][0]) / moments[0][-1][1]
                d = self.config.discriminator
                used = basis_size(z.shape[-1], basis_degree(len(z), z.shape[-1], degree, d.basis_events))
                moments[1].append(whitening(monomials(z, degree), d.basis_cutoff, used))
        self.register_buffer("observed", torch.stack([w[index].sum(-1) for w in weights], -1), persistent=False)
        mean, std = (torch.stack(m) for m in zip(*moments[0]))
        basis = tuple(torch.stack(m) for m in zip(*moments[1])) if degree > 1 else None
        return mean, std, basis

    def _register_mask(self, dataset_mask: Tensor | None, n_replicas: int) -> None:
        mask = torch.ones(n_replicas, self.n_datasets) if dataset_mask is None else torch.as_tensor(dataset_mask)
        mask = mask.to(torch.float64).expand(n_replicas, self.n_datasets).clone()
        if not bool(((mask == 0) | (mask == 1)).all()) or bool((mask.sum(-1) == 0).any()):
            raise ValueError("dataset_mask: each entry must be 0 or 1, and every replica must fit at least one dataset")
        self.register_buffer("fit_mask", mask, persistent=False)

    # -- bookkeeping ----------------------------------------------------------------------------------------
    @property
    def n_replicas(self) -> int:
        """R."""
        return len(self.replica_ids)

    def chunks(self) -> list[slice]:
        """Replica slices evaluated in one pass each."""
        size = self.config.training.replica_chunk
        if size == 0:
            # Auto: a GPU takes every replica in one pass; on a CPU, passes of 25 keep memory flat in R and were
            # as fast as one pass at R = 100 (benchmarks/replicas.py, 4096 events: 0.55 against 0.57 s per step).
            size = self.n_replicas if self.generator.offset.device.type != "cpu" else CPU_CHUNK
        return [slice(a, min(a + size, self.n_replicas)) for a in range(0, self.n_replicas, size)]

    def data(self, j: int) -> Tensor:
        """Events of dataset j, [N_j]."""
        return getattr(self, f"data_{j}")

    def weights(self, j: int) -> Tensor:
        """Bootstrap multiplicities of dataset j's events per replica, [R, N_j]."""
        return getattr(self, f"weights_{j}")

    def rngs(self) -> list[torch.Generator]:
        """One random generator per replica, on the model's device (created on first use)."""
        device = self.generator.offset.device
        if self._rngs is None or self._rngs[0].device != device:
            seed = self.config.training.seed
            self._rngs = [replica_generator(seed, r, "train", device) for r in self.replica_ids]
            if self._pending_rng is not None:
                for g, state in zip(self._rngs, self._pending_rng):
                    g.set_state(state)
                self._pending_rng = None
        return self._rngs

    def rng_state(self) -> list[Tensor]:
        """States of the replicas' generators (for checkpoints)."""
        return [g.get_state() for g in self.rngs()]

    def set_rng_state(self, states: list[Tensor]) -> None:
        """Restore the replicas' generators (applied when they are next used)."""
        if len(states) != self.n_replicas:
            raise ValueError(f"checkpoint holds {len(states)} replica generators, the model has {self.n_replicas}")
        self._rngs = None
        self._pending_rng = [s.cpu() for s in states]

    # -- simulation -----------------------------------------------------------------------------------------
    def _draw(self, replicas: slice) -> tuple[Tensor, list[Tensor]]:
        """Generator noise [r, B, noise_dim] and this process's sampler uniforms [r, B, n / world] per dataset."""
        t = self.config.training
        like = self.generator.offset
        noise, uniforms = [], [[] for _ in range(self.n_datasets)]
        # The exact sampler takes one uniform per event; a surrogate may take several (a VAE's latent + noise).
        extra = (self.sampler.noise_dim,) if self.sampler.noise_dim > 1 else ()
        shape = (t.params_per_step, t.events_per_param, *extra)
        own = self._block(t.events_per_param)
        base = None
        # The order of the points matters only where events are grouped in sets or split between processes.
        shuffle = self.config.discriminator.set_size > 1 or self.world > 1
        if t.uniforms == "sobol":
            base = sobol_points(t.events_per_param, self.sampler.noise_dim, like.dtype, like.device)
        for g in self.rngs()[replicas]:
            noise.append(self.generator.draw_noise(t.params_per_step, g))
            for j in range(self.n_datasets):
                if base is None:
                    u = torch.rand(shape, generator=g, dtype=like.dtype, device=like.device)
                else:
                    u = rotated(base, t.params_per_step, g, shuffle).reshape(shape)
                uniforms[j].append(u[:, own])
        return torch.stack(noise), [torch.stack(u) for u in uniforms]

    def simulate(self, theta: Tensor, uniforms: list[Tensor]) -> list[Generated]:
        """Events of every dataset for parameters [r, B, D], from the sampler's base uniforms.

        A weighted sampler (MCMC, a detector) returns m events with weights per parameter set; the others n events.
        """
        r, b, d = theta.shape
        flat = theta.reshape(r * b, d)
        n = uniforms[0].shape[2]
        out = []
        for j, u in enumerate(uniforms):
            noise = u.reshape(r * b, *u.shape[2:])
            if self.weighted:
                x, w = self.sampler.sample_weighted(flat, n, j, noise=noise)
                out.append(Generated(x.reshape(r, b, -1, *x.shape[2:]), w.reshape(r, b, -1)))
            else:
                events = self.sampler.sample(flat, n, j, noise=noise)
                out.append(Generated(events.reshape(r, b, n, *events.shape[2:]), None))
        return out

    @staticmethod
    def _set_weights(w: Tensor | None) -> Tensor | None:
        """[r, B, m] event weights -> [r, B m] weights normalized per parameter set, averaged over the B sets.

        On a data-parallel process the normalization is over its own block of events (a consistent estimate of
        the one-process weighted mean, not bit-identical to it).
        """
        if w is None:
            return None
        total = w.sum(-1, keepdim=True)
        normalized = w / torch.where(total > 0, total, torch.ones_like(total)) / w.shape[1]
        return normalized.reshape(w.shape[0], -1)

    @torch.no_grad()
    def simulate_detached(self, replicas: slice) -> list[Generated]:
        """Fresh generated events (no gradient) for extra discriminator updates."""
        noise, uniforms = self._draw(replicas)
        with self._shared_tables():
            return self.simulate(self.generator(noise, replicas), uniforms)

    # -- losses ---------------------------------------------------------------------------------------------
    def generator_loss(self, replicas: slice) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Generator objective per replica on fresh events.

        Returns:
            (losses [r], parameters used [r, B, D] (detached), generated events per dataset (detached)).
        """
        noise, uniforms = self._draw(replicas)
        theta = self.generator(noise, replicas)
        total, events = self.objective(theta, uniforms, replicas)
        return total, theta.detach(), [e.detach() for e in events]

    def objective_at(self, theta: Tensor, replicas: slice) -> tuple[Tensor, list[Generated]]:
        """The generator objective per replica [r] at given parameters [r, B, D], on fresh events.

        Its gradient in theta is the adversarial estimate of -grad log L (extended likelihood of each replica's
        weighted data) where the discriminators are optimal; a posterior sampler moves chains with it.
        """
        _, uniforms = self._draw(replicas)
        return self.objective(theta, uniforms, replicas)

    def objective(self, theta: Tensor, uniforms: list[Tensor], replicas: slice) -> tuple[Tensor, list[Generated]]:
        """Adversarial terms plus the rate term per replica, [r], for parameters [r, B, D] and sampler uniforms."""
        loss_cfg = self.config.loss
        k = self.config.discriminator.set_size
        observed = self.observed[replicas]
        mask = self.fit_mask[replicas]
        weight = GENERATOR_WEIGHT[loss_cfg.kind] / k
        total = theta.new_zeros(theta.shape[0])
        with self._shared_tables():  # the sampler's windows and the rate term evaluate the theory once
            events = self.simulate(theta, uniforms)
            for j, (x, w) in enumerate(events):
                out = self.discriminators(self._generated_sets(x), j, replicas)
                per_event = generator_loss(loss_cfg.kind, out, loss_cfg.logit_clip, self._set_weights(w))
                total = total + mask[:, j] * weight * observed[:, j] * per_event
            if loss_cfg.rate:
                r, b, d = theta.shape
                expected = self.experiment.expected_counts(theta.reshape(r * b, d)).reshape(r, b, -1)
                total = total + rate_loss(expected, observed, mask)
        return total, events

    def _shared_tables(self) -> AbstractContextManager:
        """The experiment's scope for reusing theory tables within one step (none for an experiment without)."""
        scope = getattr(self.experiment, "sharing_tables", None)
        return scope() if scope is not None else nullcontext()

    def discriminator_loss(self, events: list[Generated], replicas: slice) -> Tensor:
        """Discriminator objective per replica, [r], on generated events per dataset."""
        mask = self.fit_mask[replicas]
        total = events[0].x.new_zeros(events[0].x.shape[0])
        for j, generated in enumerate(events):
            term = self._dataset_discriminator_loss(j, generated, replicas)
            total = total + mask[:, j] * term
        return total

    def _dataset_discriminator_loss(self, j: int, generated: Generated, replicas: slice) -> Tensor:
        """Discriminator j's objective per replica, [r], on generated events [r, B, m]."""
        loss_cfg = self.config.loss
        x = generated.x
        fake_sets = self._generated_sets(x)
        fake = self.discriminators(fake_sets, j, replicas)
        real_sets, real_weights = self._data_sets(j, replicas)
        real = self.discriminators(real_sets, j, replicas)
        total = discriminator_loss(loss_cfg.kind, real, fake, real_weights, self._set_weights(generated.w))
        if loss_cfg.kind == "wgan_gp" and loss_cfg.gp_weight > 0:
            # One penalty point per generated set of the whole step, drawn in full on every process (shared streams);
            # this process keeps the points paired with its own generated sets.
            n_sets = fake_sets.shape[1] * self.world
            own = self._generated_set_index(x.device)
            real_gp = self._sampled_data_sets(j, replicas, n_sets, own)
            mix = torch.stack(
                [torch.rand(n_sets, 1, generator=g, dtype=x.dtype, device=x.device)[own] for g in self.rngs()[replicas]]
            )
            critic = lambda s, j=j: self.discriminators(s, j, replicas)  # noqa: E731
            total = total + loss_cfg.gp_weight * gradient_penalty(critic, real_gp, fake_sets, mix)
        return total

    def natural_metric(self) -> Tensor:
        """Each replica's expected Fisher matrix in the generator's pre-sigmoid coordinates phi, [R, D, D].

        I_phi = J I(theta) J with J = d theta / d phi (point generator), for ``inverse.gan.natural``.
        """
        phi = self.generator.offset.detach()[:, 0, :]
        theta = self.generator.to_box(phi).double()
        # An experiment may bring its own Fisher matrix (DIS); the toy's comes from physics.likelihood.
        fisher = getattr(self.experiment, "fisher_information", None) or partial(fisher_information, self.experiment)
        with torch.enable_grad():
            info = fisher(theta, self.fit_mask.to(theta)).to(phi.dtype)
        jac = self.generator.box_jacobian(phi)
        return jac[:, :, None] * info * jac[:, None, :]

    # -- results --------------------------------------------------------------------------------------------
    def record(self, theta: Tensor, g_loss: Tensor, d_loss: Tensor) -> None:
        """Store this step's parameters (mean over the B sets) and losses, and advance the step counter."""
        s = int(self.step_count)
        if s < self.theta_history.shape[0]:
            self.theta_history[s] = theta.mean(1).to(self.theta_history.dtype)
            self.loss_history[s, :, 0] = g_loss.to(self.loss_history.dtype)
            self.loss_history[s, :, 1] = d_loss.to(self.loss_history.dtype)
        self.step_count += 1

    @torch.no_grad()
    def current_theta(self, n_draws: int = 4096, seed: int = 0) -> Tensor:
        """Mean generated parameters per replica now, [R, D] (exact for a point-mass generator)."""
        if self.generator.noise_dim == 0:
            noise = self.generator.offset.new_zeros(self.n_replicas, 1, 0)
        else:
            g = torch.Generator(device=self.generator.offset.device).manual_seed(seed)
            noise = torch.stack([self.generator.draw_noise(n_draws, g) for _ in range(self.n_replicas)])
        return self.generator(noise).mean(1)

    def estimates(self) -> Tensor:
        """Each replica's estimate, [R, D]: the mean over the last ``training.polyak`` fraction of steps.

        Polyak-Ruppert averaging removes the step-to-step noise of stochastic updates (Polyak & Juditsky 1992).
        """
        s = min(int(self.step_count), self.theta_history.shape[0])
        n_avg = int(s * self.config.training.polyak)
        if n_avg < 1:
            return self.current_theta()
        return self.theta_history[s - n_avg : s].mean(0)
