"""sahmr: scene-aware human mesh recovery.

Recover a person's full body mesh in a scanned room's own metric frame from one image, a
calibrated camera and the scan. See README.md for the quick start and docs/ for the design.
"""

__version__ = "0.1.0"
