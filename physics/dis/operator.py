"""The DIS theory operator: eko's evolution times yadism's coefficient functions, contracted once and cached.

F2 and FL are linear in the initial-scale PDFs: at every output node (x_i, Q^2_j),
F(x_i, Q^2_j) = sum_{b, k} FK[i, j, b, k] f_b(x_k, Q0), with f_b the light flavours of
:data:`physics.dis.pdf.INPUT_PIDS` on eko's interpolation grid x_k. FK = sum_o a_s(Q^2)^o C_o E: yadism's
coefficient arrays C_o (acting on the PDFs at Q^2) contracted with eko's operator E(Q^2 <- Q0^2).

The operator file (.npz) holds the tables and the settings they were built from; its key is the SHA-256 of
those settings (theory, grids, kinematic range, eko and yadism versions). A file whose key does not match the
runcard is refused, naming the settings that differ. Building and finding operators: :mod:`physics.dis.build`.

References:
    Candido, Hekhorn and Magni, "EKO: evolution kernel operators", Eur. Phys. J. C 82 (2022) 976,
    arXiv:2202.02338.
    Candido, Hekhorn, Magni et al., "Yadism: yet another DIS module", Eur. Phys. J. C 84 (2024) 698,
    arXiv:2401.15187.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from physics.dis.config import DISConfig
from physics.dis.pdf import INPUT_PIDS

__all__ = [
    "Operator",
    "OperatorMismatchError",
    "load_operator",
    "operator_settings",
    "output_nodes",
    "q2_thresholds",
    "settings_key",
    "threshold_cells",
    "x_node_count",
]

SHIPPED = Path(__file__).with_name("data") / "operator-default.npz"
OBSERVABLES = ("F2", "FL")
X_NODES = {"LO": 72, "NLO": 96}  # default output nodes in logit x per order (grid.n_x)
THRESHOLD_GAP = 1e-5  # relative distance of the two Q^2 nodes on either side of a heavy-quark threshold
_CKM = "0.97428 0.22530 0.003470 0.22520 0.97345 0.041000 0.00862 0.04030 0.999152"


class OperatorMismatchError(ValueError):
    """An operator file built for other settings than the runcard's."""


