"""3D face assets: EMOCA parameters, the FLAME mesh and its renders (per video).

- ``emoca`` (``EmocaNode`` on crops, ``EmocaFromImagesNode`` on images cut by bboxes):
  ``shape``, ``tex``, ``exp``, ``pose``, ``cam``, ``light`` per frame;
- ``flame`` (``FlameNode``): ``verts`` and ``landmarks3d`` from shape, exp and pose;
- ``rendering`` (``RenderingNode``): ``render_normal``, ``render_uv``, ``render_mask``
  image stacks from verts, cam and light.

Every input may also be given in the inputs JSON (``shape``, ``exp``, ``pose`` roots of
``.npy`` files, say): the store reads the user's file first, so parameters from elsewhere
go straight into FLAME and rendering. Models load once per process on the node's device.
"""

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, Literal

import numpy as np
from pydantic import Field

from dpl_assets.assets.config import NodeConfig
from dpl_assets.media import timeline
from dpl_assets.nodes import emoca_frames as emoca_inputs
from dpl_assets.outcomes import InputRejected, StagedFile
from dpl_assets.resources import cached_emoca, cached_flame, cached_template
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.image_stack import ImageStackWriter
from dpl_assets.storage.video_io import VideoIO


class EmocaConfig(NodeConfig):
    """``EmocaNode`` (source crops) / ``EmocaFromImagesNode`` (source images + bboxes)."""

    weights_path: str = Field(
        default="", description="EMOCA checkpoint (.ckpt) or DECA model (.tar); see README."
    )
    source: Literal["crops", "images"] = Field(
        default="crops", description="Encode the crops, or crop the images by bboxes on the fly."
    )
    device: str = Field(default="auto", description="'auto', 'cpu' or 'cuda:N'.")
    batch_size: int = Field(default=4, ge=1, description="Images per forward pass.")
    use_smoothing: bool = Field(default=False, description="Savitzky-Golay over time.")


class FlameConfig(NodeConfig):
    """``FlameNode``: FLAME vertices and 68 3D landmarks from shape, expression and pose."""

    flame_model_path: str = Field(default="", description="FLAME generic_model.pkl.")
    flame_lmk_embedding_path: str = Field(default="", description="landmark_embedding.npy.")
    n_shape: int = Field(default=100, ge=1, le=300, description="Shape coefficients used.")
    n_exp: int = Field(default=50, ge=1, le=100, description="Expression coefficients used.")
    batch_size: int = Field(default=256, ge=1, description="Frames per batch.")
    device: str = Field(default="auto", description="'auto', 'cpu' or 'cuda:N'.")


class RenderingConfig(NodeConfig):
    """``RenderingNode``: normal, UV and mask renders of the FLAME mesh."""

    head_template_path: str = Field(default="", description="Head template .obj with UVs.")
    image_size: int = Field(default=224, ge=16, description="Render size, px (square).")
    uv_size: int = Field(default=256, ge=16, description="UV map size, px.")
    batch_size: int = Field(default=16, ge=1, description="Frames per batch.")
    device: str = Field(default="auto", description="'auto', 'cpu' or 'cuda:N'.")
    backend: Literal["auto", "torch", "pytorch3d"] = Field(
        default="auto", description="Rasterizer: pytorch3d when importable, else pure torch."
    )


EMOCA_OUTPUTS = ("shape", "tex", "exp", "pose", "cam", "light")
FLAME_OUTPUTS = ("verts", "landmarks3d")
RENDER_OUTPUTS = ("render_normal", "render_uv", "render_mask")
FRAMES_PER_CHUNK = 64  # frames decoded and encoded at a time: bounded memory


def emoca_frames(io: VideoIO, source: str, side: int) -> Iterator[np.ndarray]:
    """uint8 (side, side, 3) RGB face crops of one video, streamed: its ``crops`` resized,
    or its ``images`` cut by its ``bboxes`` (the original's EmocaFromImagesNode)."""
    if source == "crops":
        with io["crops"].open() as stack:
            yield from emoca_inputs.resized(stack, side)
        return
    with io["images"].open() as stack:
        yield from emoca_inputs.cut(stack, io["bboxes"], side)


def emoca_model(config: EmocaConfig, device: Callable[[], str]) -> Any:
    """The EMOCA/DECA encoders of ``weights_path``, loaded once per process on the device."""
    return cached_emoca(config.weights_path, device())


def encode_emoca(io: VideoIO, config: EmocaConfig) -> dict[str, np.ndarray]:
    """EMOCA parameters per frame: ``shape`` (N, 100), ``tex`` (N, 50), ``exp`` (N, 50),
    ``pose`` (N, 6), ``cam`` (N, 3), ``light`` (N, 9, 3); smoothed over time when asked.
    The encoders load once per process on the node's device."""
    import torch  # torch and the 3D nodes load with these nodes, not with the package

    from dpl_assets.face3d.emoca import EMOCA_INPUT_SIZE, smooth_parameters

    frames = emoca_frames(io, config.source, EMOCA_INPUT_SIZE)
    parts = [
        io.model.encode(torch.from_numpy(chunk), batch_size=config.batch_size)
        for chunk in emoca_inputs.batches(frames, FRAMES_PER_CHUNK)
    ]
    if not parts:
        raise InputRejected("no frames to encode")
    params = {key: np.concatenate([p[key] for p in parts]) for key in EMOCA_OUTPUTS}
    return smooth_parameters(params) if config.use_smoothing else params


def flame_model(config: FlameConfig, device: Callable[[], str]) -> Any:
    """The FLAME layer of the model files, loaded once per process, on the device."""
    return cached_flame(
        config.flame_model_path, config.flame_lmk_embedding_path, config.n_shape, config.n_exp
    ).to(device())


