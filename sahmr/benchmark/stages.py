"""Per-stage timing of a method without re-implementing its forward pass.

A stage is one or more of the method's own submodules (by dotted path, e.g.
``"mesh_net.encoder"``). `capture_calls` runs the method once with hooks that record the
arguments each of those submodules received (and what it returned); a `Stage` then re-calls
the submodules on exactly those arguments. Work that is not a submodule (the RCNet's ROI
selection, voxelisation and vote) is timed by a `Stage` built around a closure instead.

Speed-ups are applied to submodules in place, reversibly (`ModuleSwaps`):

* `compile_modules`: ``torch.compile`` of chosen submodules;
* `CudaGraphModule`: replays a CUDA graph per input signature (static shapes only: every new
  batch size or sequence length captures a new graph), for the image backbones, heads and
  up-sampling. The sparse stage (data-dependent voxel counts, spconv's host-side index
  building) and the SA-HMR transformer (scene-token count varies per batch) are dynamic and
  are not graphed.

Captures run on the original submodules (`ModuleSwaps.originals`), so hooks never run inside
compiled code or graph capture.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

__all__ = [
    "LAYOUTS",
    "CapturedCall",
    "CudaGraphModule",
    "ModuleSwaps",
    "Stage",
    "StageLayout",
    "capture_calls",
    "compile_modules",
    "graph_modules",
    "module_stage",
    "parameter_megabytes",
]


# ---------------------------------------------------------------------------- captures


@dataclass
class CapturedCall:
    """The first call of a submodule during a captured run.

    Attributes:
        args: Positional arguments as received.
        kwargs: Keyword arguments as received.
        output: What it returned.
    """

    args: tuple
    kwargs: dict[str, Any]
    output: Any


@contextlib.contextmanager
def capture_calls(model: nn.Module, paths: Sequence[str]) -> Iterator[dict[str, CapturedCall]]:
    """Record the first call of each named submodule while the block runs.

    Args:
        model: The method.
        paths: Dotted submodule paths (``model.get_submodule(path)``).

    Yields:
        ``path -> CapturedCall``, filled as the submodules run.
    """
    calls: dict[str, CapturedCall] = {}
    handles = []
    for path in paths:
        module = model.get_submodule(path)

        def hook(_m, args, kwargs, output, path=path):
            if path not in calls:
                calls[path] = CapturedCall(tuple(args), dict(kwargs), output)

        handles.append(module.register_forward_hook(hook, with_kwargs=True))
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


def _fresh(value: Any) -> Any:
    """A new spconv tensor with the same features and sites (no cached index pairs)."""
    if type(value).__name__ != "SparseConvTensor":  # spconv is slow to import: only if needed
        return value
    from sahmr.sparse import SparseConvTensor, sparse_tensor

    if isinstance(value, SparseConvTensor):
        return sparse_tensor(value.features, value.indices, value.spatial_shape,
                             value.batch_size)  # fmt: skip
    return value


# ---------------------------------------------------------------------------- stages


@dataclass
class Stage:
    """A named piece of work to time.

    Attributes:
        name: Stage name in reports.
        run: Does the work once (result discarded).
        note: What the stage covers, for reports.
    """

    name: str
    run: Callable[[], Any]
    note: str = ""


def module_stage(
    name: str,
    model: nn.Module,
    paths: Sequence[str],
    calls: dict[str, CapturedCall],
    *,
    note: str = "",
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> Stage:
    """A stage re-calling submodules on their captured arguments, in order.

    The submodule is looked up at call time, so a compiled or graphed replacement (see
    `ModuleSwaps`) is what runs. Sparse tensors are rebuilt per call (spconv caches neighbour
    index pairs in the tensor; a reused tensor would skip that work).

    Args:
        name: Stage name.
        model: The method.
        paths: Submodules, each called with its own captured arguments.
        calls: Captures from `capture_calls`.
        note: Description.
        context: Factory of the context each call runs in (no_grad, autocast...).

    Raises:
        KeyError: If a submodule was not called during the capture.
    """
    missing = [p for p in paths if p not in calls]
    if missing:
        raise KeyError(f"stage {name!r}: submodule(s) {missing} did not run during the capture")

    def run() -> None:
        with context():
            for path in paths:
                call = calls[path]
                args = tuple(_fresh(a) for a in call.args)
                kwargs = {k: _fresh(v) for k, v in call.kwargs.items()}
                model.get_submodule(path)(*args, **kwargs)

    return Stage(name, run, note or " + ".join(paths))


def parameter_megabytes(model: nn.Module) -> float:
    """Bytes of the model's parameters and buffers, MiB."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    total += sum(b.numel() * b.element_size() for b in model.buffers())
    return total / float(1 << 20)


