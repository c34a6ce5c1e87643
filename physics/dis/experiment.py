"""The DIS experiment: Q^2-window datasets with one luminosity, their event densities, counts and sampler.

Dataset j holds the events with Q^2 in its window, within the kinematic cuts. Its true intensity is
lambda_j(x, Q^2; theta) = L d^2 sigma / dx dQ^2, tabulated per window (:mod:`physics.dis.table`). The one
luminosity L is fixed at the truth by the case's expected total number of true events, so the counts carry the
normalisation information. With a ``detector`` in the runcard, the observed events are the reconstructed ones:
the intensities, counts and Fisher matrices of the observed level are the folded ones
(:mod:`physics.dis.detector`, :mod:`physics.dis.folding`), and the samplers draw true events and fold them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from physics.dis.build import resolve_operator
from physics.dis.config import DISConfig
from physics.dis.detector import DISDetector
from physics.dis.fisher import poisson_fisher
from physics.dis.folding import DISFolding
from physics.dis.operator import Operator
from physics.dis.sparse import FixedSparse
from physics.dis.structure import StructureFunctions
from physics.dis.table import WindowGrid

__all__ = ["DISExperiment", "ParameterBox"]


@dataclass(frozen=True)
class ParameterBox:
    """Names, true values and prior box of the free parameters."""

    parameter_names: list[str]
    truth: list[float]
    low: list[float]
    high: list[float]

    @property
    def n_params(self) -> int:
        """D."""
        return len(self.parameter_names)


class DISExperiment:
    """Theory, windows and luminosity of one DIS case.

    Args:
        config: the DIS runcard.
        operator: its operator (default: :func:`physics.dis.build.resolve_operator`).
        rows, cols: table cells per window in u = ln Q^2 and in w (the cut-to-cut fraction of logit x).
    """

    event_dim = 2

    def __init__(self, config: DISConfig, operator: Operator | None = None, rows: int = 128, cols: int = 128) -> None:
        self.config = config
        self.case = config.case
        self.operator = operator if operator is not None else resolve_operator(config)
        self.sf = StructureFunctions(config, self.operator)
        self.names = [w.name for w in config.datasets]
        self.grids = [WindowGrid(w, config.kinematics, rows, cols) for w in config.datasets]
        self._vertex = [self._vertex_terms(g) for g in self.grids]
        self.detector = None if config.detector is None else DISDetector(config.detector, config.kinematics)
        self.folding = None if self.detector is None else DISFolding(self.grids, self.detector)
        self._counts: dict[tuple[torch.dtype, torch.device], Tensor] = {}
        self._last_values: tuple[tuple, Tensor, list[Tensor]] | None = None
        self._sharing = 0
        truth = self.truth_tensor(torch.float64)
        sigma = torch.stack([g.integral(v) for g, v in zip(self.grids, self.vertex_values(truth, luminosity=1.0))], -1)
        self.cross_sections_pb = sigma[0].tolist()
        self.luminosity = config.cases[config.case] / float(sigma.sum())  # true events per pb
        self.expected = self.expected_counts(truth)[0].tolist()

    @property
    def parameter_names(self) -> list[str]:
        """Names of the free parameters."""
        return self.config.parameter_names

    @property
    def theory(self) -> ParameterBox:
        """The parameters' names, truth and box (what inverse solvers read from an experiment's theory)."""
        c = self.config
        return ParameterBox(c.parameter_names, c.truth, c.low, c.high)

    def fisher_information(self, theta: Tensor, dataset_weights: Tensor | None = None) -> Tensor:
        """Expected Fisher matrices per parameter set of the observed events, [B, D, D], datasets weighted by [B, J].

        The metric of natural-gradient steps: one Gauss point per table cell (the reference uses 3 x 3); with a
        detector, cell centres of ``detector.metric_cells`` reconstructed cells per side.
        """
        if self.folding is None:
            return poisson_fisher(self.vertex_jacobians(theta), self.grids, dataset_weights, order=1)
        rule = self.folding.fisher_rule(self.config.detector.metric_cells, 1)
        return self.folded_fisher(theta, rule, dataset_weights)

    def folded_fisher(self, theta: Tensor, rule: list, dataset_weights: Tensor | None = None) -> Tensor:
        """The folded Fisher matrices [B, D, D] on a reconstructed-level rule of :meth:`DISFolding.fisher_rule`."""
        jac = self.vertex_jacobians(theta)
        b, d = theta.shape
        values = torch.cat([p.reshape(b, -1) for p, _ in jac], 1)
        derivatives = torch.cat([dp.reshape(b, -1, d) for _, dp in jac], 1)
        return self.folding.fisher(values, derivatives, rule, dataset_weights)

    def truth_tensor(self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> Tensor:
        """The true parameters as [1, D]."""
        return torch.tensor([self.config.truth], dtype=dtype, device=device)

    def bounds(self, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
        """Prior-box edges (low, high), each [D]."""
        return torch.tensor(self.config.low, dtype=dtype), torch.tensor(self.config.high, dtype=dtype)

    def index(self, dataset: int | str) -> int:
        """Position of a dataset given by index or name."""
        if isinstance(dataset, str):
            if dataset not in self.names:
                raise ValueError(f"unknown dataset {dataset!r}; known: {self.names}")
            return self.names.index(dataset)
        if not 0 <= int(dataset) < len(self.names):
            raise ValueError(f"dataset index {dataset} out of range 0..{len(self.names) - 1}")
        return int(dataset)

    def _vertex_terms(self, grid: WindowGrid) -> dict[str, Tensor]:
        """What does not depend on theta at a window's vertices.

        The interpolation matrix [V, N], the factor 2 pi alpha^2 / (x Q^4) times the Jacobian d(x, Q^2)/d(u, w),
        Y+ and y^2 (each [V]).
        """
        x, q2, jac = grid.vertices()
        factor, y = self.sf.reduced_factor(x, q2)
        return {"matrix": FixedSparse(self.sf.interpolation_matrix(torch.log(q2), torch.logit(x))),
                "factor": factor * jac, "y_plus": 1 + (1 - y) ** 2, "y2": y**2}  # fmt: skip

    def _window_values(self, j: int, nodes: Tensor, lum: float) -> tuple[Tensor, Tensor, Tensor]:
        """(p, L factor F2, interpolated FL / F2) at window j's vertices from node values [B, 2, N]: each [B, V]."""
        t = {k: v.to(nodes) for k, v in self._vertex[j].items() if k != "matrix"}
        inter = self._vertex[j]["matrix"] @ nodes.transpose(0, 2).reshape(nodes.shape[2], -1)  # [V, 2 B]
        inter = inter.reshape(-1, 2, nodes.shape[0]).permute(2, 1, 0)  # [B, 2, V]
        base = lum * t["factor"] * torch.exp(inter[:, 0])
        return base * (t["y_plus"] - t["y2"] * inter[:, 1]), base, inter[:, 1]

    def node_values(self, theta: Tensor, check: bool = True) -> Tensor:
        """(ln F2, FL / F2) at the operator's output nodes, [B, 2, N]: what every window's table is built from."""
        return self.sf.interpolants(theta, check).flatten(2)

    def window_values(self, nodes: Tensor, j: int, luminosity: float | None = None) -> Tensor:
        """Window j's table p(u, w) at its vertices, [B, R+1, C+1], from node values [B, 2, N]."""
        lum = self.luminosity if luminosity is None else luminosity
        g = self.grids[j]
        return self._window_values(j, nodes, lum)[0].reshape(nodes.shape[0], len(g.u), g.cols + 1)

    def vertex_values(
        self, theta: Tensor, luminosity: float | None = None, check: bool = True, only: int | None = None
    ) -> list[Tensor]:
        """The tabulated density p(u, w) = L sigma Q^2 x (1-x) dz/dw at every window's vertices: [B, R+1, C+1].

        ``check=False`` skips the positivity check of F2; ``only`` computes one window (the list holds just it).
        Inside :meth:`sharing_tables` the tables of the last theta are kept, so that a sampler drawing one window
        at a time, the rate term and a detector's true counts at the same tensor share one evaluation.
        """
        key = _values_key(theta, luminosity, check) if self._sharing else None
        last = self._last_values
        if key is not None and last is not None and last[0] == key:
            return last[2] if only is None else [last[2][only]]
        nodes = self.node_values(theta, check)
        if only is not None:
            return [self.window_values(nodes, only, luminosity)]
        values = [self.window_values(nodes, j, luminosity) for j in range(len(self.grids))]
        if key is not None:  # the tensor is held with its key, so no other tensor can take its identity
            self._last_values = (key, theta, values)
        return values

    @contextmanager
    def sharing_tables(self) -> Iterator[None]:
        """A scope in which :meth:`vertex_values` reuses the tables of the last theta (one graph, one step).

        Outside it every call evaluates afresh, so a graph freed by ``backward`` is never reused.
        """
        self._sharing += 1
        try:
            yield
        finally:
            self._sharing -= 1
            if not self._sharing:
                self._last_values = None

    @property
    def shares_tables(self) -> bool:
        """Whether a :meth:`sharing_tables` scope is open."""
        return self._sharing > 0

    def vertex_jacobians(self, theta: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Vertex values [B, R+1, C+1] and their derivatives in theta [B, R+1, C+1, D], per window.

        Forward-mode autograd only through the node values (a few thousand numbers); the fixed interpolation
        and the kinematic factors are applied to the derivatives in closed form.
        """

        def nodes_of(th: Tensor) -> Tensor:
            return self.sf.interpolants(th[None], check=False)[0].flatten(1)  # [2, N]

        nodes = self.sf.interpolants(theta).flatten(2)
        d_nodes = torch.func.vmap(torch.func.jacfwd(nodes_of))(theta)  # [B, 2, N, D]
        b, _, n, d = d_nodes.shape
        out = []
        for j, g in enumerate(self.grids):
            p, base, _ = self._window_values(j, nodes, self.luminosity)
            t = {k: v.to(theta) for k, v in self._vertex[j].items() if k != "matrix"}
            flat = d_nodes.permute(2, 1, 0, 3).reshape(n, -1)  # [N, 2 B D]
            dv = (self._vertex[j]["matrix"] @ flat).reshape(-1, 2, b, d).permute(2, 1, 0, 3)
            dp = p[..., None] * dv[:, 0] - (base * t["y2"])[..., None] * dv[:, 1]  # [B, V, D]
            shape = (b, len(g.u), g.cols + 1)
            out.append((p.reshape(shape), dp.reshape(*shape, d).contiguous()))
        return out

    def true_counts(self, theta: Tensor) -> Tensor:
        """Expected true events per window, [B, J] (before any detector)."""
        return torch.stack([g.integral(v) for g, v in zip(self.grids, self.vertex_values(theta))], -1)

    def count_weights(self, like: Tensor) -> Tensor:
        """C [J, V] with the folded expected counts nu = C v of the concatenated vertex values v [V] (a detector)."""
        if self.folding is None:
            raise ValueError("count_weights: the experiment has no detector (its counts are true_counts)")
        key = (like.dtype, like.device)
        if key not in self._counts:
            self._counts[key] = self.folding.count_weights().to(dtype=like.dtype, device=like.device)
        return self._counts[key]

    def expected_counts(self, theta: Tensor) -> Tensor:
        """Expected observed event counts nu_j(theta) per window: [B, J] (folded with a detector)."""
        if self.folding is None:
            return self.true_counts(theta)
        values = torch.cat([v.reshape(theta.shape[0], -1) for v in self.vertex_values(theta)], 1)
        return values @ self.count_weights(values).T

    def observed_interpolation(self, events: Tensor, dataset: int | str) -> tuple[FixedSparse, Tensor]:
        """(M [n, V], log J [n]) with the folded lambda_j(e) = (M v)(e) / J(e) at reconstructed events [n, 2].

        v are the concatenated vertex values of all windows (a detector's folding reads every window's table);
        without a detector the likelihood uses :meth:`event_interpolation` per window.
        """
        if self.folding is None:
            raise ValueError("observed_interpolation: the experiment has no detector (use event_interpolation)")
        return self.folding.event_interpolation(events, self.index(dataset))

    def log_intensity(
        self, theta: Tensor, events: Tensor, dataset: int | str, values: list[Tensor] | None = None
    ) -> Tensor:
        """Log lambda_j(x, Q^2; theta) per unit x and Q^2 at events [B, n, 2] or [n, 2] (columns x, Q^2): [B, n].

        The true-level intensity (before any detector; the folded one is :meth:`observed_interpolation`'s).
        """
        j = self.index(dataset)
        grid = self.grids[j]
        values = values if values is not None else self.vertex_values(theta)
        b = theta.shape[0]
        ev = torch.broadcast_to(events, (b, *events.shape[-2:]))
        u, w = grid.to_uw(ev[..., 0], ev[..., 1])
        _, _, jac = grid.to_xq2(u, w)
        return torch.log(grid.density(values[j], u, w)) - torch.log(jac)

    def event_interpolation(self, events: Tensor, dataset: int | str) -> tuple[Tensor, Tensor]:
        """What log lambda_j at fixed events [n, 2] needs, in float64, independent of theta.

        Returns:
            (W, log J): the fixed sparse bilinear weights [n, V] with lambda_j(e) J(e) = (W p_j)(e) for the vertex
            values p_j flattened to [V], and log J = log d(x, Q^2)/d(u, w) at the events [n].
        """
        j = self.index(dataset)
        grid = self.grids[j]
        ev = events.to(torch.float64)
        u, w = grid.to_uw(ev[:, 0], ev[:, 1])
        row, col, t, s = grid.cells(u, w)
        ncol = grid.cols + 1
        i00 = row * ncol + col
        index = torch.stack([i00, i00 + 1, i00 + ncol, i00 + ncol + 1], -1)  # [n, 4]
        weights = torch.stack([(1 - t) * (1 - s), (1 - t) * s, t * (1 - s), t * s], -1)
        rows = torch.arange(len(ev)).repeat_interleave(4)
        shape = (len(ev), len(grid.u) * ncol)
        matrix = torch.sparse_coo_tensor(
            torch.stack([rows, index.reshape(-1)]), weights.reshape(-1), shape, check_invariants=False
        )
        return FixedSparse(matrix), torch.log(grid.to_xq2(u, w)[2])

    def contains(self, events: Tensor, dataset: int | str) -> Tensor:
        """Whether events [..., 2] lie in the dataset's window and cuts (a mask [...]; 1e-9 of slack for rounding)."""
        grid = self.grids[self.index(dataset)]
        u, w = grid.to_uw(events[..., 0], events[..., 1])
        tol = 1e-9
        return (u >= grid.u[0] - tol) & (u <= grid.u[-1] + tol) & (w >= -tol) & (w <= 1 + tol)

    def summary(self) -> list[dict[str, float | str]]:
        """Per-dataset rows (name, Q^2 window, cross section, expected count) for reports."""
        return [
            {"name": w.name, "q2_min": w.q2_min, "q2_max": w.q2_max, "sigma_pb": s, "expected": n}
            for w, s, n in zip(self.config.datasets, self.cross_sections_pb, self.expected)
        ]

    def __repr__(self) -> str:
        total = sum(self.expected)
        return f"DISExperiment(case={self.case!r}, windows={len(self.names)}, expected={total:.0f})"


def _values_key(theta: Tensor, luminosity: float | None, check: bool) -> tuple:
    """The table cache's key for theta.

    The tensor (or the base of a view), its layout, the in-place version counter (which views share), the grad
    mode and the other arguments.
    """
    base = theta if theta._base is None else theta._base
    layout = (tuple(theta.shape), theta.stride(), theta.storage_offset(), theta.dtype, theta.device)
    return (id(base), layout, theta._version, torch.is_grad_enabled(), luminosity, check)
