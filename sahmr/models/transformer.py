"""Transformer encoders of the mesh networks: METRO's width-reducing cascade and SA-HMR's
two-branch (mesh + scene-contact) variant.

Both are stacks of pre-norm layers built on PyTorch's own attention (`nn.MultiheadAttention`,
batch first). A *block* is ``num_layers`` layers at one width; consecutive blocks are joined by
a linear down-projection, so a cascade with widths ``(1024, 256, 128)`` maps tokens of width
1024 to tokens of width 128. On request (``return_attention=True``) every block also returns
the head-averaged attention weights of its last layer, for visualisation (call it in eval
mode: in training `nn.MultiheadAttention` returns the weights after attention dropout);
otherwise the fused kernels run (``need_weights=False``).

Token letters: B batch, T mesh-branch tokens, S scene-branch tokens, W width.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor, nn


def _check_widths(widths: Sequence[int], num_heads: int) -> tuple[int, ...]:
    out = tuple(int(w) for w in widths)
    if not out:
        raise ValueError("a cascade needs at least one width")
    for w in out:
        if w % num_heads:
            raise ValueError(f"width {w} is not divisible by num_heads={num_heads}")
    return out


def _layer_blocks(
    layer: Callable[..., nn.Module],
    widths: tuple[int, ...],
    num_layers: int,
    num_heads: int,
    ffn_ratio: float,
    dropout: float,
) -> nn.ModuleList:
    """One block of ``num_layers`` layers per width: ModuleList (blocks) of ModuleList (layers)."""
    return nn.ModuleList(
        nn.ModuleList(
            layer(width=w, num_heads=num_heads, ffn_ratio=ffn_ratio, dropout=dropout)
            for _ in range(num_layers)
        )
        for w in widths
    )


class FeedForward(nn.Sequential):
    """Pre-norm two-layer MLP ``LN -> Linear(W, rW) -> GELU -> Dropout -> Linear(rW, W)``."""

    def __init__(self, width: int, ffn_ratio: float, dropout: float) -> None:
        hidden = max(1, round(width * ffn_ratio))
        super().__init__(
            nn.LayerNorm(width),
            nn.Linear(width, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, width),
            nn.Dropout(dropout),
        )


class _Attention(nn.Module):
    """Pre-norm multi-head attention with a residual-ready output (not added here)."""

    def __init__(self, width: int, num_heads: int, dropout: float, *, cross: bool) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(width)
        self.norm_kv = nn.LayerNorm(width) if cross else None
        self.attn = nn.MultiheadAttention(width, num_heads, dropout=dropout, batch_first=True)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        query: Tensor,
        context: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attention update of ``query`` (B, T, W) over ``context`` (B, S, W) (itself if None).

        Args:
            query: Tensor (B, T, W).
            context: Tensor (B, S, W) keys/values (cross-attention) or None (self-attention).
            key_padding_mask: Bool Tensor (B, S), True where a key is padding.
            need_weights: Also return head-averaged weights (B, T, S).

        Returns:
            ``(update (B, T, W), weights or None)``.
        """
        q = self.norm_q(query)
        kv = q if context is None else self.norm_kv(context)
        out, weights = self.attn(
            q, kv, kv, key_padding_mask=key_padding_mask, need_weights=need_weights,
            average_attn_weights=True,
        )  # fmt: skip
        return self.drop(out), weights


