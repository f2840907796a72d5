"""SPIN (Kolotouros et al., ICCV 2019): HMR trained with SMPLify fits made in the training loop.

Per training batch: the regressor (`sahmr.models.hmr.HMR`) predicts the bodies; each
prediction, placed in the camera by perspective-n-point (crop camera), initialises a batched
SMPLify fit (`sahmr.optim.smplify.SMPLify`) to the sample's 2-D keypoints (the ground-truth
SMPL joints projected into the crop; the published method fits OpenPose/ground-truth 2-D
keypoints). The fits dictionary (`FitsDict`) keeps, per training sample, the best fit so far:
the new fit replaces the stored one when its reprojection loss (robust, SMPLify's) is lower.
The better of the two supervises the regressor (`sahmr.losses.hmr.SPINLoss`) when its mean
reprojection error is below ``fit_valid_threshold_px``.

Sample keys. The dictionary needs to know which training sample each batch row is. Pass
``SPIN.forward(inputs, targets, sample_keys=...)`` with either a list of B strings (use
`sample_keys_from_batch`: ``"<source>/<sequence_id>/<frame_index>"``, unique in the
synthetic datasets) or a Tensor (B,) of dataset indices. Without keys the fit still runs and
supervises, but nothing is remembered. The dictionary lives in the module (``fits``): it is
saved in ``state_dict()`` as extra state (one uint8 tensor of ``.npz`` bytes: keys and
tensors, no pickles) and can be written to / read from ``.npz``
(`FitsDict.save_npz`, `FitsDict.load_npz`). Under DDP each process keeps its own dictionary
(the samples it saw); SPIN was published single-GPU.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sahmr.geometry.pnp import estimate_translation
from sahmr.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from sahmr.models.hmr import HMR, HMROutput
from sahmr.optim.smplify import SMPLify, SMPLParams
from sahmr.records import BodyPrediction, FrameInputs, FrameTargets, LossOutput

logger = logging.getLogger(__name__)

__all__ = ["SPIN", "FitsDict", "SPINOutput", "params_from_output", "sample_keys_from_batch"]

SampleKeys = Sequence[str] | Tensor


def sample_keys_from_batch(batch: Any) -> list[str]:
    """Dictionary keys of a `sahmr.data.collate.Batch`: ``"<source>/<sequence_id>/<frame>"``."""
    frames = batch.frame_index.tolist()
    return [f"{s}/{q}/{int(f)}" for s, q, f in zip(batch.source, batch.sequence_id, frames)]


def _as_keys(keys: SampleKeys) -> list[str]:
    if isinstance(keys, Tensor):
        return [str(int(k)) for k in keys.reshape(-1).tolist()]
    return [str(k) for k in keys]


class FitsDict(nn.Module):
    """Best SMPLify fit per training sample (camera-frame parameters and their loss).

    Rows grow as new keys arrive. ``state_dict()`` carries the whole dictionary as extra
    state, so checkpoints and resumes keep it.

    Args:
        num_betas: Shape coefficients stored per fit.
    """

    _FIELDS = ("global_orient", "body_pose", "betas", "transl", "loss")

    def __init__(self, *, num_betas: int = 10) -> None:
        super().__init__()
        self.num_betas = num_betas
        self._clear()

    def _clear(self) -> None:
        self._index: dict[str, int] = {}
        self._data = {
            "global_orient": torch.zeros(0, 3),
            "body_pose": torch.zeros(0, 69),
            "betas": torch.zeros(0, self.num_betas),
            "transl": torch.zeros(0, 3),
            "loss": torch.zeros(0),
        }

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def keys(self) -> list[str]:
        """Stored keys in row order."""
        return sorted(self._index, key=self._index.__getitem__)

    def lookup(
        self, keys: SampleKeys, device: torch.device | str = "cpu"
    ) -> tuple[SMPLParams, Tensor, Tensor]:
        """Stored fits of B samples.

        Returns:
            ``(params, found (B,) bool, loss (B,))``; rows not found hold zeros and loss inf.
        """
        names = _as_keys(keys)
        rows = torch.tensor([self._index.get(k, -1) for k in names], dtype=torch.int64)
        found = rows >= 0
        safe = rows.clamp_min(0)
        out = {}
        for name in self._FIELDS:
            data = self._data[name]
            if len(data) == 0:
                shape = (len(names), *data.shape[1:])
                out[name] = torch.zeros(shape)
            else:
                out[name] = data[safe].clone()
        out["loss"] = torch.where(found, out["loss"], torch.full_like(out["loss"], float("inf")))
        params = SMPLParams(**{k: out[k].to(device) for k in ("global_orient", "body_pose",
                                                              "betas", "transl")})  # fmt: skip
        return params, found.to(device), out["loss"].to(device)

    def update(self, keys: SampleKeys, params: SMPLParams, loss: Tensor, mask: Tensor) -> int:
        """Store ``params`` for the keys where ``mask`` (B,) is true (later rows win).

        Returns:
            Number of rows written.
        """
        names = _as_keys(keys)
        sel = mask.detach().cpu().bool().tolist()
        values = {k: v.detach().float().cpu() for k, v in params.as_dict().items()}
        values["loss"] = loss.detach().float().cpu()
        new_keys = [k for k, m in zip(names, sel) if m and k not in self._index]
        for k in dict.fromkeys(new_keys):
            self._index[k] = len(self._index)
        grow = len(self._index) - len(self._data["loss"])
        if grow > 0:
            for name in self._FIELDS:
                d = self._data[name]
                self._data[name] = torch.cat([d, d.new_zeros((grow, *d.shape[1:]))])
        written = 0
        for i, (k, m) in enumerate(zip(names, sel)):
            if not m:
                continue
            r = self._index[k]
            for name in self._FIELDS:
                self._data[name][r] = values[name][i]
            written += 1
        return written

    # ------------------------------------------------------------------ persistence

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {k: v.numpy() for k, v in self._data.items()}
        arrays["keys"] = np.asarray(self.keys(), dtype=str)
        return arrays

    def _load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self._clear()
        self._index = {str(k): i for i, k in enumerate(arrays["keys"])}
        for name in self._FIELDS:
            self._data[name] = torch.as_tensor(np.asarray(arrays[name])).float().clone()

    def get_extra_state(self) -> Tensor:
        """The dictionary as one uint8 tensor holding ``.npz`` bytes (no pickles), so every
        tool that expects tensors in a state dict (casts, device moves) handles it."""
        buf = io.BytesIO()
        np.savez(buf, **self._arrays())
        return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)

    def set_extra_state(self, state: Tensor) -> None:
        data = bytes(state.detach().cpu().numpy().tobytes())
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            self._load_arrays({k: z[k] for k in z.files})

    def save_npz(self, path: str | Path) -> Path:
        """Write the dictionary (keys as a unicode array; no pickles)."""
        path = Path(path)
        np.savez(path, **self._arrays())
        return path

    def load_npz(self, path: str | Path) -> None:
        """Replace the dictionary by one written with `save_npz` (``allow_pickle=False``)."""
        with np.load(path, allow_pickle=False) as z:
            self._load_arrays({k: z[k] for k in z.files})


@dataclass
class SPINOutput(HMROutput):
    """`HMROutput` plus the fits supervising it (training only; None otherwise).

    Attributes:
        fit_rotmats: Tensor (B, 24, 3, 3) the supervising fit's rotations (root: camera).
        fit_betas: Tensor (B, NB).
        fit_valid: Tensor (B,) bool, fits good enough to supervise.
        fit_reprojection_error_px: Tensor (B,) their mean keypoint error, crop pixels.
        fit_updated: Tensor (B,) bool, rows where the new fit replaced the stored one.
    """

    fit_rotmats: Tensor | None = None
    fit_betas: Tensor | None = None
    fit_valid: Tensor | None = None
    fit_reprojection_error_px: Tensor | None = None
    fit_updated: Tensor | None = None


def params_from_output(out: HMROutput, K_crop: Tensor) -> SMPLParams:
    """Detached camera-frame parameters of an estimate, translation by PnP."""
    B = out.betas.shape[0]
    t = estimate_translation(out.joints.detach(), out.joints2d_crop.detach(), K_crop)
    return SMPLParams(
        global_orient=matrix_to_axis_angle(out.global_orient_rotmat.detach()),
        body_pose=matrix_to_axis_angle(out.body_pose_rotmat.detach()).reshape(B, -1),
        betas=out.betas.detach(),
        transl=t,
    )


class SPIN(nn.Module):
    """SPIN: an HMR regressor supervised by in-the-loop SMPLify fits.

    Args:
        hmr: The regressor (usually without discriminator: SPIN drops the adversarial prior).
        smplify: The fitter (`sahmr.optim.smplify.SMPLify`; SPIN: 100 iterations per stage).
        fits: The fits dictionary.
        fit_valid_threshold_px: A fit supervises only if its mean reprojection error (crop
            pixels) is below this.
        update_fits: Whether training updates the dictionary.
    """

    def __init__(
        self,
        *,
        hmr: HMR,
        smplify: SMPLify,
        fits: FitsDict | None = None,
        fit_valid_threshold_px: float = 10.0,
        update_fits: bool = True,
    ) -> None:
        super().__init__()
        self.hmr = hmr
        self.smplify = smplify
        self.fits = fits if fits is not None else FitsDict()
        self.fit_valid_threshold_px = float(fit_valid_threshold_px)
        self.update_fits = update_fits

    @property
    def has_discriminator(self) -> bool:
        """Whether the wrapped HMR has an adversarial prior (see `HMR.discriminator_step`)."""
        return self.hmr.has_discriminator

    def discriminator_step(self, output: HMROutput) -> LossOutput:
        """The wrapped HMR's discriminator loss (only with an adversarial prior)."""
        return self.hmr.discriminator_step(output)

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """The wrapped HMR's discriminator parameters (none in SPIN's configuration)."""
        return self.hmr.discriminator_parameters()

    def generator_parameters(self) -> list[nn.Parameter]:
        """Every parameter except the discriminator's."""
        skip = {id(p) for p in self.discriminator_parameters()}
        return [p for p in self.parameters() if id(p) not in skip]

    def forward(
        self,
        inputs: FrameInputs,
        targets: FrameTargets | None = None,
        sample_keys: SampleKeys | None = None,
    ) -> SPINOutput:
        """Regress, and in training fit and pick the supervising fits.

        Args:
            inputs: `FrameInputs`.
            targets: Ground truth; its ``joints2d_crop`` are the keypoints fitted (training).
            sample_keys: B strings or a Tensor (B,) of dataset indices (see module docs).

        Returns:
            `SPINOutput`; the ``fit_*`` fields are set in training mode with targets.
        """
        out = self.hmr(inputs, targets)
        result = SPINOutput(**{f.name: getattr(out, f.name) for f in fields(HMROutput)})
        if not self.training or targets is None:
            return result
        K = inputs.K_crop
        kp = targets.joints2d_crop
        init = params_from_output(out, K)
        new = self.smplify(init, kp, K)
        new_loss = self.smplify.fitting_loss(new.params, kp, K)
        chosen, chosen_err = new.params, new.reprojection_error_px
        updated = torch.ones_like(new_loss, dtype=torch.bool)
        if sample_keys is not None:
            stored, found, _ = self.fits.lookup(sample_keys, device=kp.device)
            stored_loss = self.smplify.fitting_loss(stored, kp, K)
            stored_loss = torch.where(found, stored_loss, torch.full_like(stored_loss, np.inf))
            updated = new_loss < stored_loss
            chosen = new.params.where(updated, stored)
            stored_err = self.smplify.reprojection_error(stored, kp, K)
            chosen_err = torch.where(updated, new.reprojection_error_px, stored_err)
            if self.update_fits:
                self.fits.update(sample_keys, new.params, new_loss, updated)
        B = kp.shape[0]
        rot = axis_angle_to_matrix(
            torch.cat([chosen.global_orient[:, None], chosen.body_pose.reshape(B, -1, 3)], 1)
        )
        result.fit_rotmats = rot
        result.fit_betas = chosen.betas
        result.fit_valid = chosen_err < self.fit_valid_threshold_px
        result.fit_reprojection_error_px = chosen_err
        result.fit_updated = updated
        return result

    def predict(self, inputs: FrameInputs) -> BodyPrediction:
        """The regressor's camera-frame bodies (no fitting at test time, as published)."""
        return self.hmr.predict(inputs)
