"""Checkpoint loading: the safe torch-checkpoint loader of EMOCA/DECA files, and their weights.

:func:`safe_load_checkpoint` is the face-3D code's only ``torch.load`` (SyncNet's and
wav2vec2's plain weight files are read with ``weights_only`` too): every torch-serialized
file or buffer (EMOCA/DECA checkpoints here, the tensors inside DECA's
``landmark_embedding.npy`` via :mod:`dpl_assets.face3d.safe_pickle`) is read with
``torch.load(weights_only=True)``: only tensors and plain containers are rebuilt, nothing in
the file can run code. PyTorch Lightning 1.x checkpoints also name Lightning classes (PL 1.4
keys its ``callbacks`` dict by the callback *class*); those names, and only names from
Lightning's own packages, are rebuilt as inert :class:`LightningPlaceholder` classes that
are then discarded. Any other class or function named by the file is refused with
:class:`EmocaLoadError`.

:func:`load_emoca` accepts these official files (no download happens here; both need a
registration and licence):

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
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from dpl_assets.face3d.emoca import N_EXP, EmocaEncoder, ExpressionPose

logger = logging.getLogger(__name__)


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
# The safe loader
# ---------------------------------------------------------------------------------------


def safe_load_checkpoint(source: str | Path | IO[bytes], *, label: str | None = None) -> Any:
    """``torch.load(source, weights_only=True)`` onto the CPU, accepting Lightning metadata.

    ``source`` is a file path or a seekable binary stream (read from its current position;
    ``label`` names it in messages, default the path or ``"<torch data>"``). Returns what
    the file holds: tensors (on the CPU) in plain containers.

    PyTorch Lightning checkpoints name a few Lightning classes (PL 1.4 keys
    ``checkpoint["callbacks"]`` by the callback class, e.g.
    ``pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint``). The weights-only
    unpickler refuses any class it does not know. Names from Lightning's packages
    (``pytorch_lightning.``, ``lightning.``, ``lightning_fabric.``) are therefore allowed as
    :class:`LightningPlaceholder` subclasses, which run no code; numpy scalars and dtypes
    (a metric stored as a numpy value) are rebuilt with numpy's own constructors, as
    torch's documentation suggests
    (https://pytorch.org/docs/stable/notes/serialization.html#weights-only). Any other
    name, e.g. ``os.system`` or ``builtins.eval``, is refused.

    Raises:
        EmocaWeightsNotFound: no such file.
        EmocaLoadError: unreadable data, or a refused global (named in the message).
    """
    opened: Callable[[], Path | IO[bytes]]
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise _not_found(path, "does not exist")
        label = label or str(path)
        opened = lambda: path  # noqa: E731
    else:
        label = label or "<torch data>"
        payload = source.read()
        opened = lambda: io.BytesIO(payload)  # noqa: E731  # a fresh stream per attempt
    names = _globals_named_in_zip(opened, label)
    for _ in range(_MAX_PLACEHOLDER_GLOBALS):
        allowed: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = [
            entry for name in sorted(names) for entry in _allowed_globals(name, label)
        ]
        try:
            with torch.serialization.safe_globals(allowed):
                return torch.load(opened(), map_location="cpu", weights_only=True)
        except Exception as error:
            # Legacy (non-zip) files cannot be scanned ahead: learn names one failure at a time.
            match = _UNSUPPORTED_GLOBAL.search(str(error))
            if match is None or match.group(1) in names:
                raise EmocaLoadError(
                    f"{label!r} could not be loaded safely as a torch checkpoint: {error}"
                ) from error
            names.add(match.group(1))
    raise EmocaLoadError(
        f"{label!r} names more than {_MAX_PLACEHOLDER_GLOBALS} Python classes; "
        "not an EMOCA/DECA checkpoint"
    )


def _globals_named_in_zip(opened: Callable[[], Path | IO[bytes]], label: str) -> set[str]:
    """The non-default globals a zip-format checkpoint names (one static pass over its
    pickle, so a single load suffices); empty for a legacy (non-zip) file."""
    if not zipfile.is_zipfile(opened()):
        return set()
    try:
        return set(torch.serialization.get_unsafe_globals_in_checkpoint(opened()))
    except Exception as error:
        raise EmocaLoadError(f"{label!r} is not a readable torch checkpoint: {error}") from error


def _allowed_globals(name: str, label: str) -> list[tuple[Callable[..., Any], str]]:
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
        f"refused to load {label!r}: it names the Python global {name!r}, which could run "
        "code when unpickled. Official EMOCA/DECA checkpoints hold only tensors, plain "
        "containers and PyTorch Lightning metadata."
    )


# ---------------------------------------------------------------------------------------
# Official EMOCA / DECA weights
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
