"""The one gateway to spconv: quiet import, algorithm choice per device, conv factories.

Every spconv import in sahmr goes through this module, so its quirks live in one place:

* **Import noise.** spconv 2.3 (with cumm/ccimport) emits about eight ``FutureWarning`` s
  (``torch.cuda.amp.custom_fwd/custom_bwd`` deprecation) and one ``DeprecationWarning``
  (``locale.getdefaultlocale``) at import time, and recent torch may log an
  ``is_fx_tracing`` message through logger ``torch.fx._symbolic_trace``. They are
  silenced *around the import only*, filtered by the module that raises them; no filter
  is left installed afterwards, so the caller's warning configuration is untouched.
* **Algorithm.** spconv's default algorithm (``MaskImplicitGemm``) needs CUDA and fails on
  a CPU build of torch ("Torch not compiled with CUDA enabled"); ``ConvAlgo.Native``
  works on both. :func:`default_algo` picks Native on CPU and the library default on
  CUDA. The algorithm is fixed when a layer is constructed (``layer.algo``).
* **Moving a model between devices.** The weight layout of spconv 2.3 convs is the same
  for every algorithm (``KRSC``, ``spconv.pytorch.conv.ALL_WEIGHT_IS_KRSC``), so a model
  built for CPU (Native) can be moved to a GPU with ``model.cuda()`` and then switched
  in place with :func:`set_algo` (``set_algo(model, default_algo("cuda"))``), which sets
  ``.algo`` on every sparse conv; keeping Native on the GPU also works, only slower
  (ENVIRONMENT.md: 14.8 ms vs 7.8 ms for a small U-Net). The reverse move (a model built
  with the CUDA default, run on CPU) *requires* ``set_algo(model, ConvAlgo.Native)``.
  State dicts are interchangeable between algorithms, so rebuilding the model with the
  other ``algo`` and loading the weights is equivalent. Do not mix algorithms between
  layers that share an ``indice_key``: the cached index pairs differ per algorithm.
  Verified on an H100 (spconv-cu121 2.3.8, ``tests/test_sparse.py``): CUDA default,
  CPU-built + ``.cuda()`` + ``set_algo``, and Native-on-GPU all match Native CPU to 1e-5.
  sahmr's own sparse network, `sahmr.models.sparse_unet.SparseUNet` (built with
  ``algo=None``), does this switch itself at every call, from its input's device: models
  are built on the CPU by hydra and moved, and stayed on Native on the GPU until it did.

* **Coordinate memory layout.** spconv reads the coordinate tensor's raw memory and
  ignores strides. ``torch.nonzero`` returns a column-major (non-contiguous) tensor, and
  ``.int()`` keeps that layout, so ``SparseConvTensor(f, mask.nonzero().int(), ...)``
  silently builds wrong neighbour pairs (seen on CPU: almost every off-centre kernel tap
  wrong). Build tensors with :func:`sparse_tensor`, which makes coordinates int32
  contiguous and features contiguous.
* **Log noise at the first forward.** torch logs an ``is_fx_tracing`` deprecation message
  (logger ``torch.fx._symbolic_trace``) the first time a spconv layer runs; a filter on
  that one logger drops records containing ``is_fx_tracing`` and nothing else.

Coordinates given to :class:`SparseConvTensor` are ``[batch, z, y, x]`` int32, C order.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import torch
from torch import nn

logger = logging.getLogger(__name__)

_NOISY_MODULES = (r"spconv(\..*)?", r"cumm(\..*)?", r"ccimport(\..*)?", r"pccm(\..*)?")


class _DropFxTracingMessage(logging.Filter):
    """Drop the ``is_fx_tracing`` log record torch emits while spconv imports."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is_fx_tracing" not in record.getMessage()


_FX_LOGGER = "torch.fx._symbolic_trace"


def _import_spconv_quietly():
    """Import ``spconv.pytorch`` with its import-time warnings filtered by module.

    Returns:
        The ``spconv.pytorch`` module.
    """
    with warnings.catch_warnings():
        for module in _NOISY_MODULES:
            warnings.filterwarnings("ignore", category=FutureWarning, module=module)
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
        import spconv.pytorch as spconv_pytorch
    return spconv_pytorch


_fx_logger = logging.getLogger(_FX_LOGGER)
if not any(isinstance(f, _DropFxTracingMessage) for f in _fx_logger.filters):
    _fx_logger.addFilter(_DropFxTracingMessage())


spconv = _import_spconv_quietly()

SparseConvTensor = spconv.SparseConvTensor
SubMConv3d = spconv.SubMConv3d
SparseConv3d = spconv.SparseConv3d
SparseInverseConv3d = spconv.SparseInverseConv3d
SparseSequential = spconv.SparseSequential
SparseModule = spconv.SparseModule
ConvAlgo = spconv.ConvAlgo

_SparseConvolution = spconv.conv.SparseConvolution

__all__ = [
    "ConvAlgo",
    "SparseConv3d",
    "SparseConvTensor",
    "SparseInverseConv3d",
    "SparseModule",
    "SparseSequential",
    "SubMConv3d",
    "default_algo",
    "inverse_conv3d",
    "set_algo",
    "sparse_conv3d",
    "sparse_tensor",
    "spconv",
    "subm_conv3d",
]

IntOr3 = int | Sequence[int]


def default_algo(device: torch.device | str | None = None) -> ConvAlgo:
    """Return the sparse-conv algorithm to use on a device.

    Args:
        device: target device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``);
            None means CPU.

    Returns:
        ``ConvAlgo.Native`` on CPU; on CUDA, spconv's own default for 3x3x3 kernels,
        ``ConvAlgo.MaskImplicitGemm``.
    """
    if device is None or torch.device(device).type != "cuda":
        return ConvAlgo.Native
    return ConvAlgo.MaskImplicitGemm


