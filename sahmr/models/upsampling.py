"""Learned coarse-to-fine mesh up-sampling on the body topology's fixed sparsity pattern.

METRO regresses a coarse mesh and up-samples it with learned linear layers. A dense
(V_fine x V_coarse) layer would hold ~12M weights for SMPL's 431 -> 6890 step; here each step
learns only the non-zeros of the topology's barycentric up-sampling matrix
(`sahmr.body.topology.BodyTopology.up_matrix`, <= 3 per fine vertex), initialised to their
barycentric values, plus an optional learned per-vertex offset initialised to zero. At
initialisation the module therefore equals `BodyTopology.upsample` exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sahmr.body.topology import BodyTopology


class SparseUpsampling(nn.Module):
    """One learned up-sampling step ``fine[i] = sum_j w_ij coarse[j] (+ offset_i)``.

    Args:
        up_matrix: Sparse COO Tensor (V_fine, V_coarse), the initial weights; only its
            non-zero pattern is learnable.
        residual: Add a learned per-fine-vertex offset (V_fine, 3), initialised to zero.
    """

    def __init__(self, *, up_matrix: Tensor, residual: bool = True) -> None:
        super().__init__()
        mat = up_matrix.coalesce()
        rows, cols = mat.indices()
        self.num_fine, self.num_coarse = (int(s) for s in mat.shape)
        self.register_buffer("rows", rows.clone(), persistent=False)
        self.register_buffer("cols", cols.clone(), persistent=False)
        self.weight = nn.Parameter(mat.values().detach().clone().float())
        self.offset = nn.Parameter(torch.zeros(self.num_fine, 3)) if residual else None

    def forward(self, coarse: Tensor) -> Tensor:
        """Up-samples vertices.

        Args:
            coarse: Tensor (B, V_coarse, C) (any frame; C = 3 when ``residual``).

        Returns:
            Tensor (B, V_fine, C).
        """
        if coarse.shape[-2] != self.num_coarse:
            raise ValueError(f"expected {self.num_coarse} vertices, got {coarse.shape[-2]}")
        contrib = coarse[:, self.cols] * self.weight[:, None].to(coarse.dtype)  # (B, nnz, C)
        fine = coarse.new_zeros(coarse.shape[0], self.num_fine, coarse.shape[-1])
        fine = fine.index_add(1, self.rows, contrib)
        if self.offset is not None:
            fine = fine + self.offset.to(fine.dtype)
        return fine


class MeshUpsampler(nn.Module):
    """Learned up-sampling from a coarse mesh level to level 0, one `SparseUpsampling` per step.

    Args:
        topology: The body topology; step ``l+1 -> l`` starts from ``topology.up_matrix(l)``.
        from_level: Level of the input vertices (default: the coarsest).
        residual: Learn a per-vertex offset at every step.
    """

    def __init__(
        self, *, topology: BodyTopology, from_level: int | None = None, residual: bool = True
    ) -> None:
        super().__init__()
        top = topology.num_levels - 1
        self.from_level = top if from_level is None else int(from_level)
        if not 0 <= self.from_level <= top:
            raise ValueError(f"from_level must be in [0, {top}], got {from_level}")
        # steps[k] maps level from_level - k to from_level - k - 1
        self.steps = nn.ModuleList(
            SparseUpsampling(up_matrix=topology.up_matrix(lv), residual=residual)
            for lv in range(self.from_level - 1, -1, -1)
        )

    def forward(self, coarse: Tensor) -> list[Tensor]:
        """All levels from coarse to fine.

        Args:
            coarse: Tensor (B, V_from, 3) vertices of ``from_level``.

        Returns:
            ``[coarse, ..., level 0]``: Tensors (B, V_l, 3), coarse -> fine (the input first).
        """
        levels = [coarse]
        for step in self.steps:
            levels.append(step(levels[-1]))
        return levels