@dataclass(frozen=True)
class Operator:
    """The contracted tables of one theory and grid.

    Attributes:
        settings: what the tables were built from (see :func:`operator_settings`).
        xgrid: eko's interpolation grid [G].
        x_nodes: output nodes in x [n_x] (uniform in logit x).
        q2_nodes: output nodes in Q^2 [n_q2] (uniform in ln Q^2; beyond LO, uniform within each segment between the
            heavy-quark thresholds, each threshold bracketed by two nodes: see :func:`output_nodes`).
        fk: [2 (F2, FL), n_q2, n_x, 7, G].
        pdf_q2: Q^2 of the stored evolution operators [n_e] (the first is Q0^2, where E is the identity).
        evolution: [n_e, 14 out pids, G, 7, G] (float32; for the evolved PDFs of plots and LHAPDF sets).
        check_points: check points (x, Q^2) [P, 2]: off-node mid-points, then ``n_parton_model`` points on eko's
            x nodes at the stored evolution scales; check_fk: their FK rows [2, P, 7, G] (float32).
    """

    settings: dict[str, Any]
    xgrid: np.ndarray
    x_nodes: np.ndarray
    q2_nodes: np.ndarray
    fk: np.ndarray
    pdf_q2: np.ndarray
    evolution: np.ndarray
    check_points: np.ndarray
    n_parton_model: np.ndarray
    check_fk: np.ndarray

    @property
    def key(self) -> str:
        """SHA-256 of the settings."""
        return settings_key(self.settings)

    def save(self, path: str | Path) -> Path:
        """Write atomically (a temporary file, then a rename), so an interrupted write leaves nothing half-done."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        os.close(fd)
        arrays = {k: getattr(self, k) for k in ("xgrid", "x_nodes", "q2_nodes", "fk", "pdf_q2", "evolution",
                                                 "check_points", "n_parton_model", "check_fk")}  # fmt: skip
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, settings=np.array(json.dumps(self.settings, sort_keys=True)), **arrays)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; an operator file is meant to be shared
        os.replace(tmp, path)
        return path


def _versions() -> dict[str, str]:
    return {name: metadata.version(name) for name in ("eko", "yadism")}


def q2_thresholds(config: DISConfig) -> list[float]:
    """Heavy-quark thresholds m_h^2 inside the Q^2 range where F2 and FL jump (beyond LO in the zero-mass scheme).

    At LO they are continuous (the heavy PDF starts at zero); at NLO the heavy quark's O(a_s) gluon coefficient
    switches on at m_h^2 while its PDF is still zero, a jump of a few per mille in F2 and percents in FL.
    """
    if config.theory.order == "LO":
        return []
    k, t = config.kinematics, config.theory
    margin = 1e-3  # a threshold at the very edge of the range touches no cell worth splitting
    return [m**2 for m in (t.m_c, t.m_b, t.m_t) if k.q2_min * (1 + margin) < m**2 < k.q2_max * (1 - margin)]


def _q2_nodes(config: DISConfig) -> np.ndarray:
    """Q^2 nodes: ``grid.n_q2`` uniform in ln Q^2, or one uniform segment per interval between thresholds.

    A threshold m^2 is bracketed by the nodes m^2 (1 -+ THRESHOLD_GAP), so no cubic stencil crosses a jump; the
    n_q2 - 1 intervals are shared among the segments by their ln Q^2 lengths, at least 3 each (a cubic stencil).
    """
    k, n = config.kinematics, config.grid.n_q2
    cuts = q2_thresholds(config)
    if not cuts:
        return np.geomspace(k.q2_min, k.q2_max, n)
    edges = np.array([k.q2_min, *cuts, k.q2_max])
    lengths = np.diff(np.log(edges))
    ideal = (n - 1) * lengths / lengths.sum()
    share = np.maximum(3, np.floor(ideal).astype(int))
    while share.sum() < n - 1:  # largest remainder
        share[np.argmax(ideal - share)] += 1
    lo = edges[:-1] * np.array([1.0] + [1 + THRESHOLD_GAP] * len(cuts))
    hi = edges[1:] * np.array([1 - THRESHOLD_GAP] * len(cuts) + [1.0])
    return np.concatenate([np.geomspace(a, b, m + 1) for a, b, m in zip(lo, hi, share)])


def threshold_cells(q2_nodes: np.ndarray) -> np.ndarray:
    """[n - 1]: True for each zero-width cell between the two nodes that bracket a threshold (:func:`output_nodes`)."""
    steps = np.diff(np.log(q2_nodes))
    return steps < 1e-3 * steps.max()


def output_nodes(config: DISConfig) -> tuple[np.ndarray, np.ndarray]:
    """Output nodes: uniform in logit x over the x range the cuts allow, and in ln Q^2 over [q2_min, q2_max].

    Beyond LO the Q^2 nodes are uniform within each segment between heavy-quark thresholds
    (:func:`q2_thresholds`), and each threshold is bracketed by two nodes a relative ``THRESHOLD_GAP`` apart.
    """
    k, g = config.kinematics, config.grid
    s = k.sqrt_s**2
    x_lo = k.q2_min / (s * k.y_max)
    x_hi = min(k.q2_max / (k.q2_max + k.w2_min - k.proton_mass**2), k.q2_max / (s * k.y_min), k.x_max)
    if x_lo < g.x_min:
        raise ValueError(f"grid.x_min ({g.x_min}) is above the smallest x the cuts allow ({x_lo:.3g})")
    z = np.linspace(math.log(x_lo / (1 - x_lo)), math.log(x_hi / (1 - x_hi)), x_node_count(config))
    return 1.0 / (1.0 + np.exp(-z)), _q2_nodes(config)


def x_node_count(config: DISConfig) -> int:
    """``grid.n_x``, or by default ``X_NODES`` of the theory's order.

    Beyond LO the ln(1 - x) terms of the coefficient functions bend ln F2 in logit x at large x: with 72 nodes
    the cubic interpolation misses by 1.5e-3 in the last cells below x = 0.9, and the error falls like the
    fourth power of the node spacing.
    """
    n = config.grid.n_x
    return X_NODES[config.theory.order] if n is None else n


def operator_settings(config: DISConfig) -> dict[str, Any]:
    """Everything the tables depend on: the theory, the grids and the kinematic range (not the cuts within it)."""
    k = config.kinematics
    kin = {"sqrt_s": k.sqrt_s, "q2_min": k.q2_min, "q2_max": k.q2_max, "w2_min": k.w2_min, "y_min": k.y_min,
           "y_max": k.y_max, "x_max": k.x_max, "proton_mass": k.proton_mass}  # fmt: skip
    grid = {**config.grid.model_dump(), "n_x": x_node_count(config)}  # the layout built, not the runcard's None
    settings = {"theory": config.theory.model_dump(), "grid": grid, "kinematics": kin, "versions": _versions(),
                "input_pids": list(INPUT_PIDS), "format": 1}  # fmt: skip
    cuts = q2_thresholds(config)
    if cuts:  # a node layout split at thresholds: files of the unsplit layout must not match
        settings["q2_split"] = {"thresholds": cuts, "gap": THRESHOLD_GAP}
    return settings


def settings_key(settings: dict[str, Any]) -> str:
    """SHA-256 of the settings' canonical JSON."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key} (file {va!r}, runcard {vb!r})")
    return out


