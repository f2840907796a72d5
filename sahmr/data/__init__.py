"""Samples, batches and dataset loaders (synthetic, RICH, PROX).

Importing this package (and the loaders) does not import open3d; scans are read with
trimesh, lazily. Dataset pickles are read only on explicit ``allow_pickle=True``.
"""

from sahmr.data.collate import Batch, collate_samples, pack_point_sets, unpack_point_sets
from sahmr.data.prox import ProxDataset, ProxSDF, load_prox_camera, load_prox_sdf
from sahmr.data.rich import RichDataset, load_rich_camera, load_rich_multicam2world
from sahmr.data.sample import Sample

__all__ = [
    "Batch",
    "ProxDataset",
    "ProxSDF",
    "RichDataset",
    "Sample",
    "collate_samples",
    "load_prox_camera",
    "load_prox_sdf",
    "load_rich_camera",
    "load_rich_multicam2world",
    "pack_point_sets",
    "unpack_point_sets",
]
