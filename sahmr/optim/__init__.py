"""Fitting bodies to images by optimisation: priors, SMPLify and PROX-style scene fitting.

`sahmr.optim.priors` holds the body priors (a Gaussian mixture over ``body_pose`` fitted to
the generator's pose library, the shape prior, the bent-joint penalty) and the pose library
sampler; `sahmr.optim.smplify` fits SMPL-format bodies to 2-D keypoints with a known camera,
batched; `sahmr.optim.scene_fit` adds the scene (penetration and contact through a signed
distance grid) in the staged, PROX-style fit; `sahmr.optim.fit_vertices` fits SMPL-format
parameters to any method's vertices (batched Levenberg-Marquardt). Nothing here imports open3d.
"""

from sahmr.optim.fit_vertices import (
    VertexFitResult,
    VertexFitter,
    fit_body_to_vertices,
)

__all__ = ["VertexFitResult", "VertexFitter", "fit_body_to_vertices"]
