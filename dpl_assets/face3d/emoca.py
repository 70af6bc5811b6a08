"""EMOCA / DECA face-parameter encoders: 224x224 face crops -> FLAME, camera and light codes.

Both models regress, from one RGB face crop in [0, 1] (no mean/std normalisation):

==========  ===========  ============================================================
group       shape        meaning
==========  ===========  ============================================================
``shape``   (N, 100)     FLAME identity (shape) coefficients
``tex``     (N, 50)      albedo coefficients (BFM texture space adapted to FLAME)
``exp``     (N, 50)      FLAME expression coefficients
``pose``    (N, 6)       axis-angle radians: global head rotation (3), then jaw (3)
``cam``     (N, 3)       weak-perspective camera: scale, tx, ty (normalised image units)
``light``   (N, 9, 3)    second-order spherical-harmonics coefficients, 9 bands x RGB
==========  ===========  ============================================================

- DECA's coarse encoder ``E_flame``: ResNet-50 -> 2048 -> Linear 1024 -> ReLU -> Linear 236,
  split in the order above (100 + 50 + 50 + 6 + 3 + 27).
- EMOCA adds ``E_expression``, a second ResNet-50 regressor of the same shape whose output
  replaces ``exp`` (and, in configurations that ask for it, the global and/or jaw pose).

Sources: DECA (Feng et al. 2021, github.com/yfeng95/DECA ``decalib/models/encoders.py``)
and EMOCA (Danecek et al. 2022, github.com/radekd91/emoca ``gdl/models/DECA.py``).
Official weights load with :func:`dpl_assets.face3d.weights.load_emoca`; this module also
holds the original's optional temporal smoothing of the parameters
(:func:`smooth_parameters`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, get_args

import numpy as np
import torch
from torch import nn

from dpl_assets.face3d.resnet import RESNET50_FEATURES, resnet50_backbone

EMOCA_INPUT_SIZE = 224
"""Side of the square RGB crops the encoders were trained on, in pixels."""
PARAMETER_SIZES: dict[str, int] = {
    "shape": 100,
    "tex": 50,
    "exp": 50,
    "pose": 6,
    "cam": 3,
    "light": 27,
}
"""Width of each group in ``E_flame``'s output vector, in output order (DECA's ``param_list``)."""
COARSE_OUTPUTS = sum(PARAMETER_SIZES.values())
"""236: the coarse encoder's output width."""
N_EXP = PARAMETER_SIZES["exp"]
REGRESSOR_HIDDEN = 1024
"""Hidden width of the two-layer regressor behind each backbone."""
LIGHT_SHAPE = (9, 3)
"""Spherical-harmonics bands x RGB; row-major from the 27 outputs, as DECA reshapes them."""

SMOOTHING_WINDOW = 9
"""Default Savitzky-Golay window in frames (0.36 s at 25 fps)."""
SMOOTHING_ORDER = 4
"""Default Savitzky-Golay polynomial order. With the 9-frame window the response stays
above -3 dB up to 0.41 x Nyquist (5.1 Hz at 25 fps, 6.1 Hz at 30 fps), so speech-rate jaw
and lip motion passes, while white frame-to-frame jitter drops to 0.65 x its RMS. (Order 3
would cut at 3 Hz and flatten syllable-rate mouth motion.)"""

ExpressionPose = Literal["none", "global", "jaw", "both"]
"""Which pose part EMOCA's expression encoder also predicts (``exp_deca_global_pose`` /
``exp_deca_jaw_pose`` in its config): its output is 50 + 0, 3, 3 or 6 wide."""
_EXPRESSION_POSE_WIDTH: dict[str, int] = {"none": 0, "global": 3, "jaw": 3, "both": 6}


# ---------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------