def sparse_tensor(
    features: torch.Tensor,
    coords: torch.Tensor,
    spatial_shape: Sequence[int],
    batch_size: int,
) -> SparseConvTensor:
    """Build a :class:`SparseConvTensor` safely (contiguous int32 coordinates).

    Args:
        features: Tensor of shape (K, C), one row per active site.
        coords: integer Tensor of shape (K, 4), ``[batch, z, y, x]`` voxel indices, unique
            rows, any integer dtype and memory layout (converted to contiguous int32).
        spatial_shape: grid size ``[D, H, W]`` (z, y, x); every coordinate must be inside.
        batch_size: B, the number of batch items (coords[:, 0] in ``0..B-1``).

    Returns:
        The sparse tensor on the features' device.
    """
    if coords.ndim != 2 or coords.shape[1] != 4 or features.shape[0] != coords.shape[0]:
        raise ValueError(
            f"expected features (K, C) and coords (K, 4); got {tuple(features.shape)} "
            f"and {tuple(coords.shape)}"
        )
    coords = coords.to(device=features.device, dtype=torch.int32).contiguous()
    return SparseConvTensor(
        features.contiguous(), coords, [int(s) for s in spatial_shape], int(batch_size)
    )


def _resolve_algo(device: torch.device | str | None, algo: ConvAlgo | None) -> ConvAlgo:
    return algo if algo is not None else default_algo(device)


def subm_conv3d(
    in_channels: int,
    out_channels: int,
    kernel_size: IntOr3 = 3,
    *,
    indice_key: str | None = None,
    bias: bool = True,
    device: torch.device | str | None = None,
    algo: ConvAlgo | None = None,
) -> SubMConv3d:
    """Build a submanifold 3D conv (output sites = input sites).

    Args:
        in_channels: C_in.
        out_channels: C_out.
        kernel_size: odd kernel size (int or 3 ints in z, y, x order).
        indice_key: key under which spconv caches index pairs; share it between SubM convs
            of the same resolution.
        bias: add a learned bias.
        device: the device the model will run on; selects the algorithm when ``algo`` is
            None (see :func:`default_algo`). Parameters are created on this device.
        algo: explicit algorithm, overrides ``device``.

    Returns:
        A ``spconv.SubMConv3d`` layer.
    """
    return SubMConv3d(
        in_channels,
        out_channels,
        kernel_size,
        bias=bias,
        indice_key=indice_key,
        algo=_resolve_algo(device, algo),
    ).to(device if device is not None else "cpu")


def sparse_conv3d(
    in_channels: int,
    out_channels: int,
    kernel_size: IntOr3 = 3,
    *,
    stride: IntOr3 = 2,
    padding: IntOr3 = 1,
    indice_key: str | None = None,
    bias: bool = True,
    device: torch.device | str | None = None,
    algo: ConvAlgo | None = None,
) -> SparseConv3d:
    """Build a regular (strided) sparse 3D conv, e.g. a down-sampling step.

    The output spatial shape per axis is ``(S + 2 * padding - kernel_size) // stride + 1``.

    Args:
        in_channels: C_in.
        out_channels: C_out.
        kernel_size: kernel size (int or z, y, x).
        stride: stride (int or z, y, x); 2 halves the resolution.
        padding: zero padding (int or z, y, x).
        indice_key: key to cache the index pairs under; pass the same key to the matching
            :func:`inverse_conv3d` to up-sample back onto exactly these input sites.
        bias: add a learned bias.
        device: target device (chooses the algorithm when ``algo`` is None).
        algo: explicit algorithm, overrides ``device``.

    Returns:
        A ``spconv.SparseConv3d`` layer.
    """
    return SparseConv3d(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=padding,
        bias=bias,
        indice_key=indice_key,
        algo=_resolve_algo(device, algo),
    ).to(device if device is not None else "cpu")


def inverse_conv3d(
    in_channels: int,
    out_channels: int,
    kernel_size: IntOr3 = 3,
    *,
    indice_key: str,
    bias: bool = True,
    device: torch.device | str | None = None,
    algo: ConvAlgo | None = None,
) -> SparseInverseConv3d:
    """Build the inverse of a strided sparse conv (up-sampling onto its input sites).

    Args:
        in_channels: C_in.
        out_channels: C_out.
        kernel_size: must equal the kernel size of the strided conv being inverted.
        indice_key: the ``indice_key`` of the strided conv being inverted.
        bias: add a learned bias.
        device: target device (chooses the algorithm when ``algo`` is None).
        algo: explicit algorithm, overrides ``device``.

    Returns:
        A ``spconv.SparseInverseConv3d`` layer.
    """
    return SparseInverseConv3d(
        in_channels,
        out_channels,
        kernel_size,
        indice_key=indice_key,
        bias=bias,
        algo=_resolve_algo(device, algo),
    ).to(device if device is not None else "cpu")


def set_algo(module: nn.Module, algo: ConvAlgo) -> int:
    """Set the algorithm of every spconv convolution inside a module, in place.

    Use after moving a model between CPU and GPU (see the module docstring); weights are
    unaffected because spconv 2.3 stores them in one layout for every algorithm.

    Args:
        module: any module (a single conv, a SparseSequential, a whole model).
        algo: the algorithm to use from now on.

    Returns:
        The number of conv layers changed.
    """
    count = 0
    for layer in module.modules():
        if isinstance(layer, _SparseConvolution):
            layer.algo = algo
            count += 1
    logger.debug("set algo=%s on %d sparse conv layers", algo, count)
    return count
