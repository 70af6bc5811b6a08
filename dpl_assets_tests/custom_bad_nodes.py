"""Custom nodes that must be refused when a graph names them, each with a message saying
what to fix (``test_custom_node.py``)."""

from typing import Any

from dpl_assets.datatypes import Datatype, StorageFormat
from dpl_assets.specs import NodeSpec


def nothing(io: Any, config: Any) -> dict[str, Any]:
    return {}


TALK_VIDEO = Datatype("talk_video", StorageFormat.MEDIA, (".mp4",), "A video it writes.")

MediaOutputNode = NodeSpec(
    name="MediaOutputNode",
    inputs=("wav",),
    outputs=("talk_video",),
    compute=nothing,
    declares=(TALK_VIDEO,),
)
"""Declares a datatype stored as source media: only the user's files are."""

SourceVideoNode = NodeSpec(
    name="SourceVideoNode", inputs=("wav",), outputs=("video",), compute=nothing
)
"""Writes the user's source ``video`` datatype."""

FixedNode = NodeSpec(
    name="FixedNode", inputs=("wav",), outputs=("wav_copy",), compute=nothing, fixed={"x": 1},
    declares=(Datatype("wav_copy", StorageFormat.WAV, (".wav",), "A copy."),),
)  # fmt: skip
"""Declares ``fixed`` (variants of one asset: built-in nodes only)."""

TypoParamNode = NodeSpec(
    name="TypoParamNode", inputs=("wav",), outputs=("wav_copy",), compute=nothing,
    required_params=("floor",),
    declares=(Datatype("wav_copy", StorageFormat.WAV, (".wav",), "A copy."),),
)  # fmt: skip
"""Requires a param its config does not have."""

NoComputeNode = NodeSpec(name="NoComputeNode", inputs=("wav",), outputs=("volume",))
"""Gives no compute function."""