def flame_mesh(io: VideoIO, config: FlameConfig) -> dict[str, np.ndarray]:
    """FLAME mesh per frame: ``verts`` (N, 5023, 3) and ``landmarks3d`` (N, 68, 3), metres,
    from the first ``n_shape`` shape and ``n_exp`` expression coefficients and the pose
    (global + jaw; neck and eyes zero). Rejects parameters of different frame counts."""
    layer = io.model
    counts = {key: io[key].shape[0] for key in ("shape", "exp", "pose")}
    if len(set(counts.values())) != 1:
        raise InputRejected(f"shape, exp and pose disagree on the frame count: {counts}")
    verts, landmarks3d = layer.forward_numpy(
        io["shape"][:, : config.n_shape], io["exp"][:, : config.n_exp], io["pose"],
        batch_size=config.batch_size,
    )  # fmt: skip
    return {"verts": verts, "landmarks3d": landmarks3d}


def render_times(io: VideoIO, count: int) -> np.ndarray:
    """Timestamps for the renders, by the one frame-time rule: those of the video's crops
    or images with ``count`` frames, else ``i / NOMINAL_FPS`` (parameters brought from
    elsewhere)."""
    timestamps = io.stored_timestamps(("crops", "images"), count)
    if timestamps is not None and timestamps.size != count:
        timestamps = None  # the video's frames are not these frames
    return timeline.frame_times_for(timestamps, count, assume_fps=timeline.NOMINAL_FPS)


RENDER_FORMATS = {"render_normal": "jpeg", "render_uv": "jpeg", "render_mask": "png"}
"""How each render is encoded: the mask is lossless."""


def head_template(config: RenderingConfig, device: Callable[[], str]) -> Any:
    """The head template mesh the renders use (faces and UVs), loaded once per process."""
    return cached_template(config.head_template_path)


def render_mesh(io: VideoIO, config: RenderingConfig) -> dict[str, StagedFile]:
    """Renders per frame: ``render_normal``, ``render_uv`` (JPEG) and ``render_mask`` (PNG)
    image stacks at ``image_size``, orthographic camera from ``cam``, spherical-harmonics
    ``light``, the head template's UVs; at the video's frame times (:func:`render_times`)."""
    import torch

    from dpl_assets.face3d.render import render

    template = io.model
    device = torch.device(io.device)
    count = io["verts"].shape[0]
    if io["cam"].shape[0] != count or io["light"].shape[0] != count:
        raise InputRejected("verts, cam and light disagree on the frame count")
    times = render_times(io, count)
    staged = {key: io.stage(key) for key in RENDER_OUTPUTS}
    with contextlib.ExitStack() as open_writers:  # each writer discards its file on error
        writers = {
            key: open_writers.enter_context(
                ImageStackWriter(path, key, image_format=RENDER_FORMATS[key])  # fps from times
            )
            for key, path in staged.items()
        }
        for start in range(0, count, config.batch_size):
            window = slice(start, start + config.batch_size)
            out = render(
                torch.from_numpy(io["verts"][window]).to(device),
                io["cam"][window], io["light"][window], template,
                config.image_size, config.uv_size, backend=config.backend,
            )  # fmt: skip
            images = {
                "render_normal": out.render_normal.cpu().numpy(),
                "render_uv": out.render_uv.cpu().numpy(),
                "render_mask": np.repeat(out.render_mask.cpu().numpy()[..., None], 3, -1),
            }
            for offset in range(images["render_uv"].shape[0]):
                for key, writer in writers.items():
                    writer.append(np.ascontiguousarray(images[key][offset]), times[start + offset])
    return {key: StagedFile(path) for key, path in staged.items()}


EMOCA_NODE = NodeSpec(
    name="EmocaNode",
    inputs=("crops",),
    outputs=EMOCA_OUTPUTS,
    config=EmocaConfig,
    fixed={"source": "crops"},
    summary="EMOCA/DECA encoders on the crops: FLAME shape, texture, expression, pose, "
    "camera and lighting per frame",
    needs_gpu=True,
    needs_weights=True,
    compute=encode_emoca,
    model=emoca_model,
    preload=("torch",),
    required_params=("weights_path",),
    group="flame",
)
# The same computation under the original's other name: images cut by boxes on the fly.
EMOCA_FROM_IMAGES_NODE = replace(
    EMOCA_NODE,
    name="EmocaFromImagesNode",
    inputs=("images", "bboxes"),
    fixed={"source": "images"},
    summary="EmocaNode on the images cut by bboxes on the fly",
)
FLAME_NODE = NodeSpec(
    name="FlameNode",
    inputs=("shape", "exp", "pose"),
    outputs=FLAME_OUTPUTS,
    config=FlameConfig,
    summary="FLAME 2020 mesh and its 68 landmarks, metres",
    needs_weights=True,
    compute=flame_mesh,
    model=flame_model,
    required_params=("flame_model_path", "flame_lmk_embedding_path"),
    group="flame",
)
RENDERING_NODE = NodeSpec(
    name="RenderingNode",
    inputs=("verts", "cam", "light"),
    outputs=("render_uv", "render_normal", "render_mask"),
    config=RenderingConfig,
    summary="normal, shaded UV and mask renders of the mesh (image stacks)",
    needs_gpu=True,
    needs_weights=True,
    optional_inputs=("crops", "images"),  # their frame times, when the video has them
    compute=render_mesh,
    model=head_template,
    required_params=("head_template_path",),
    group="flame",
)
