"""Build the DIS operator tables with eko (evolution) and yadism (coefficient functions), and find them.

:func:`resolve_operator` returns the operator of a runcard: a matching file, or one built here (and cached)
when none exists; ``python -m physics.dis.build`` (``make dis-operator``) rebuilds the shipped file. eko and
yadism are imported inside the functions that run them: reading an operator file needs neither. The first
build compiles eko's kernels with numba (several minutes, once per environment).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from physics.dis.config import DISConfig
from physics.dis.operator import (
    SHIPPED,
    Operator,
    OperatorMismatchError,
    legacy_theory,
    load_operator,
    operator_settings,
    output_nodes,
    settings_key,
    threshold_cells,
)
from physics.dis.pdf import INPUT_PIDS
from qcdgip.config import load_config, load_yaml

__all__ = ["build_operator", "cache_dir", "check_points", "pdf_q2_nodes", "resolve_operator"]

_EKO_PIDS = (22, -6, -5, -4, -3, -2, -1, 21, 1, 2, 3, 4, 5, 6)


def _nf0(config: DISConfig) -> int:
    t = config.theory
    return 3 + int(t.q0 >= t.m_c) + int(t.q0 >= t.m_b)


def _xgrid(config: DISConfig) -> np.ndarray:
    from eko.interpolation import make_grid

    g = config.grid
    return np.asarray(make_grid(g.n_log, g.n_lin, g.n_high, x_min=g.x_min), dtype=np.float64)


def pdf_q2_nodes(config: DISConfig) -> np.ndarray:
    """Q^2 of the stored evolution operators: Q0^2 and every other output node (the last included)."""
    _, q2 = output_nodes(config)
    picked = list(q2[::2]) + ([q2[-1]] if (len(q2) - 1) % 2 else [])
    return np.array([config.theory.q0**2, *picked])


def check_points(config: DISConfig) -> np.ndarray:
    """Off-node points [P, 2] for the interpolation check: every third x mid-point at every ln Q^2 mid-point.

    The mid-point of a pair of nodes that brackets a threshold is the threshold itself, where F2 has no single
    value beyond LO; it is left out.
    """
    x, q2 = output_nodes(config)
    z = np.log(x / (1 - x))
    z_mid = 0.5 * (z[1:] + z[:-1])[::3]
    q_mid = np.sqrt(q2[1:] * q2[:-1])[~threshold_cells(q2)]
    zz, qq = np.meshgrid(z_mid, q_mid, indexing="ij")
    return np.stack([1.0 / (1.0 + np.exp(-zz.ravel())), qq.ravel()], axis=-1)


def parton_model_points(config: DISConfig, xgrid: np.ndarray) -> np.ndarray:
    """Points [P, 2] on eko's x nodes (inside the output x range) at the stored evolution scales above Q0.

    There the interpolation basis is exact, so at LO F2 = x sum_q e_q^2 (q + qbar) of eko's evolved PDFs.
    """
    x, _ = output_nodes(config)
    xs = xgrid[(xgrid >= x[0]) & (xgrid <= x[-1])]
    xx, qq = np.meshgrid(xs, pdf_q2_nodes(config)[1:], indexing="ij")
    return np.stack([xx.ravel(), qq.ravel()], axis=-1)


def _evolve(config: DISConfig, xgrid: np.ndarray, q2: np.ndarray, workdir: Path) -> dict[float, np.ndarray]:
    """Eko's operators E[q2] restricted to light inputs: [14 out, G, 7 in, G], keyed by Q^2."""
    import eko
    from eko.io.runcards import Legacy

    theory = {**legacy_theory(config), "nf0": _nf0(config)}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    card = dict(Q2grid=sorted(set(q2.tolist())), interpolation_xgrid=xgrid.tolist(), interpolation_polynomial_degree=4,
                interpolation_is_log=True, ev_op_iterations=10, ev_op_max_order=10, n_integration_cores=cores,
                polarized=False, time_like=False, debug_skip_non_singlet=False, debug_skip_singlet=False)  # fmt: skip
    legacy = Legacy(theory, card)
    path = workdir / "eko.tar"
    eko.solve(legacy.new_theory, legacy.new_operator, path)
    cols = [_EKO_PIDS.index(p) for p in INPUT_PIDS]
    found: dict[float, np.ndarray] = {}
    with eko.EKO.read(path) as ops:
        for (mu2, _nf), op in ops.items():
            found[float(mu2)] = np.asarray(op.operator)[:, :, cols, :]
    keys = np.array(sorted(found))
    out = {}
    for q in q2:  # eko returns mu^2 = (sqrt(Q^2))^2: match each requested scale to within rounding
        near = keys[np.argmin(np.abs(keys - q))]
        if abs(near - q) > 1e-9 * q:
            raise RuntimeError(f"eko returned no operator at Q^2 = {q}")
        out[_key(q)] = found[near]
    return out


