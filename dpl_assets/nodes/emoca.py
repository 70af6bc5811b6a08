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

Accepted official files (no download happens here; both need a registration and licence):

1. **EMOCA model folder** (``EMOCA.zip``, ``EMOCA_v2_mp.zip``, ``EMOCA_v2_lr_mse_20.zip``,
   ``EMOCA_v2_lr_cos_1.5.zip``, or EMOCA's repackaged ``DECA.zip``, from
   https://emoca.is.tue.mpg.de, the files fetched by ``gdl_apps/EMOCA/demos/download_assets.sh``
   of github.com/radekd91/emoca). Pass the folder (e.g. ``EMOCA_v2_lr_mse_20/``) or its
   PyTorch Lightning checkpoint
   ``detail/checkpoints/deca-epoch=NN-val_loss/dataloader_idx_0=X.ckpt`` (the ``/`` in the
   metric name makes that a sub-folder). The checkpoint's ``state_dict``
   holds the encoders as ``deca.E_flame.*`` and ``deca.E_expression.*`` (``DecaModule.deca``,
   ``ExpDECA.E_flame`` / ``E_expression``); everything else in it (detail encoder and
   decoder, FLAME buffers, loss networks, optimiser and callback states) is not needed.
2. **DECA's ``deca_model.tar``** (https://deca.is.tue.mpg.de, github.com/yfeng95/DECA
   ``fetch_data.sh``): a dict whose ``E_flame`` entry is the coarse encoder's state dict
   (``encoder.*``, ``layers.*``). DECA has no expression encoder: ``exp`` comes from
   ``E_flame``.