class TransformerLayer(nn.Module):
    """One pre-norm encoder layer: ``x + SelfAttn(LN x)``, then ``x + FFN(LN x)``.

    Args:
        width: Token width W.
        num_heads: Attention heads (must divide W).
        ffn_ratio: Hidden width of the MLP relative to W.
        dropout: Dropout on attention weights and residual branches.
    """

    def __init__(self, *, width: int, num_heads: int, ffn_ratio: float, dropout: float) -> None:
        super().__init__()
        self.self_attn = _Attention(width, num_heads, dropout, cross=False)
        self.ffn = FeedForward(width, ffn_ratio, dropout)

    def forward(
        self, x: Tensor, key_padding_mask: Tensor | None = None, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Args: x Tensor (B, T, W); key_padding_mask bool (B, T) or None.

        Returns:
            ``(x (B, T, W), head-averaged self-attention (B, T, T) or None)``.
        """
        update, weights = self.self_attn(x, None, key_padding_mask, need_weights)
        x = x + update
        return x + self.ffn(x), weights


class TransformerCascade(nn.Module):
    """METRO's encoder: blocks of decreasing width joined by linear down-projections.

    Args:
        widths: Width of each block, e.g. ``(1024, 256, 128)``.
        num_layers: Layers per block.
        num_heads: Attention heads per layer (must divide every width).
        ffn_ratio: MLP hidden width relative to the block width.
        dropout: Dropout probability.

    Attributes:
        widths: The block widths; ``in_width = widths[0]``, ``out_width = widths[-1]``.
    """

    def __init__(
        self,
        *,
        widths: Sequence[int],
        num_layers: int,
        num_heads: int,
        ffn_ratio: float = 4.0,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.widths = _check_widths(widths, num_heads)
        self.blocks = _layer_blocks(
            TransformerLayer, self.widths, num_layers, num_heads, ffn_ratio, dropout
        )
        self.norms = nn.ModuleList(nn.LayerNorm(w) for w in self.widths)
        self.down = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(self.widths[:-1], self.widths[1:])
        )

    @property
    def in_width(self) -> int:
        """Width of the input tokens."""
        return self.widths[0]

    @property
    def out_width(self) -> int:
        """Width of the output tokens."""
        return self.widths[-1]

    def forward(
        self, tokens: Tensor, *, return_attention: bool = False
    ) -> tuple[Tensor, list[Tensor] | None]:
        """Encodes a token sequence.

        Args:
            tokens: Tensor (B, T, widths[0]).
            return_attention: Also return, per block, the last layer's head-averaged
                self-attention weights.

        Returns:
            ``(tokens (B, T, widths[-1]), attention)`` where attention is None or a list with
            one Tensor (B, T, T) per block (rows sum to 1).
        """
        x = tokens
        maps: list[Tensor] = []
        for k, (block, norm) in enumerate(zip(self.blocks, self.norms)):
            for i, layer in enumerate(block):
                want = return_attention and i == len(block) - 1
                x, weights = layer(x, need_weights=want)
                if want:
                    maps.append(weights)
            x = norm(x)
            if k < len(self.down):
                x = self.down[k](x)
        return x, (maps if return_attention else None)


@dataclass
class SceneAwareAttention:
    """Head-averaged attention weights of the last layer of one `SceneAwareCascade` block.

    Attributes:
        mesh: Tensor (B, T, T) self-attention of the mesh branch.
        scene: Tensor (B, S, S) self-attention of the scene branch (padded keys get 0).
        cross: Tensor (B, T, S) mesh-token queries over scene-token keys.
    """

    mesh: Tensor
    scene: Tensor
    cross: Tensor


class SceneAwareLayer(nn.Module):
    """One SA-HMR layer: mesh self-attention, scene self-attention, mesh <- scene
    cross-attention, then an MLP per branch (all pre-norm, residual).

    Args:
        width: Token width W of both branches.
        num_heads: Attention heads (must divide W).
        ffn_ratio: MLP hidden width relative to W.
        dropout: Dropout probability.
    """

    def __init__(self, *, width: int, num_heads: int, ffn_ratio: float, dropout: float) -> None:
        super().__init__()
        self.mesh_attn = _Attention(width, num_heads, dropout, cross=False)
        self.scene_attn = _Attention(width, num_heads, dropout, cross=False)
        self.cross_attn = _Attention(width, num_heads, dropout, cross=True)
        self.mesh_ffn = FeedForward(width, ffn_ratio, dropout)
        self.scene_ffn = FeedForward(width, ffn_ratio, dropout)

    def forward(
        self, mesh: Tensor, scene: Tensor, scene_padding: Tensor, need_weights: bool = False
    ) -> tuple[Tensor, Tensor, SceneAwareAttention | None]:
        """Updates both branches.

        Args:
            mesh: Tensor (B, T, W) mesh-branch tokens.
            scene: Tensor (B, S, W) scene-branch tokens.
            scene_padding: Bool Tensor (B, S), True for padding scene tokens; every row needs
                at least one False (a frame with no contact keeps an always-present token).
            need_weights: Also return the attention weights.

        Returns:
            ``(mesh (B, T, W), scene (B, S, W), weights or None)``.
        """
        update, w_mesh = self.mesh_attn(mesh, None, None, need_weights)
        mesh = mesh + update
        update, w_scene = self.scene_attn(scene, None, scene_padding, need_weights)
        scene = scene + update
        update, w_cross = self.cross_attn(mesh, scene, scene_padding, need_weights)
        mesh = mesh + update
        mesh = mesh + self.mesh_ffn(mesh)
        scene = scene + self.scene_ffn(scene)
        weights = SceneAwareAttention(w_mesh, w_scene, w_cross) if need_weights else None
        return mesh, scene, weights


class SceneAwareCascade(nn.Module):
    """SA-HMR's encoder: `TransformerCascade` with a parallel scene-contact branch.

    Every block runs `SceneAwareLayer` s at one width; between blocks each branch has its own
    linear down-projection.

    Args:
        widths: Width of each block, e.g. ``(1024, 256, 128)``.
        num_layers: Layers per block.
        num_heads: Attention heads per layer (must divide every width).
        ffn_ratio: MLP hidden width relative to the block width.
        dropout: Dropout probability.
    """

    def __init__(
        self,
        *,
        widths: Sequence[int],
        num_layers: int,
        num_heads: int,
        ffn_ratio: float = 4.0,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.widths = _check_widths(widths, num_heads)
        self.blocks = _layer_blocks(
            SceneAwareLayer, self.widths, num_layers, num_heads, ffn_ratio, dropout
        )
        self.mesh_norms = nn.ModuleList(nn.LayerNorm(w) for w in self.widths)
        self.scene_norms = nn.ModuleList(nn.LayerNorm(w) for w in self.widths)
        pairs = list(zip(self.widths[:-1], self.widths[1:]))
        self.mesh_down = nn.ModuleList(nn.Linear(a, b) for a, b in pairs)
        self.scene_down = nn.ModuleList(nn.Linear(a, b) for a, b in pairs)

    @property
    def in_width(self) -> int:
        """Width of the input tokens."""
        return self.widths[0]

    @property
    def out_width(self) -> int:
        """Width of the output tokens."""
        return self.widths[-1]

    def forward(
        self,
        mesh: Tensor,
        scene: Tensor,
        scene_padding: Tensor,
        *,
        return_attention: bool = False,
    ) -> tuple[Tensor, Tensor, list[SceneAwareAttention] | None]:
        """Encodes both token sets.

        Args:
            mesh: Tensor (B, T, widths[0]) mesh-branch tokens.
            scene: Tensor (B, S, widths[0]) scene-branch tokens.
            scene_padding: Bool Tensor (B, S), True for padding (at least one False per row).
            return_attention: Also return per block the last layer's attention weights.

        Returns:
            ``(mesh (B, T, widths[-1]), scene (B, S, widths[-1]), attention)``, attention None
            or one `SceneAwareAttention` per block.
        """
        maps: list[SceneAwareAttention] = []
        for k, block in enumerate(self.blocks):
            for i, layer in enumerate(block):
                want = return_attention and i == len(block) - 1
                mesh, scene, weights = layer(mesh, scene, scene_padding, need_weights=want)
                if want:
                    maps.append(weights)
            mesh, scene = self.mesh_norms[k](mesh), self.scene_norms[k](scene)
            if k < len(self.mesh_down):
                mesh, scene = self.mesh_down[k](mesh), self.scene_down[k](scene)
        return mesh, scene, (maps if return_attention else None)
