"""Evolved PDFs and LHAPDF sets: the fitted replicas (and the truth) in the field's exchange format.

An LHAPDF set is a directory ``<name>/`` with ``<name>.info`` (YAML metadata) and one ``<name>_NNNN.dat``
per member in the ``lhagrid1`` format: a header, then a block with the x knots, the Q knots (GeV, not Q^2),
the particle ids, and x f(x, Q) on every (x, Q) pair, x the outer loop and Q the inner one. Member 0 of a
replica set is the replicas' mean (``ErrorType: replicas``). The grids are eko's interpolation grid in x and
the operator's stored scales in Q (Q0 first).

References:
    Buckley et al., "LHAPDF6: parton density access in the LHC precision era", Eur. Phys. J. C 75 (2015) 132,
    arXiv:1412.7420.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml
from torch import Tensor

from physics.dis.config import DISConfig
from physics.dis.operator import Operator
from physics.dis.pdf import INPUT_PIDS, PDFModel

__all__ = ["OUTPUT_PIDS", "evolved_pdfs", "read_lhapdf_member", "write_lhapdf_set"]

OUTPUT_PIDS = (-5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 21)
_EKO_PIDS = (22, -6, -5, -4, -3, -2, -1, 21, 1, 2, 3, 4, 5, 6)


def evolved_pdfs(config: DISConfig, operator: Operator, theta: Tensor) -> Tensor:
    """f(x_k, Q_e) of ``OUTPUT_PIDS`` on eko's grid at the operator's stored scales: [B, n_e, 11, G].

    At Q0 (the first scale) these are the fitted PDFs themselves (heavy quarks zero); above, eko's operators.
    """
    xgrid = torch.as_tensor(operator.xgrid, dtype=theta.dtype, device=theta.device)
    f0 = PDFModel(config).flavours(theta, xgrid)  # [B, 7, G]
    evo = torch.as_tensor(operator.evolution, device=theta.device).to(theta.dtype)  # [n_e - 1, 14, G, 7, G]
    above = torch.einsum("eajbk,Bbk->Beaj", evo, f0)
    at_q0 = torch.zeros(theta.shape[0], 1, len(_EKO_PIDS), len(xgrid), dtype=theta.dtype, device=theta.device)
    for i, pid in enumerate(INPUT_PIDS):
        at_q0[:, 0, _EKO_PIDS.index(pid)] = f0[:, i]
    full = torch.cat([at_q0, above], dim=1)
    return full[:, :, [_EKO_PIDS.index(p) for p in OUTPUT_PIDS]]


def _member_text(xgrid: np.ndarray, q: np.ndarray, xf: np.ndarray, kind: str) -> str:
    """One member file: xf [n_q, 11, G] -> rows over x (outer) and Q (inner)."""
    lines = [f"PdfType: {kind}", "Format: lhagrid1", "---"]
    lines.append(" ".join(f"{v:.12e}" for v in xgrid))
    lines.append(" ".join(f"{v:.12e}" for v in q))
    lines.append(" ".join(str(p) for p in OUTPUT_PIDS))
    block = np.transpose(xf, (2, 0, 1)).reshape(-1, len(OUTPUT_PIDS))  # [G * n_q, 11]
    lines += [" ".join(f"{v:.12e}" for v in row) for row in block]
    lines.append("---")
    return "\n".join(lines) + "\n"


def write_lhapdf_set(
    directory: str | Path, name: str, config: DISConfig, operator: Operator, theta: Tensor, description: str
) -> Path:
    """Write an LHAPDF set of the parameter sets ``theta`` [R, D] (R = 1: one central member).

    Returns:
        The set's directory ``directory/name``.
    """
    out = Path(directory) / name
    out.mkdir(parents=True, exist_ok=True)
    f = evolved_pdfs(config, operator, theta.to(torch.float64)).cpu().numpy()  # [R, n_e, 11, G]
    xgrid = operator.xgrid
    xf = f * xgrid
    members = [xf[0]] if len(xf) == 1 else [xf.mean(0), *xf]
    q = np.sqrt(operator.pdf_q2)
    for i, member in enumerate(members):
        kind = "central" if i == 0 else "replica"
        (out / f"{name}_{i:04d}.dat").write_text(_member_text(xgrid, q, member, kind))
    t = config.theory
    info = {
        "SetDesc": description, "Authors": "qcdgip", "Format": "lhagrid1", "DataVersion": 1,
        "NumMembers": len(members), "Particle": 2212, "Flavors": list(OUTPUT_PIDS),
        "OrderQCD": 0 if t.order == "LO" else 1, "FlavorScheme": "variable", "NumFlavors": 5,
        "ErrorType": "replicas" if len(members) > 1 else "", "XMin": float(xgrid[0]), "XMax": float(xgrid[-1]),
        "QMin": float(q[0]), "QMax": float(q[-1]), "MZ": 91.1876, "MCharm": t.m_c, "MBottom": t.m_b,
        "MTop": t.m_t, "AlphaS_MZ": t.alphas, "AlphaS_OrderQCD": 0 if t.order == "LO" else 1,
    }  # fmt: skip
    (out / f"{name}.info").write_text(yaml.safe_dump(info, sort_keys=False))
    return out


def read_lhapdf_member(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[int], np.ndarray]:
    """Read one ``lhagrid1`` member file: (x knots, Q knots, pids, x f [n_x, n_q, n_pids])."""
    path = Path(path)
    blocks = path.read_text().split("---")
    if len(blocks) < 3:
        raise ValueError(f"{path}: not an lhagrid1 member (no data block)")
    rows = [line.split() for line in blocks[1].strip().splitlines()]
    x, q = np.array(rows[0], dtype=float), np.array(rows[1], dtype=float)
    pids = [int(p) for p in rows[2]]
    data = np.array(rows[3:], dtype=float)
    if data.shape != (len(x) * len(q), len(pids)):
        raise ValueError(f"{path}: data block is {data.shape}, expected {(len(x) * len(q), len(pids))}")
    return x, q, pids, data.reshape(len(x), len(q), len(pids))
