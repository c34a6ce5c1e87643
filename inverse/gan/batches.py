"""The events of one training step: this process's share of the generated and of the data's sets.

Every process draws the full step's random numbers from the replicas' shared streams (so all streams stay in step)
and keeps its own contiguous block of each parameter set's events, of the sampled data sets and of the
bootstrap-weighted data (data parallelism, ``training.devices x training.num_nodes > 1``). One process keeps
everything. :class:`StepBatches` is a mixin of :class:`inverse.gan.model.InverseGAN`, which provides ``config``,
``data(j)``, ``weights(j)`` and ``rngs()``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["StepBatches"]


class StepBatches:
    """Which generated sets and data sets a process uses in a step, and with which weights."""

    rank: int = 0
    world: int = 1
    config: Any

    def data(self, j: int) -> Tensor:
        """Events of dataset j, [N_j] (the model's)."""
        raise NotImplementedError

    def weights(self, j: int) -> Tensor:
        """Bootstrap multiplicities of dataset j's events per replica, [R, N_j] (the model's)."""
        raise NotImplementedError

    def rngs(self) -> list[torch.Generator]:
        """One random generator per replica (the model's)."""
        raise NotImplementedError

    def set_shard(self, rank: int, world: int) -> None:
        """Make this copy compute process ``rank``'s share of a data-parallel step over ``world`` processes.

        Every process draws the full step's random numbers from the replicas' shared streams (so all streams stay
        in step) and keeps its own contiguous block of each parameter set's events, of the sampled data sets and
        of the bootstrap-weighted data. Each loss is a mean over sets (or a weighted sum normalized by the global
        weight), rescaled so that the mean over processes of the per-process losses and gradients equals the
        one-process loss and gradient of the same global batch (``inverse.gan.training`` averages them).

        Raises:
            ValueError: ``training.events_per_param`` is not a multiple of ``world * discriminator.set_size``.
        """
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in [0, {world})")
        n, k = self.config.training.events_per_param, self.config.discriminator.set_size
        if n % (world * k):
            raise ValueError(
                f"training.events_per_param: {n} events per parameter set cannot be split into {world} processes "
                f"x whole sets of discriminator.set_size = {k}; use a multiple of {world * k}"
            )
        self.rank, self.world = rank, world

    def _block(self, size: int) -> slice:
        """This process's contiguous share of ``size`` items (the first ``size % world`` processes get one more)."""
        base, extra = divmod(size, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def _generated_sets(self, events: Tensor) -> Tensor:
        """[r, B, n] events -> [r, B n / k, k] sorted sets of one parameter set's events.

        d-dimensional events [r, B, n, d] (set size 1) become [r, B n, 1, d].
        """
        k = self.config.discriminator.set_size
        r, b, n = events.shape[:3]
        sets = events.reshape(r, b * (n // k), k, *events.shape[3:])
        return sets.sort(-1).values if k > 1 else sets

    def _generated_set_index(self, device: torch.device) -> slice | Tensor:
        """Indices, among the whole step's generated sets, of this process's sets (parameter set by parameter set)."""
        if self.world == 1:
            return slice(None)
        t, k = self.config.training, self.config.discriminator.set_size
        per_param = t.events_per_param // k
        own = self._block(per_param)
        index = torch.arange(t.params_per_step, device=device)[:, None] * per_param
        return (index + torch.arange(own.start, own.stop, device=device)).flatten()

    def _sampled_data_sets(self, j: int, replicas: slice, n_sets: int, own: slice | Tensor | None = None) -> Tensor:
        """This process's share of n_sets sorted sets of the replica's data drawn with its bootstrap weights.

        Args:
            j: dataset.
            replicas: replica slice.
            n_sets: sets drawn for the whole step (on every process, from the shared streams).
            own: which of them this process keeps (default: its contiguous block).

        Returns:
            [r, m, k] with m = n_sets on one process.
        """
        k = self.config.discriminator.set_size
        x, w = self.data(j), self.weights(j)[replicas]
        idx = torch.stack(
            [
                torch.multinomial(wr, n_sets * k, replacement=True, generator=g)
                for wr, g in zip(w, self.rngs()[replicas])
            ]
        )
        sets = x[idx].reshape(-1, n_sets, k, *x.shape[1:])[:, self._block(n_sets) if own is None else own]
        return sets.sort(-1).values if k > 1 else sets

    def _data_sets(self, j: int, replicas: slice) -> tuple[Tensor, Tensor | None]:
        """This process's data sets for the discriminator this step and their weights (None: equal).

        The weights are normalized over all processes' sets and multiplied by the number of processes, so that
        the mean over processes is the one-process weighted mean whatever the shares' sizes.
        """
        t, k = self.config.training, self.config.discriminator.set_size
        if k == 1 and t.data_batch is None:
            x, w = self.data(j), self.weights(j)[replicas]
            own = self._block(len(x))
            # Dividing by (total / world) keeps one process bit-identical to w / total.
            weights = w[:, own] / (w.sum(-1, keepdim=True) / self.world)
            return x[own].view(1, -1, 1, *x.shape[1:]).expand(w.shape[0], -1, -1, *x.shape[1:]), weights
        n_sets = t.data_batch or max(1, len(self.data(j)) // k)
        sets = self._sampled_data_sets(j, replicas, n_sets)
        if self.world == 1:
            return sets, None
        return sets, sets.new_full(sets.shape[:2], self.world / n_sets)