# ---------------------------------------------------------------------------- swaps


def _split(path: str) -> tuple[str, str]:
    parent, _, name = path.rpartition(".")
    return parent, name


@dataclass
class ModuleSwaps:
    """Submodules replaced by faster versions, restorable.

    Attributes:
        model: The method whose submodules are replaced.
        swaps: ``path -> (original, replacement)``.
    """

    model: nn.Module
    swaps: dict[str, tuple[nn.Module, nn.Module]] = field(default_factory=dict)

    def replace(self, path: str, make: Callable[[nn.Module], nn.Module]) -> None:
        """Replace the submodule at ``path`` by ``make(current submodule)``.

        Raises:
            ValueError: If ``path`` is inside, or contains, another replaced path.
        """
        for other in self.swaps:
            if other != path and (other.startswith(path + ".") or path.startswith(other + ".")):
                raise ValueError(f"cannot replace {path!r}: nested with replaced {other!r}")
        parent_path, name = _split(path)
        parent = self.model.get_submodule(parent_path) if parent_path else self.model
        current = getattr(parent, name)
        new = make(current)
        original = self.swaps[path][0] if path in self.swaps else current
        setattr(parent, name, new)
        self.swaps[path] = (original, new)

    def _set(self, which: int) -> None:
        for path, pair in self.swaps.items():
            parent_path, name = _split(path)
            parent = self.model.get_submodule(parent_path) if parent_path else self.model
            setattr(parent, name, pair[which])

    @contextlib.contextmanager
    def originals(self) -> Iterator[nn.Module]:
        """The model with its original submodules inside the block."""
        self._set(0)
        try:
            yield self.model
        finally:
            self._set(1)

    def restore(self) -> None:
        """Put the original submodules back for good."""
        self._set(0)
        self.swaps.clear()


def compile_modules(
    swaps: ModuleSwaps,
    paths: Sequence[str],
    *,
    dynamic: bool | None = None,
    backend: str = "inductor",
    mode: str | None = None,
) -> list[str]:
    """``torch.compile`` the named submodules (those present).

    Args:
        swaps: Where the replacements are recorded.
        paths: Dotted submodule paths; absent ones (e.g. no RCNet) are skipped.
        dynamic: Passed to ``torch.compile`` (True for variable sequence lengths).
        backend: ``torch.compile`` backend (``"eager"`` only checks the plumbing).
        mode: ``torch.compile`` mode (e.g. ``"max-autotune-no-cudagraphs"``).

    Returns:
        The paths compiled.
    """
    done = []
    for path in paths:
        if _has(swaps.model, path):
            swaps.replace(path, lambda m: torch.compile(m, dynamic=dynamic, backend=backend,
                                                        mode=mode))  # fmt: skip
            done.append(path)
    return done


def _has(model: nn.Module, path: str) -> bool:
    try:
        return model.get_submodule(path) is not None
    except AttributeError:
        return False


# ---------------------------------------------------------------------------- CUDA graphs


