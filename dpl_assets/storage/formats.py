"""Codecs per storage format: how one artefact value is written to and read from a file.

Writers go through :func:`atomic_path`, so a file under its final name is always complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import soundfile

from dpl_assets.datatypes import AUDIO_SAMPLE_RATE_HZ, Datatype, StorageFormat
from dpl_assets.media.audio import decode_audio_mono_16k
from dpl_assets.outcomes import StagedFile
from dpl_assets.storage.atomic import atomic_path, atomic_write_text
from dpl_assets.storage.handles import ImageStackRef


class ContractError(ValueError):
    """An array does not satisfy its datatype's shape/dtype contract."""


def check_contract(datatype: Datatype, value: Any, where: str) -> None:
    """Raise :class:`ContractError` when ``value`` breaks ``datatype``'s array contract."""
    if datatype.contract is None:
        return
    if not isinstance(value, np.ndarray):
        raise ContractError(f"{where}: {datatype.key} must be a numpy array, got {type(value)}")
    problem = datatype.contract.violation(value)
    if problem:
        raise ContractError(f"{where}: {datatype.key} has {problem}")


def write_artifact(datatype: Datatype, path: Path, value: Any) -> None:
    """Write ``value`` to ``path`` atomically in ``datatype``'s storage format."""
    check_contract(datatype, value, str(path))
    if datatype.storage is StorageFormat.WAV:
        with atomic_path(path) as temp:
            soundfile.write(temp, value, AUDIO_SAMPLE_RATE_HZ, subtype="PCM_16", format="WAV")
    elif datatype.storage is StorageFormat.NPY:
        # Through a file object: np.save would append ".npy" to a path without it.
        with atomic_path(path) as temp, open(temp, "wb") as file:
            np.save(file, value, allow_pickle=False)
    elif datatype.storage is StorageFormat.JSON:
        atomic_write_text(path, json.dumps(value, indent=1, ensure_ascii=False))
    elif datatype.storage in (StorageFormat.IMAGE_STACK, StorageFormat.FILE):
        if isinstance(value, StagedFile) and datatype.storage is StorageFormat.IMAGE_STACK:
            check_stack_dataset(datatype.key, value.path)
        if not isinstance(value, StagedFile):
            raise TypeError(f"{path}: {datatype.key} must be a StagedFile, got {type(value)}")
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(value.path, path)  # the file was written completely before staging
    else:
        raise ValueError(f"{datatype.key} files are user sources; the pipeline never writes them")


def check_stack_dataset(key: str, path: Path) -> None:
    """Raise ``ValueError`` unless the staged image stack at ``path`` holds its frames in a
    dataset named ``key`` (where every reader looks for them)."""
    with h5py.File(path, "r") as file:
        if key not in file:
            names = ", ".join(sorted(file)) or "nothing"
            raise ValueError(
                f"{path.name}: the image stack of {key!r} has no dataset {key!r} (it has "
                f"{names}); write it with ImageStackWriter(path, {key!r})"
            )


def read_artifact(datatype: Datatype, path: Path) -> Any:
    """Read one artefact; user-given WAVs of another rate or channel count are converted.

    ``wav`` -> float32 (N,) in [-1, 1] at 16 kHz; ``npy`` -> the array (pickles refused);
    ``json`` -> the object; image stacks -> an
    :class:`~dpl_assets.storage.handles.ImageStackRef` (frames are streamed, never loaded
    whole); other files -> their path. The result is checked against the datatype's contract.
    """
    if datatype.storage is StorageFormat.WAV:
        info = soundfile.info(path)
        if info.samplerate == AUDIO_SAMPLE_RATE_HZ and info.channels == 1:
            value: Any = soundfile.read(path, dtype="float32", always_2d=False)[0]
        else:
            value = decode_audio_mono_16k(path)
    elif datatype.storage is StorageFormat.NPY:
        value = np.load(path, allow_pickle=False)
    elif datatype.storage is StorageFormat.JSON:
        value = json.loads(path.read_text(encoding="utf-8"))
    elif datatype.storage is StorageFormat.IMAGE_STACK:
        value = ImageStackRef(Path(path), datatype.key)
    elif datatype.storage is StorageFormat.FILE:
        value = Path(path)
    else:
        raise ValueError(f"{datatype.key} files are decoded by the nodes that use them")
    check_contract(datatype, value, str(path))
    return value