def _key(q2: float) -> float:
    return round(float(q2), 6)


def _alpha_s(config: DISConfig):
    """a_s(Q^2) = alpha_s / (4 pi) from eko's running coupling (only the NLO tables need it)."""
    from eko.couplings import Couplings
    from eko.io.runcards import Legacy
    from eko.quantities.couplings import CouplingEvolutionMethod

    card = Legacy({**legacy_theory(config), "nf0": _nf0(config)}, {}).new_theory
    masses = [m.value**2 for m in card.heavy.masses]
    running = Couplings(card.couplings, card.order, CouplingEvolutionMethod.EXACT, masses,
                        card.heavy.masses_scheme, np.power(card.heavy.matching_ratios, 2.0))  # fmt: skip
    return lambda q2: float(running.a_s(q2))


def _coefficients(config: DISConfig, xgrid: np.ndarray, points: np.ndarray) -> dict[str, list]:
    """Yadism's F2 and FL coefficient results at ``points`` [P, 2]."""
    import yadism

    kins = [{"x": float(x), "Q2": float(q2), "y": 0.0} for x, q2 in points]
    obs = dict(PolarizationDIS=0.0, ProjectileDIS="electron", PropagatorCorrection=0.0, TargetDIS="proton",
               prDIS="EM", NCPositivityCharge=None, interpolation_xgrid=xgrid.tolist(),
               interpolation_polynomial_degree=4, interpolation_is_log=True,
               observables={"F2_total": kins, "FL_total": kins})  # fmt: skip
    out = yadism.run_yadism({**legacy_theory(config), "nf0": _nf0(config)}, obs)
    return {"F2": out["F2_total"], "FL": out["FL_total"], "pids": list(out["pids"])}


def _contract(results: list, pids: list[int], evolution: dict[float, np.ndarray], a_s) -> np.ndarray:
    """FK rows [P, 7, G]: sum over orders of a_s^o C_o (on the PDFs at Q^2) times E(Q^2 <- Q0^2)."""
    order = [pids.index(p) for p in _EKO_PIDS]
    rows = []
    for r in results:
        e = evolution[_key(r.Q2)]
        c = np.zeros((len(_EKO_PIDS), e.shape[1]))
        for (o_s, o_em, o_r, o_f), (values, _err) in r.orders.items():
            if o_em or o_r or o_f:  # no QED; the scale-variation logs multiply ln(1) = 0
                continue
            c += (a_s(r.Q2) ** o_s if o_s else 1.0) * np.asarray(values)[order]
        rows.append(np.einsum("aj,ajbk->bk", c, e, optimize=True))
    return np.stack(rows)


