"""Metrics, count-weighted reduction, the evaluator and its reports.

Metrics take metres and return millimetres per frame (see `sahmr.evaluation.metrics`);
`Accumulator` turns per-frame values into dataset means by summed values and counts,
all-reduced across processes under torch.distributed. The evaluator and reports are imported
from their modules (`sahmr.evaluation.evaluator`, `sahmr.evaluation.reports`) so that the
training path importing the metrics does not pull in tqdm/matplotlib.
"""

from sahmr.evaluation.metrics import (
    MM_PER_M,
    acceleration_error,
    binary_counts,
    contact_fitting_error,
    edge_length_error,
    g_mpjpe,
    g_mpve,
    mesh_edges,
    mpjpe,
    mpve,
    pa_mpjpe,
    pa_mpve,
    penetration,
    penetration_and_confe,
    precision_recall_f1,
    predicted_contact,
    root_error,
    scene_contact_class_counts,
    vertex_contact_counts,
)
from sahmr.evaluation.reduction import Accumulator

__all__ = [
    "MM_PER_M",
    "Accumulator",
    "acceleration_error",
    "binary_counts",
    "contact_fitting_error",
    "edge_length_error",
    "g_mpjpe",
    "g_mpve",
    "mesh_edges",
    "mpjpe",
    "mpve",
    "pa_mpjpe",
    "pa_mpve",
    "penetration",
    "penetration_and_confe",
    "precision_recall_f1",
    "predicted_contact",
    "root_error",
    "scene_contact_class_counts",
    "vertex_contact_counts",
]