def load_operator(path: str | Path, config: DISConfig | None = None) -> Operator:
    """Read an operator file; with ``config``, refuse one built for other settings, naming them."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"operator file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as f:
            fields = {k: f[k] for k in f.files}
    except (OSError, ValueError) as err:
        raise ValueError(f"operator file {path}: not a readable .npz ({err})") from err
    try:
        settings = json.loads(str(fields.pop("settings")))
        op = Operator(settings=settings, **fields)
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"operator file {path}: missing or malformed tables ({err})") from err
    if config is not None:
        wanted = operator_settings(config)
        if settings_key(wanted) != op.key:
            diff = "; ".join(_differences(op.settings, wanted)) or "unknown"
            raise OperatorMismatchError(f"operator file {path} was built for other settings: {diff}")
    return op


def legacy_theory(config: DISConfig) -> dict[str, Any]:
    """The theory card in the legacy (NNPDF-style) format that yadism reads and eko upgrades."""
    t = config.theory
    pto = 0 if t.order == "LO" else 1
    return dict(
        PTO=pto, PTODIS=pto, FNS="ZM-VFNS", NfFF=4, DAMP=0, IC=0, ModEv="EXA", XIR=1.0, XIF=1.0, MaxNfAs=6,
        MaxNfPdf=6, Q0=t.q0, nf0=None, alphas=t.alphas, Qref=t.q_ref, nfref=5, QED=0, alphaqed=0.007496252,
        Qedref=1.777, SxRes=0, SxOrd="LL", HQ="POLE", mc=t.m_c, Qmc=t.m_c, kcThr=1.0, mb=t.m_b, Qmb=t.m_b,
        kbThr=1.0, mt=t.m_t, Qmt=t.m_t, ktThr=1.0, CKM=_CKM, MZ=91.1876, MW=80.398, GF=1.1663787e-05,
        SIN2TW=0.23126, TMC=0, MP=config.kinematics.proton_mass, FactScaleVar=False, RenScaleVar=False,
        n3lo_cf_variation=0, FONLLParts="full", ZMc=True, ZMb=True, ZMt=True,
    )  # fmt: skip