def build_operator(config: DISConfig, progress: bool = True) -> Operator:
    """Run eko and yadism and contract their outputs into an :class:`~physics.dis.operator.Operator`."""
    logging.getLogger("eko").setLevel(logging.WARNING)
    xgrid = _xgrid(config)
    x_nodes, q2_nodes = output_nodes(config)
    xgrid_pm = parton_model_points(config, xgrid)
    checks = np.concatenate([check_points(config), xgrid_pm])
    pdf_q2 = pdf_q2_nodes(config)
    evolve_q2 = np.unique(np.concatenate([q2_nodes, checks[:, 1], pdf_q2[1:]]))
    stages = tqdm(total=3, desc="DIS operator", disable=not progress, unit="stage")
    with tempfile.TemporaryDirectory() as tmp:
        stages.set_postfix_str(f"eko, {len(evolve_q2)} Q^2 (the first run compiles with numba, ~5 min)")
        evolution = _evolve(config, xgrid, evolve_q2, Path(tmp))
    stages.update()
    nodes = np.stack(np.meshgrid(x_nodes, q2_nodes, indexing="xy"), axis=-1).reshape(-1, 2)  # [n_q2 * n_x, 2]
    stages.set_postfix_str(f"yadism, {len(nodes) + len(checks)} points")
    coeff = _coefficients(config, xgrid, np.concatenate([nodes, checks]))
    stages.update()
    stages.set_postfix_str("contraction")
    a_s = _alpha_s(config) if config.theory.order != "LO" else (lambda q2: 0.0)
    n = len(nodes)
    fk = np.stack([_contract(coeff[o][:n], coeff["pids"], evolution, a_s) for o in ("F2", "FL")])
    check = np.stack([_contract(coeff[o][n:], coeff["pids"], evolution, a_s) for o in ("F2", "FL")])
    fk = fk.reshape(2, len(q2_nodes), len(x_nodes), *fk.shape[-2:])
    evo = np.stack([evolution[_key(q)] for q in pdf_q2[1:]]).astype(np.float32)
    stages.update()
    stages.close()
    return Operator(
        settings=operator_settings(config), xgrid=xgrid, x_nodes=x_nodes, q2_nodes=q2_nodes, fk=fk, pdf_q2=pdf_q2,
        evolution=evo, check_points=checks, n_parton_model=np.array(len(xgrid_pm)), check_fk=check.astype(np.float32),
    )  # fmt: skip


def cache_dir() -> Path:
    """Where built operators are kept: $QCDGIP_CACHE/dis, else ~/.cache/qcdgip/dis."""
    root = os.environ.get("QCDGIP_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "qcdgip") / "dis"


def resolve_operator(config: DISConfig, progress: bool = True) -> Operator:
    """The operator of ``config``, built (and cached) only when no file matches.

    In order: the runcard's ``operator`` file (refused if it does not match), the shipped file when its
    settings match, the cache entry of the settings' key.
    """
    if config.operator is not None:
        return load_operator(config.operator, config)
    key = settings_key(operator_settings(config))
    if SHIPPED.is_file():
        try:
            return load_operator(SHIPPED, config)
        except OperatorMismatchError:
            pass
    cached = cache_dir() / f"operator-{key[:16]}.npz"
    if cached.is_file():
        return load_operator(cached, config)
    op = build_operator(config, progress=progress)
    op.save(cached)
    return op


def main(argv: list[str] | None = None) -> int:
    """``python -m physics.dis.build [--config dis.yaml] [--out FILE]``: build and write an operator file."""
    p = argparse.ArgumentParser(description="Build the DIS operator (eko x yadism) and write it as .npz.")
    p.add_argument("--config", help="DIS runcard (its physics section, or a bare DIS config); default settings")
    p.add_argument("--out", default=str(SHIPPED), help=f"output file (default: the shipped {SHIPPED.name})")
    args = p.parse_args(argv)
    config = DISConfig()
    if args.config:  # a closure runcard's physics section, or a bare DIS config
        config = load_config(args.config, DISConfig, section="physics" if "physics" in load_yaml(args.config) else None)
    start = time.perf_counter()
    op = build_operator(config)
    path = op.save(args.out)
    print(
        f"wrote {path} (key {op.key[:16]}, {path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
