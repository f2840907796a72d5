"""Scene scans: I/O, signed distance grids, frustum/ROI selection, voxels, contact labels, and
the scene front end (``frontend``: crop, crop camera and frustum points -> what a model reads).

The torch-only modules (``frontend``, ``frustum``, ``voxels``, ``contact``, ``sdf`` sampling)
import without open3d; ``io``/``points`` and SDF *building* import open3d lazily.
"""