class ResnetRegressor(nn.Module):
    """The official ``ResnetEncoder``: images (N, 3, 224, 224) in [0, 1] -> (N, outsize).

    Parameter names match DECA's and EMOCA's checkpoints: ``encoder.*`` (ResNet-50 with
    torchvision's names, :func:`~dpl_assets.face3d.resnet.resnet50_backbone`) and
    ``layers.0`` / ``layers.2`` (the two Linear layers).
    """

    def __init__(self, outsize: int) -> None:
        super().__init__()
        self.outsize = outsize
        self.encoder = resnet50_backbone()
        self.layers = nn.Sequential(
            nn.Linear(RESNET50_FEATURES, REGRESSOR_HIDDEN),
            nn.ReLU(),
            nn.Linear(REGRESSOR_HIDDEN, outsize),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float in [0, 1] -> (N, outsize) float, unbounded (no last op)."""
        return self.layers(self.encoder(images))


class EmocaEncoder(nn.Module):
    """EMOCA (``E_flame`` + ``E_expression``) or DECA (``E_flame`` only) encoders.

    Module names equal the official ones after the checkpoint prefix (``deca.``) is
    stripped, so ``load_state_dict(strict=True)`` takes an official state dict as is.
    Build one from official files with :func:`dpl_assets.face3d.weights.load_emoca`.

    Args:
        expression_outputs: width of ``E_expression``'s output, ``None`` for DECA (no
            expression encoder). Must be 50 + the width ``expression_pose`` implies.
        expression_pose: which pose part ``E_expression`` predicts besides ``exp``;
            ``"none"`` in the released EMOCA configuration.
    """

    def __init__(
        self,
        expression_outputs: int | None = N_EXP,
        expression_pose: ExpressionPose = "none",
    ) -> None:
        super().__init__()
        if expression_pose not in _EXPRESSION_POSE_WIDTH:
            raise ValueError(
                f"expression_pose must be one of {get_args(ExpressionPose)}, "
                f"got {expression_pose!r}"
            )
        if expression_outputs is not None:
            expected = N_EXP + _EXPRESSION_POSE_WIDTH[expression_pose]
            if expression_outputs != expected:
                raise ValueError(
                    f"expression_pose={expression_pose!r} needs an expression encoder with "
                    f"{expected} outputs, got {expression_outputs}"
                )
        self.expression_pose: ExpressionPose = expression_pose
        self.E_flame = ResnetRegressor(COARSE_OUTPUTS)
        self.E_expression: ResnetRegressor | None = None
        if expression_outputs is not None:
            self.E_expression = ResnetRegressor(expression_outputs)

    @property
    def has_expression_encoder(self) -> bool:
        """True for EMOCA (``exp`` from ``E_expression``), False for DECA."""
        return self.E_expression is not None

    @property
    def device(self) -> torch.device:
        """Device holding the weights (inputs are moved there)."""
        return next(self.parameters()).device

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Images (N, 3, 224, 224) float in [0, 1] -> parameter groups (see module doc).

        ``exp`` (and the pose part named by ``expression_pose``) come from
        ``E_expression`` when there is one, as EMOCA's ``ExpDECA.decompose_code`` does.
        """
        code = self.E_flame(images)
        params: dict[str, torch.Tensor] = {}
        start = 0
        for name, width in PARAMETER_SIZES.items():
            params[name] = code[:, start : start + width]
            start += width
        params["light"] = params["light"].reshape(code.shape[0], *LIGHT_SHAPE)
        if self.E_expression is not None:
            expression = self.E_expression(images)
            params["exp"] = expression[:, :N_EXP]
            extra = expression[:, N_EXP:]
            pose = params["pose"]
            if self.expression_pose == "both":
                params["pose"] = extra
            elif self.expression_pose == "global":
                params["pose"] = torch.cat([extra, pose[:, 3:]], dim=1)
            elif self.expression_pose == "jaw":
                params["pose"] = torch.cat([pose[:, :3], extra], dim=1)
        return params

    def encode(
        self, images: torch.Tensor | np.ndarray, batch_size: int = 4
    ) -> dict[str, np.ndarray]:
        """Run the encoders over ``images`` in batches, without gradients, in eval mode.

        Args:
            images: (N, 3, 224, 224) float RGB in [0, 1], on any device (torch) or numpy.
                Each batch is moved to the weights' device.
            batch_size: frames per forward pass (the original's default is 4).

        Returns:
            float32 numpy arrays on the host: ``shape`` (N, 100), ``tex`` (N, 50), ``exp``
            (N, 50), ``pose`` (N, 6), ``cam`` (N, 3), ``light`` (N, 9, 3). N = 0 gives
            empty arrays of those shapes.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        batch = torch.as_tensor(images)
        _check_images(batch)
        device = self.device
        outputs: dict[str, list[np.ndarray]] = {name: [] for name in PARAMETER_SIZES}
        was_training = self.training
        # BatchNorm must use its running statistics, whatever mode the caller left us in.
        self.eval()
        try:
            with torch.no_grad():
                for start in range(0, batch.shape[0], batch_size):
                    chunk = batch[start : start + batch_size].to(device, torch.float32)
                    for name, value in self(chunk).items():
                        outputs[name].append(value.float().cpu().numpy())
        finally:
            self.train(was_training)
        return {
            name: (
                np.concatenate(chunks).astype(np.float32, copy=False)
                if chunks
                else np.zeros((0, *_group_shape(name)), np.float32)
            )
            for name, chunks in outputs.items()
        }


def _group_shape(name: str) -> tuple[int, ...]:
    return LIGHT_SHAPE if name == "light" else (PARAMETER_SIZES[name],)


def _check_images(images: torch.Tensor) -> None:
    expected = (3, EMOCA_INPUT_SIZE, EMOCA_INPUT_SIZE)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise ValueError(
            f"images must be (N, {', '.join(map(str, expected))}), got {tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise ValueError(f"images must be float in [0, 1], got dtype {images.dtype}")
    if images.numel():
        low, high = float(images.min()), float(images.max())
        # A small tolerance for resampling overshoot; 0..255 input is the mistake to catch.
        if low < -0.01 or high > 1.01:
            raise ValueError(f"images must be in [0, 1], got values in [{low:.3g}, {high:.3g}]")


# ---------------------------------------------------------------------------------------
# Smoothing
# ---------------------------------------------------------------------------------------


def smooth_parameters(
    params: Mapping[str, np.ndarray],
    window: int = SMOOTHING_WINDOW,
    order: int = SMOOTHING_ORDER,
) -> dict[str, np.ndarray]:
    """Savitzky-Golay filter of every parameter group along time (axis 0).

    The original pipeline's ``use_smoothing`` for EMOCA outputs. Each group, e.g. ``exp``
    (T, 50) or ``light`` (T, 9, 3), is filtered per coefficient over ``window`` frames with
    a polynomial of degree ``order`` (``scipy.signal.savgol_filter``, ``mode="interp"``: the
    ends are fitted, not padded). Shapes and dtypes are kept. Axis-angle poses are filtered
    component-wise, which is sound for the small frame-to-frame rotations of a face.

    Short clips: the window shrinks to the longest odd length that fits in T frames; when
    that leaves no more than ``order + 1`` frames, the polynomial would pass through every
    point, so the group is returned unchanged (a copy).

    Raises:
        ValueError: ``window`` is not a positive odd number, ``order`` is negative or not
            below ``window``, or a group holds non-finite values.
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd number of frames, got {window}")
    if order < 0 or order >= window:
        raise ValueError(f"order must be in [0, window), got order={order}, window={window}")
    smoothed: dict[str, np.ndarray] = {}
    for name, values in params.items():
        array = np.asarray(values)
        if not np.isfinite(array).all():
            raise ValueError(f"parameter group {name!r} holds NaN or inf values")
        frames = array.shape[0] if array.ndim else 0
        fitted = min(window, frames if frames % 2 else frames - 1)
        if fitted <= order + 1:
            smoothed[name] = array.copy()
            continue
        from scipy.signal import savgol_filter  # here: scipy loads in ~0.3 s

        filtered = savgol_filter(array, fitted, order, axis=0, mode="interp")
        smoothed[name] = np.asarray(filtered).astype(array.dtype, copy=False)
    return smoothed