Files are read with ``torch.load(weights_only=True)``: only tensors and plain containers
are rebuilt, nothing in the file can run code. PyTorch Lightning 1.x checkpoints also name
Lightning classes (PL 1.4 keys its ``callbacks`` dict by the callback *class*); those names,
and only names from Lightning's own packages, are rebuilt as inert placeholders that are
then discarded (see :func:`safe_load_checkpoint`). Any other class or function named by
the file is refused with :class:`EmocaLoadError`.
"""

from __future__ import annotations

import logging
import re
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from scipy.signal import savgol_filter
from torch import nn

from dpl_assets.nodes.resnet import RESNET50_FEATURES, ResNet50Backbone

logger = logging.getLogger(__name__)

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

LIGHTNING_PREFIX = "deca."
"""Prefix of the encoders inside an EMOCA Lightning ``state_dict`` (``DecaModule.deca``)."""
_ENCODER_NAMES = ("E_flame", "E_expression")
_MAX_LISTED_KEYS = 5
# A Lightning checkpoint names a handful of classes; more than this means something else.
_MAX_PLACEHOLDER_GLOBALS = 64
# Globals rebuilt as inert placeholders: Lightning's own training metadata only.
_PLACEHOLDER_MODULE_PREFIXES = ("pytorch_lightning.", "lightning.", "lightning_fabric.")
_UNSUPPORTED_GLOBAL = re.compile(r"GLOBAL ([A-Za-z_][\w.]*) (?:was not an allowed global|whose)")


class EmocaLoadError(RuntimeError):
    """The weights file is missing, unsafe, or not in an official EMOCA / DECA layout."""


class EmocaWeightsNotFound(EmocaLoadError, FileNotFoundError):
    """``weights_path`` does not exist or holds no checkpoint; ``filename`` is the path."""

    def __init__(self, message: str, path: str | Path) -> None:
        super().__init__(message)
        self.filename = str(path)

    def __str__(self) -> str:
        # OSError would print "[Errno None] None: <path>" once filename is set.
        return str(self.args[0])


class LightningPlaceholder:
    """Inert stand-in for a class a Lightning checkpoint names (e.g. a callback's class).

    The weights-only unpickler may call, build or use it as a dict key; it keeps nothing
    and runs nothing, and the loader never looks at it again.
    """

    qualified_name = ""

    def __init__(self, *args: object, **kwargs: object) -> None:
        del args, kwargs

    def __setstate__(self, state: object) -> None:
        del state


# ---------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------


class ResnetRegressor(nn.Module):
    """The official ``ResnetEncoder``: images (N, 3, 224, 224) in [0, 1] -> (N, outsize).

    Parameter names match DECA's and EMOCA's checkpoints: ``encoder.*`` (ResNet-50,
    torchvision names) and ``layers.0`` / ``layers.2`` (the two Linear layers).
    """

    def __init__(self, outsize: int) -> None:
        super().__init__()
        self.outsize = outsize
        self.encoder = ResNet50Backbone()
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
    Build one from official files with :func:`load_emoca`.

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
        filtered = savgol_filter(array, fitted, order, axis=0, mode="interp")
        smoothed[name] = np.asarray(filtered).astype(array.dtype, copy=False)
    return smoothed


# ---------------------------------------------------------------------------------------
# Loading official weights
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _OfficialState:
    """Encoder tensors keyed by our module names, and how to name keys as the file does."""

    state: dict[str, torch.Tensor]
    layout: str
    file_prefix: str

    def file_key(self, key: str) -> str:
        return self.file_prefix + key


def load_emoca(
    weights_path: str | Path,
    device: str | torch.device = "cpu",
    *,
    expression_pose: ExpressionPose | None = None,
) -> EmocaEncoder:
    """Load official EMOCA or DECA weights into an :class:`EmocaEncoder` in eval mode.

    Args:
        weights_path: an EMOCA model folder (its best ``detail/checkpoints/**/*.ckpt`` is
            used, chosen as EMOCA's ``locate_checkpoint(mode="best")`` does: the lowest
            value after the last ``=`` in the file name, ``last.ckpt`` ignored), an EMOCA
            Lightning ``.ckpt`` file, or DECA's ``deca_model.tar`` (see the module doc).
        device: where to put the weights.
        expression_pose: only needed for an EMOCA whose expression encoder predicts 53
            values (50 expression + the global *or* jaw pose) and whose ``cfg.yaml`` is not
            beside the checkpoint to say which; otherwise inferred (50 -> ``"none"``,
            56 -> ``"both"``).

    Raises:
        EmocaWeightsNotFound: the path does not exist or holds no checkpoint.
        EmocaLoadError: the file is unreadable, names code the safe loader refuses, or its
            keys do not match the official layout (the message lists the first missing and
            unexpected keys with their counts, and shape mismatches).
    """
    path = _resolve_checkpoint(Path(weights_path))
    checkpoint = safe_load_checkpoint(path)
    official = _official_state(checkpoint, path)
    model = _model_for(official, path, expression_pose)
    _check_keys(model, official, path)
    # Checkpoints saved before BatchNorm counted its batches lack these counters; they
    # only matter for training with momentum=None, so keep the module's own.
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            official.state.setdefault(key, value)
    model.load_state_dict(official.state, strict=True)
    model.to(torch.device(device)).eval()
    logger.info(
        "loaded %s encoders from %s (%s) on %s",
        "EMOCA" if model.has_expression_encoder else "DECA",
        path,
        official.layout,
        device,
    )
    return model


def _resolve_checkpoint(path: Path) -> Path:
    if path.is_file():
        return path
    if not path.exists():
        raise _not_found(path, "does not exist")
    if path.is_dir():
        for root in (path / "detail" / "checkpoints", path):
            candidates = sorted(root.rglob("*.ckpt")) if root.is_dir() else []
            best = _best_checkpoint(candidates)
            if best is not None:
                return best
        for name in ("deca_model.tar", "data/deca_model.tar"):
            if (path / name).is_file():
                return path / name
        raise _not_found(path, "holds no EMOCA *.ckpt (detail/checkpoints/) nor deca_model.tar")
    raise _not_found(path, "is not a file or folder")


def _not_found(path: Path, why: str) -> EmocaWeightsNotFound:
    return EmocaWeightsNotFound(
        f"EMOCA/DECA weights {str(path)!r} {why}. Register at https://emoca.is.tue.mpg.de, "
        "download an EMOCA model (e.g. EMOCA_v2_lr_mse_20.zip), unzip it and pass its folder "
        "or its detail/checkpoints/**/*.ckpt; or pass DECA's deca_model.tar "
        "(https://deca.is.tue.mpg.de).",
        path,
    )


def _best_checkpoint(candidates: list[Path]) -> Path | None:
    """EMOCA's "best" rule: the lowest metric after the last ``=``; ``last.ckpt`` ignored."""
    scored: list[tuple[float, Path]] = []
    for candidate in candidates:
        if candidate.stem == "last":
            continue
        try:
            scored.append((float(candidate.stem.rsplit("=", 1)[-1]), candidate))
        except ValueError:
            continue
    if scored:
        return min(scored, key=lambda item: item[0])[1]
    # No metric in the names (a renamed file): a single checkpoint is unambiguous.
    others = [candidate for candidate in candidates if candidate.stem != "last"]
    if len(others) == 1:
        return others[0]
    if others:
        raise EmocaLoadError(
            f"several checkpoints without a metric in their names, pass one of: "
            f"{_listing(str(other) for other in others)}"
        )
    return candidates[0] if candidates else None


def safe_load_checkpoint(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU, accepting Lightning metadata.

    PyTorch Lightning checkpoints name a few Lightning classes (PL 1.4 keys
    ``checkpoint["callbacks"]`` by the callback class, e.g.
    ``pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint``). The weights-only
    unpickler refuses any class it does not know. Names from Lightning's packages
    (``pytorch_lightning.``, ``lightning.``, ``lightning_fabric.``) are therefore allowed as
    :class:`LightningPlaceholder` subclasses, which run no code; numpy scalars and dtypes
    (a metric stored as a numpy value) are rebuilt with numpy's own constructors, as
    torch's documentation suggests. Any other name, e.g. ``os.system`` or ``builtins.eval``,
    is refused.

    Raises:
        EmocaWeightsNotFound: no such file.
        EmocaLoadError: unreadable file, or a refused global (named in the message).
    """
    path = Path(path)
    if not path.is_file():
        raise _not_found(path, "does not exist")
    is_zip = zipfile.is_zipfile(path)
    names: set[str] = set()
    if is_zip:
        # One static pass over the pickle finds every name, so a single load suffices.
        try:
            names.update(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except Exception as error:
            raise EmocaLoadError(
                f"{str(path)!r} is not a readable torch checkpoint: {error}"
            ) from error
    for _ in range(_MAX_PLACEHOLDER_GLOBALS):
        allowed: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = [
            entry for name in sorted(names) for entry in _allowed_globals(name, path)
        ]
        try:
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            # Legacy (non-zip) files cannot be scanned ahead: learn names one failure at a time.
            match = _UNSUPPORTED_GLOBAL.search(str(error))
            if match is None or match.group(1) in names:
                raise EmocaLoadError(
                    f"{str(path)!r} could not be loaded safely as a torch checkpoint: {error}"
                ) from error
            names.add(match.group(1))
    raise EmocaLoadError(
        f"{str(path)!r} names more than {_MAX_PLACEHOLDER_GLOBALS} Python classes; "
        "not an EMOCA/DECA checkpoint"
    )


def _allowed_globals(name: str, path: Path) -> list[tuple[Callable[..., Any], str]]:
    """What the weights-only unpickler may use for the global ``name``, or a refusal."""
    if name.startswith(_PLACEHOLDER_MODULE_PREFIXES):
        placeholder = type(
            name.rsplit(".", 1)[-1], (LightningPlaceholder,), {"qualified_name": name}
        )
        return [(placeholder, name)]
    module, _, attribute = name.rpartition(".")
    if module in ("numpy.core.multiarray", "numpy._core.multiarray") and attribute == "scalar":
        return [(np.core.multiarray.scalar, name)]  # type: ignore[attr-defined]
    if name == "numpy.dtype" or module == "numpy.dtypes":
        # A rebuilt dtype is an instance of its concrete class (e.g. Float64DType), which
        # the unpickler must also know to restore its state.
        dtype_classes = [
            (value, f"numpy.dtypes.{key}")
            for key, value in vars(np.dtypes).items()
            if isinstance(value, type) and issubclass(value, np.dtype)
        ]
        return [(np.dtype, "numpy.dtype"), *dtype_classes]
    raise EmocaLoadError(
        f"refused to load {str(path)!r}: it names the Python global {name!r}, which could run "
        "code when unpickled. Official EMOCA/DECA checkpoints hold only tensors, plain "
        "containers and PyTorch Lightning metadata."
    )


def _official_state(checkpoint: Any, path: Path) -> _OfficialState:
    if not isinstance(checkpoint, Mapping):
        raise EmocaLoadError(
            f"{str(path)!r} holds a {type(checkpoint).__name__}, not an EMOCA Lightning "
            "checkpoint (dict with 'state_dict') nor DECA's deca_model.tar (dict with 'E_flame')"
        )
    state_dict = checkpoint.get("state_dict")
    if isinstance(state_dict, Mapping):
        state = {
            key[len(LIGHTNING_PREFIX) :]: value
            for key, value in state_dict.items()
            if isinstance(key, str)
            and key.startswith(tuple(f"{LIGHTNING_PREFIX}{name}." for name in _ENCODER_NAMES))
        }
        if any(key.startswith("E_expression.resnet.") for key in state):
            raise EmocaLoadError(
                f"{str(path)!r} uses EMOCA's 'deca_parallel' expression backbone "
                "(deca.E_expression.resnet.*), an experimental variant that the released "
                "models do not use and this loader does not support"
            )
        return _OfficialState(_tensors(state, path), "EMOCA Lightning state_dict", LIGHTNING_PREFIX)
    coarse = checkpoint.get("E_flame")
    if isinstance(coarse, Mapping):
        state = {f"E_flame.{key}": value for key, value in coarse.items()}
        return _OfficialState(_tensors(state, path), "DECA deca_model.tar['E_flame']", "")
    keys = ", ".join(repr(key) for key in list(checkpoint)[:_MAX_LISTED_KEYS])
    raise EmocaLoadError(
        f"{str(path)!r} is neither an EMOCA Lightning checkpoint (top-level 'state_dict' with "
        f"'deca.E_flame.*' keys) nor DECA's deca_model.tar (top-level 'E_flame'); its "
        f"top-level keys are {keys}{' ...' if len(checkpoint) > _MAX_LISTED_KEYS else ''}"
    )


def _tensors(state: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    bad = [key for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if bad:
        raise EmocaLoadError(
            f"{str(path)!r}: encoder entries that are not tensors: {_listing(bad)}"
        )
    return dict(state)


def _model_for(
    official: _OfficialState, path: Path, expression_pose: ExpressionPose | None
) -> EmocaEncoder:
    head = official.state.get("E_expression.layers.2.weight")
    has_expression = any(key.startswith("E_expression.") for key in official.state)
    if not has_expression:
        return EmocaEncoder(expression_outputs=None)
    if head is None or head.ndim != 2:
        # Build the released shape; the key check then names what is missing.
        return EmocaEncoder(expression_outputs=N_EXP, expression_pose="none")
    outputs = int(head.shape[0])
    if expression_pose is None:
        expression_pose = _infer_expression_pose(outputs, path)
    try:
        return EmocaEncoder(expression_outputs=outputs, expression_pose=expression_pose)
    except ValueError as error:
        raise EmocaLoadError(f"{str(path)!r}: {error}") from error


def _infer_expression_pose(outputs: int, path: Path) -> ExpressionPose:
    if outputs == N_EXP:
        return "none"
    if outputs == N_EXP + 6:
        return "both"
    if outputs == N_EXP + 3:
        from_config = _expression_pose_from_config(path)
        if from_config is not None:
            return from_config
        raise EmocaLoadError(
            f"{str(path)!r}: the expression encoder predicts {outputs} values (expression + "
            "global or jaw pose) and no cfg.yaml beside the checkpoint says which; pass "
            "expression_pose='global' or 'jaw' (exp_deca_global_pose / exp_deca_jaw_pose)"
        )
    raise EmocaLoadError(
        f"{str(path)!r}: the expression encoder predicts {outputs} values; expected "
        f"{N_EXP}, {N_EXP + 3} or {N_EXP + 6} (expression [+ global/jaw pose])"
    )


def _expression_pose_from_config(path: Path) -> ExpressionPose | None:
    """Read ``exp_deca_{global,jaw}_pose`` from the model folder's ``cfg.yaml``, if any."""
    import yaml

    for folder in list(path.parents)[:5]:
        config_path = folder / "cfg.yaml"
        if not config_path.is_file():
            continue
        try:
            config = yaml.safe_load(config_path.read_text())
            model = config["detail"]["model"]
            global_pose = bool(model["exp_deca_global_pose"])
            jaw_pose = bool(model["exp_deca_jaw_pose"])
        except (yaml.YAMLError, KeyError, TypeError, OSError):
            return None
        if global_pose and jaw_pose:
            return "both"
        return "global" if global_pose else "jaw" if jaw_pose else "none"
    return None


def _check_keys(model: EmocaEncoder, official: _OfficialState, path: Path) -> None:
    expected = {key: value.shape for key, value in model.state_dict().items()}
    given = official.state
    missing = [
        key for key in expected if key not in given and not key.endswith("num_batches_tracked")
    ]
    unexpected = [key for key in given if key not in expected]
    mismatched = [
        f"{official.file_key(key)}: file {tuple(given[key].shape)} vs model {tuple(shape)}"
        for key, shape in expected.items()
        if key in given and given[key].shape != shape
    ]
    if not (missing or unexpected or mismatched):
        return
    lines = [f"{str(path)!r} does not match the official {official.layout} layout:"]
    if missing:
        lines.append(f"missing keys: {_listing(official.file_key(key) for key in missing)}")
    if unexpected:
        lines.append(f"unexpected keys: {_listing(official.file_key(key) for key in unexpected)}")
    if mismatched:
        lines.append(f"shape mismatches: {_listing(mismatched)}")
    raise EmocaLoadError("\n".join(lines))


def _listing(items: Iterable[str]) -> str:
    items = list(items)
    shown = ", ".join(items[:_MAX_LISTED_KEYS])
    more = f", ... ({len(items)} in total)" if len(items) > _MAX_LISTED_KEYS else f" ({len(items)})"
    return shown + more
