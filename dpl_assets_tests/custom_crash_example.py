"""A node whose process dies in a spawned ``dpl run`` worker (they have ``DPL_THREADS`` in
their environment; the ``dpl`` process does not): what a worker killed by the OOM killer
looks like to ``dpl run`` (``test_run_pool.py``); and one that crashes in native code
(``test_first_contact.py``)."""

import os

import numpy as np

from dpl_assets.assets.config import NodeConfig
from dpl_assets.datatypes import ArrayContract, Datatype, StorageFormat
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.video_io import VideoIO
from dpl_assets.threads import THREADS_ENV

WAV_LENGTH = Datatype(
    "wav_length",
    StorageFormat.NPY,
    (".npy",),
    "The wav's sample count (1,) int64.",
    ArrayContract((1,), "int64"),
)


def wav_length(io: VideoIO, config: NodeConfig) -> dict[str, np.ndarray]:
    """(1,) int64 samples of the video's wav; the process exits when it is a worker."""
    if os.environ.get(THREADS_ENV):
        os._exit(9)  # as SIGKILL would: no cleanup, no exception
    return {"wav_length": np.array([len(io["wav"])], np.int64)}


CrashInWorkerNode = NodeSpec(
    name="CrashInWorkerNode",
    inputs=("wav",),
    outputs=("wav_length",),
    config=NodeConfig,
    summary="the wav's length; dies in a spawned worker",
    compute=wav_length,
    declares=(WAV_LENGTH,),
)


class SegfaultConfig(NodeConfig):
    """``SegfaultNode``: crash only in spawned workers, or in any process."""

    only_in_workers: bool = False


def wav_length_then_segfault(io: VideoIO, config: SegfaultConfig) -> dict[str, np.ndarray]:
    """Reads address 0, as a crashing native library would (SIGSEGV); with
    ``only_in_workers``, only in a spawned worker (else the wav's length)."""
    import ctypes

    if os.environ.get(THREADS_ENV) or not config.only_in_workers:
        ctypes.string_at(0)
    return {"wav_length": np.array([len(io["wav"])], np.int64)}


SegfaultNode = NodeSpec(
    name="SegfaultNode",
    inputs=("wav",),
    outputs=("wav_length",),
    config=SegfaultConfig,
    summary="crashes the process in native code",
    compute=wav_length_then_segfault,
    declares=(WAV_LENGTH,),
)
