"""A node defined outside the package, the way a user writes one: a new per-frame datatype,
a config, and a pure compute function, declared as one :class:`NodeSpec`.

A graph names it ``"dpl_assets_tests.custom_node_example:MouthOpeningNode"``
(``test_custom_node.py`` runs it end to end).
"""

import numpy as np
from pydantic import Field

from dpl_assets.assets.config import NodeConfig
from dpl_assets.datatypes import FRAME, ArrayContract, Datatype, StorageFormat
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.video_io import VideoIO

MOUTH_OPENING = Datatype(
    "mouth_opening",
    StorageFormat.NPY,
    (".npy",),
    "Inner-lip gap over mouth width per frame (N,) float32; NaN where no face.",
    ArrayContract(("N",), "float32"),
    per=FRAME,
    nan_rows=True,
)

# iBUG 68-point indices: inner lips (upper, lower middle) and mouth corners.
INNER_UPPER_LIP, INNER_LOWER_LIP, MOUTH_LEFT, MOUTH_RIGHT = 62, 66, 48, 54


class MouthOpeningConfig(NodeConfig):
    """``MouthOpeningNode``."""

    scale: float = Field(default=1.0, gt=0, description="Factor applied to the ratio.")


def mouth_opening(io: VideoIO, config: MouthOpeningConfig) -> dict[str, np.ndarray]:
    """Inner-lip gap over mouth width (N,) float32, times ``scale``, from the landmarks."""
    landmarks = io["landmarks"].astype(np.float64)
    gap = np.linalg.norm(landmarks[:, INNER_UPPER_LIP] - landmarks[:, INNER_LOWER_LIP], axis=-1)
    width = np.linalg.norm(landmarks[:, MOUTH_LEFT] - landmarks[:, MOUTH_RIGHT], axis=-1)
    return {"mouth_opening": (config.scale * gap / width).astype(np.float32)}


MouthOpeningNode = NodeSpec(
    name="MouthOpeningNode",
    inputs=("landmarks",),
    outputs=("mouth_opening",),
    config=MouthOpeningConfig,
    summary="inner-lip gap over mouth width per frame",
    compute=mouth_opening,
    declares=(MOUTH_OPENING,),
)

NOT_A_SPEC = "just a string"