def _flatten(value: Any) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, list | tuple):
        return [t for v in value for t in _flatten(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _flatten(v)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [t for f in dataclasses.fields(value) for t in _flatten(getattr(value, f.name))]
    return []


def _clone(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.clone()
    if isinstance(value, list | tuple):
        return type(value)(_clone(v) for v in value)
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = copy.copy(value)
        for f in dataclasses.fields(value):
            object.__setattr__(out, f.name, _clone(getattr(value, f.name)))
        return out
    return value


def _signature(value: Any) -> Any:
    if isinstance(value, Tensor):
        return ("T", tuple(value.shape), value.dtype, str(value.device))
    if isinstance(value, list | tuple):
        return (type(value).__name__, tuple(_signature(v) for v in value))
    if isinstance(value, dict):
        return ("D", tuple((k, _signature(v)) for k, v in sorted(value.items())))
    return ("V", repr(value))


def _copy_into(static: Any, value: Any) -> None:
    for s, v in zip(_flatten(static), _flatten(value), strict=True):
        s.copy_(v)


class CudaGraphModule(nn.Module):
    """Runs a module by replaying a CUDA graph captured for each input signature.

    Inference only (call under ``torch.no_grad``). Inputs are copied into static buffers, the
    graph replays, outputs are cloned out of the graph's static buffers. A new signature
    (shapes, dtypes, non-tensor arguments, autocast state) captures a new graph after
    ``warmup`` eager calls on a side stream. The wrapped module must not synchronise with the
    host or change shapes with the data.

    A capture that fails (e.g. a host synchronisation inside the module) is logged, recorded
    in ``failures`` and that signature runs eagerly from then on.

    Args:
        module: The module to graph (``module`` attribute).
        warmup: Eager calls before each capture.

    Attributes:
        failures: One message per signature whose capture failed.
    """

    def __init__(self, module: nn.Module, *, warmup: int = 2) -> None:
        super().__init__()
        self.module = module
        self.warmup = int(warmup)
        self._graphs: dict[Any, tuple[Any, Any, torch.cuda.CUDAGraph, Any] | None] = {}
        self.failures: list[str] = []

    def __getattr__(self, name: str) -> Any:
        """Attributes the wrapper lacks come from the wrapped module (e.g. HMR reads its
        regressor's ``rotation``), so a graphed submodule stands in for the original."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("module"), name)

    @property
    def num_graphs(self) -> int:
        """Graphs captured so far."""
        return sum(g is not None for g in self._graphs.values())

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The module's output for these inputs (graph replay)."""
        if torch.is_grad_enabled():
            raise RuntimeError("CudaGraphModule is inference-only: call it under torch.no_grad")
        autocast = (torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda"))
        key = (_signature(args), _signature(kwargs), autocast)
        if key not in self._graphs:
            try:
                self._graphs[key] = self._capture(args, kwargs)
            except RuntimeError as exc:  # e.g. a host sync inside: run this signature eagerly
                msg = f"{type(self.module).__name__}: {str(exc).splitlines()[0]}"
                logger.warning("CUDA graph capture failed, running eagerly (%s)", msg)
                self.failures.append(msg)
                self._graphs[key] = None
                torch.cuda.synchronize()
        if self._graphs[key] is None:
            return self.module(*args, **kwargs)
        static_args, static_kwargs, graph, static_out = self._graphs[key]
        _copy_into((static_args, static_kwargs), (args, kwargs))
        graph.replay()
        return _clone(static_out)

    def _capture(self, args: tuple, kwargs: dict) -> tuple[Any, Any, torch.cuda.CUDAGraph, Any]:
        static_args, static_kwargs = _clone(args), _clone(kwargs)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(self.warmup):
                self.module(*static_args, **static_kwargs)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.module(*static_args, **static_kwargs)
        logger.debug("captured a CUDA graph for %s", type(self.module).__name__)
        return static_args, static_kwargs, graph, static_out


def graph_modules(swaps: ModuleSwaps, paths: Sequence[str], *, warmup: int = 2) -> list[str]:
    """Wrap the named submodules (those present) in `CudaGraphModule`.

    Returns:
        The paths wrapped.
    """
    done = []
    for path in paths:
        if _has(swaps.model, path):
            swaps.replace(path, lambda m: CudaGraphModule(m, warmup=warmup))
            done.append(path)
    return done


# ---------------------------------------------------------------------------- method layouts

ContextFactory = Callable[[], contextlib.AbstractContextManager]
"""Makes the context every timed call runs in (e.g. bf16 autocast)."""


def _inference(context: ContextFactory) -> ContextFactory:
    """``torch.no_grad()`` plus ``context()``."""

    @contextlib.contextmanager
    def both() -> Iterator[None]:
        with torch.no_grad(), context():
            yield

    return both


@dataclass(frozen=True)
class StageLayout:
    """How a family of methods splits into stages, and which submodules can be sped up.

    Attributes:
        static: Submodules whose shapes depend only on the batch size: compiled and graphed.
        dynamic: Submodules whose shapes vary with the data: compiled with dynamic shapes,
            never graphed.
        build: ``(model, inputs, swaps, context) -> (stages, info)``: captures one forward
            pass on ``inputs`` and returns the `Stage` list and sizes seen (``info``).
        ungraphable: Static submodules that compile but cannot be captured in a CUDA graph
            (host work inside their forward). A failed capture is not harmless: it can leave
            CUDA's random-number generator in capture state for the rest of the process.
    """

    static: tuple[str, ...]
    dynamic: tuple[str, ...]
    build: Callable[..., tuple[list[Stage], dict[str, Any]]]
    ungraphable: tuple[str, ...] = ()

    @property
    def graphable(self) -> tuple[str, ...]:
        """The static submodules to capture in CUDA graphs."""
        return tuple(p for p in self.static if p not in self.ungraphable)


def _sahmr_stages(
    model: nn.Module, inputs: Any, swaps: ModuleSwaps, context: ContextFactory
) -> tuple[list[Stage], dict[str, Any]]:
    """Stages of `sahmr.models.sahmr.SAHMR` (with its RCNet)."""
    from sahmr.models.rcnet import vote_root

    if getattr(model, "rcnet", None) is None:
        raise ValueError("SA-HMR without an RCNet cannot predict: build it with one")
    run_ctx = _inference(context)
    rc_2d = ("rcnet.backbone", "rcnet.neck", "rcnet.heatmap_head", "rcnet.depth_head")
    paths = (*rc_2d, "rcnet.unet", "mesh_net.backbone", "mesh_net.encoder", "mesh_net.upsampler")
    with swaps.originals(), capture_calls(model, paths) as calls, run_ctx():
        out = model(inputs)
    rc, rc_out = model.rcnet, out.rc
    fmap = calls["rcnet.neck"].output
    anchors, coarse = rc_out.anchors_cam, rc_out.root_coarse_cam

    def sparse() -> None:
        with run_ctx():
            voxels, rows, voxel_of_row = rc._sparse_branch(inputs, fmap, anchors)
            vote_root(voxels.confidence, voxels.votes_cam, voxels.batch_idx, coarse)
            rc._select_contacts(inputs, voxels, rows, voxel_of_row)

    scene_tokens = calls["mesh_net.encoder"].args[1]
    stages = [
        module_stage("rcnet_2d", model, rc_2d, calls, context=run_ctx,
                     note="RCNet backbone + neck + heatmap and depth heads"),
        Stage("sparse", sparse, "ROI select + voxelise + image features + sparse U-Net + "
                                "voxel heads + root vote + contact selection"),
        module_stage("sparse_unet", model, ("rcnet.unet",), calls, context=run_ctx,
                     note="the sparse U-Net alone (part of sparse)"),
        module_stage("mesh_backbone", model, ("mesh_net.backbone",), calls, context=run_ctx,
                     note="image backbone of the mesh network"),
        module_stage("transformer", model, ("mesh_net.encoder",), calls, context=run_ctx,
                     note="mesh + scene token encoder"),
        module_stage("upsampling", model, ("mesh_net.upsampler",), calls, context=run_ctx,
                     note="coarse -> full mesh"),
    ]  # fmt: skip
    n_points = 0 if inputs.scene_points_cam is None else int(inputs.scene_points_cam.shape[0])
    info = {
        "frustum_points": n_points,
        "roi_voxels": rc_out.voxels.num_voxels,
        "contact_points": int(out.contact_points_cam.shape[0]),
        "mesh_tokens": int(calls["mesh_net.encoder"].args[0].shape[1]),
        "scene_tokens_per_frame": int(scene_tokens.shape[1]),
    }
    return stages, info


def _metro_stages(
    model: nn.Module, inputs: Any, swaps: ModuleSwaps, context: ContextFactory
) -> tuple[list[Stage], dict[str, Any]]:
    """Stages of `sahmr.models.metro.METRO`."""
    run_ctx = _inference(context)
    paths = ("backbone", "encoder", "upsampler")
    with swaps.originals(), capture_calls(model, paths) as calls, run_ctx():
        model(inputs)
    stages = [
        module_stage("mesh_backbone", model, ("backbone",), calls, context=run_ctx),
        module_stage("transformer", model, ("encoder",), calls, context=run_ctx),
        module_stage("upsampling", model, ("upsampler",), calls, context=run_ctx),
    ]
    return stages, {"mesh_tokens": int(calls["encoder"].args[0].shape[1])}


def _hmr_stages(
    model: nn.Module, inputs: Any, swaps: ModuleSwaps, context: ContextFactory
) -> tuple[list[Stage], dict[str, Any]]:
    """Stages of `sahmr.models.hmr.HMR` (and its subclasses)."""
    run_ctx = _inference(context)
    paths = ("backbone", "regressor", "body_model")
    with swaps.originals(), capture_calls(model, paths) as calls, run_ctx():
        model(inputs)
    stages = [
        module_stage("backbone", model, ("backbone",), calls, context=run_ctx),
        module_stage("regressor", model, ("regressor",), calls, context=run_ctx,
                     note="iterative error feedback"),
        module_stage("body_model", model, ("body_model",), calls, context=run_ctx,
                     note="SMPL-format skinning of the full mesh"),
    ]  # fmt: skip
    return stages, {}


LAYOUTS: dict[str, StageLayout] = {
    "sahmr": StageLayout(
        static=("rcnet.backbone", "rcnet.neck", "rcnet.heatmap_head", "rcnet.depth_head",
                "mesh_net.backbone", "mesh_net.upsampler"),
        dynamic=("mesh_net.encoder",),
        build=_sahmr_stages,
    ),
    "metro": StageLayout(
        static=("backbone", "encoder", "upsampler", "cam_head"), dynamic=(), build=_metro_stages
    ),
    # The SMPL-format body model (smplx) does host work in its forward: its capture fails on
    # the GPU ("operation failed due to a previous error during capture"); compiled only.
    "hmr": StageLayout(static=("backbone", "regressor", "body_model"), dynamic=(),
                       build=_hmr_stages, ungraphable=("body_model",)),
}  # fmt: skip
"""Stage layout per method family (``sahmr``, ``metro``, ``hmr``)."""
