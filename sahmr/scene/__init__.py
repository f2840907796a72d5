"""Scene scans: I/O, signed distance grids, frustum/ROI selection, voxels, contact labels.

The torch-only modules (``frustum``, ``voxels``, ``contact``, ``sdf`` sampling) import
without open3d; ``io``/``points`` and SDF *building* import open3d lazily.
"""
