"""Inclusive neutral-current DIS: PDFs at Q0 evolved with eko, structure functions from yadism, (x, Q^2) events.

Public names: :class:`DISConfig` (the runcard), :class:`PDFModel` (PDFs at Q0 with the sum rules),
:func:`resolve_operator` (the cached eko x yadism operator), :class:`StructureFunctions` (F2, FL and the
cross section), :class:`DISExperiment` (Q^2-window datasets), :class:`DISSampler` (exact events),
:class:`DISDetector` (resolution, acceptance, migrations) and :class:`FoldedDISSampler` (reconstructed events).
"""

from physics.dis.build import resolve_operator
from physics.dis.config import DISConfig
from physics.dis.detector import DISDetector
from physics.dis.experiment import DISExperiment
from physics.dis.folded import FoldedDISSampler
from physics.dis.operator import Operator, OperatorMismatchError, load_operator
from physics.dis.pdf import PDFModel
from physics.dis.sampling import DISSampler
from physics.dis.structure import StructureFunctions

__all__ = [
    "DISConfig",
    "DISDetector",
    "DISExperiment",
    "DISSampler",
    "FoldedDISSampler",
    "Operator",
    "OperatorMismatchError",
    "PDFModel",
    "StructureFunctions",
    "load_operator",
    "resolve_operator",
]
