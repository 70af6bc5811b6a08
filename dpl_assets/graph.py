"""The seed's graph format: node names and params -> an asset selection and its run config.

A graph is a JSON list of ``{"name": "<NodeName>", "params": {...}}`` as in the original
tool. Each node name maps to the asset(s) it materializes and to the typed config of its
main asset; params are validated before any work, and errors list what is valid.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pydantic

from dpl_assets.assets.config import (
    A2enConfig,
    BboxesConfig,
    BlinksConfig,
    ContactSheetConfig,
    CropConfig,
    DatasetPackConfig,
    DatasetSummaryConfig,
    EmocaConfig,
    FaceAlignmentConfig,
    FlameConfig,
    H5DatasetConfig,
    HeadPoseConfig,
    PreviewConfig,
    ProbeConfig,
    RenderingConfig,
    SourceSequenceConfig,
    Vid2vidAudioConfig,
    Vid2vidDatasetConfig,
    VideoToImagesConfig,
    VolumeConfig,
    Wav2vecConfig,
    WavConfig,
)
from dpl_assets.assets.faces import FACE_OUTPUTS
from dpl_assets.discovery import did_you_mean


class GraphError(ValueError):
    """The graph is invalid; the message says what to fix."""


@dataclass(frozen=True)
class NodeSpec:
    """One node name: its main asset, its config, fixed config values, and extra outputs.

    ``also`` lists further assets the node materializes; each gets the node's params that
    its own config accepts (e.g. ``recompute``).
    """

    asset: str
    config: type[dg.Config]  # NodeConfig for per-video nodes (they take ``recompute``)
    fixed: Mapping[str, Any] = field(default_factory=dict)
    also: Mapping[str, type[dg.Config]] = field(default_factory=dict)
    summary: str = ""
    only: tuple[str, ...] = ()  # when set: the params this node takes (besides recompute)

    def param_names(self) -> list[str]:
        fields = set(self.config.model_fields)
        names = (set(self.only) | {"recompute"}) & fields if self.only else fields
        return sorted(names - set(self.fixed))


def _face_node(main: str, summary: str) -> NodeSpec:
    """A node name for the one face computation, whose main output is ``main``."""
    also = {name: FaceAlignmentConfig for name in FACE_OUTPUTS if name != main}
    return NodeSpec(main, FaceAlignmentConfig, also=also, summary=summary)


NODES: dict[str, NodeSpec] = {
    "ProbeNode": NodeSpec("probe", ProbeConfig, summary="video -> probe (JSON record)"),
    "VideoToWavNode": NodeSpec(
        "wav", WavConfig, fixed={"source": "video"}, summary="video -> wav (16 kHz mono)"
    ),
    "AacToWavNode": NodeSpec(
        "wav", WavConfig, fixed={"source": "aac"}, summary="aac -> wav (16 kHz mono)"
    ),
    "VolumeNode": NodeSpec("volume", VolumeConfig, summary="wav -> volume (T,)"),
    "VideoToImagesNode": NodeSpec(
        "images", VideoToImagesConfig, summary="video -> images (HDF5 stack + timestamps)"
    ),
    "FaceAlignmentNode": _face_node(
        "landmarks",
        "images -> landmarks (N, 68, 2), raw_bboxes (N, 5), landmarks_mesh, face_mask, faces",
    ),
    "FaceDetectionNode": _face_node(
        "raw_bboxes", "images -> raw_bboxes (N, 5) and the same face outputs"
    ),
    # Detection, tracking and landmarks are one computation (a graph naming several of
    # these nodes runs it once); where the inputs give a video's raw_bboxes, landmarks are
    # found in those boxes without detection, as the original FaceLandmarksNode did.
    "FaceLandmarksNode": _face_node(
        "landmarks_mesh",
        "images, raw_bboxes (given or detected) -> landmarks (N, 68, 2), landmarks_mesh "
        "(N, 478, 3) and the face outputs",
    ),
    "TransformRawBboxesNode": NodeSpec(
        "bboxes",
        BboxesConfig,
        fixed={"method": "transform_raw"},
        only=("extend_factor",),
        summary="raw_bboxes -> bboxes (N, 4)",
    ),
    "FixedBboxesNode": NodeSpec(
        "bboxes",
        BboxesConfig,
        fixed={"method": "fixed"},
        only=("scale",),
        summary="landmarks -> bboxes (N, 4)",
    ),
    "EmocaLikeBboxesNode": NodeSpec(
        "bboxes",
        BboxesConfig,
        fixed={"method": "emoca_like"},
        only=("scale", "window_size", "use_smoothing", "equal_size", "size_quantile"),
        summary="landmarks -> bboxes (N, 4)",
    ),
    "CropNode": NodeSpec("crops", CropConfig, summary="images, bboxes -> crops (HDF5 stack)"),
    "HeadPoseNode": NodeSpec("head_pose", HeadPoseConfig, summary="landmarks -> head_pose (N, 6)"),
    "BlinksNode": NodeSpec("blinks", BlinksConfig, summary="landmarks -> blinks (N, 3)"),
    "EmocaNode": NodeSpec(
        "shape",
        EmocaConfig,
        fixed={"source": "crops"},
        also={key: EmocaConfig for key in ("tex", "exp", "pose", "cam", "light")},
        summary="crops -> shape, tex, exp, pose, cam, light (EMOCA)",
    ),
    "EmocaFromImagesNode": NodeSpec(
        "shape",
        EmocaConfig,
        fixed={"source": "images"},
        also={key: EmocaConfig for key in ("tex", "exp", "pose", "cam", "light")},
        summary="images, bboxes -> shape, tex, exp, pose, cam, light (EMOCA, cropping on the fly)",
    ),
    "FlameNode": NodeSpec(
        "verts",
        FlameConfig,
        also={"landmarks3d": FlameConfig},
        summary="shape, exp, pose -> verts (N, 5023, 3), landmarks3d (N, 68, 3)",
    ),
    "RenderingNode": NodeSpec(
        "render_uv",
        RenderingConfig,
        also={"render_normal": RenderingConfig, "render_mask": RenderingConfig},
        summary="verts, cam, light -> render_normal, render_uv, render_mask (image stacks)",
    ),
    "H5DatasetNode": NodeSpec(
        "h5_dataset", H5DatasetConfig, summary="datatypes -> h5_dataset (HDF5 per video)"
    ),
    "SourceSequenceNode": NodeSpec(
        "source_sequence",
        SourceSequenceConfig,
        summary="images, bboxes, crops, FLAME params, landmarks, landmarks3d, renders, blinks "
        "-> source_sequence (HDF5)",
    ),
    "Vid2vidAudioNode": NodeSpec(
        "vid2vid_audio",
        Vid2vidAudioConfig,
        summary="crops, wav2vec, volume, blinks -> vid2vid_audio (HDF5, audio on frames)",
    ),
    "Vid2vidDatasetNode": NodeSpec(
        "vid2vid_dataset",
        Vid2vidDatasetConfig,
        summary="crops, render_uv, render_normal -> vid2vid_dataset (HDF5)",
    ),
    "A2enDatasetNode": NodeSpec(
        "a2en",
        A2enConfig,
        summary="wav2vec, volume, exp, pose, landmarks3d -> a2en (.npz)",
    ),
    "PreviewNode": NodeSpec(
        "preview", PreviewConfig, summary="images (+ faces, pose, wav) -> preview (mp4)"
    ),
    "ContactSheetNode": NodeSpec(
        "contact_sheet", ContactSheetConfig, summary="images (+ faces, pose) -> contact_sheet (png)"
    ),
    "DatasetPackNode": NodeSpec(
        "dataset_pack",
        DatasetPackConfig,
        summary="packed files of all videos -> dataset_pack (sharded HDF5 + index)",
    ),
    "DatasetSummaryNode": NodeSpec(
        "dataset_summary",
        DatasetSummaryConfig,
        summary="all videos -> dataset_summary (plots + markdown)",
    ),
    "Wav2vecNode": NodeSpec(
        "wav2vec",
        Wav2vecConfig,
        also={"volume": VolumeConfig},
        summary="wav -> wav2vec (T, D), volume (T,)",
    ),
}


@dataclass
class GraphPlan:
    """What a graph asks Dagster to do: the assets to materialize and their run config."""

    assets: list[str]
    asset_config: dict[str, dict[str, Any]]  # the params given (run config)
    full_config: dict[str, dict[str, Any]] = field(default_factory=dict)  # with defaults
    source: list[Any] = field(default_factory=list)  # the graph JSON it was planned from

    @property
    def recompute(self) -> bool:
        return any(cfg.get("recompute") for cfg in self.asset_config.values())

    def run_config(self, op_of: Callable[[str], str] = lambda asset: asset) -> dict[str, Any]:
        """Dagster run config; ``op_of`` names the op computing an asset (a multi-asset's
        op computes several assets, which then share one config)."""
        ops: dict[str, dict[str, Any]] = {}
        for asset, config in self.asset_config.items():
            ops.setdefault(op_of(asset), {}).update(config)
        return {"ops": {op: {"config": config} for op, config in ops.items()}}


def _node_error(index: int, name: str, message: str) -> GraphError:
    return GraphError(f"graph node #{index} ({name}): {message}")


def plan_graph(graph: object) -> GraphPlan:
    """Validate a graph (parsed JSON) and turn it into a :class:`GraphPlan`."""
    if not isinstance(graph, list) or not graph:
        raise GraphError('a graph is a non-empty JSON list of {"name": ..., "params": {...}}')
    plan = GraphPlan(assets=[], asset_config={}, source=list(graph))
    producers: dict[str, str] = {}
    for index, node in enumerate(graph):
        if not isinstance(node, Mapping) or "name" not in node or set(node) - {"name", "params"}:
            raise GraphError(f'graph node #{index} must be {{"name": ..., "params": {{...}}}}')
        name, params = node["name"], node.get("params") or {}
        if name not in NODES:
            raise _node_error(
                index,
                str(name),
                f"unknown node{did_you_mean(str(name), NODES)}; valid nodes: {', '.join(NODES)}",
            )
        if not isinstance(params, Mapping):
            raise _node_error(index, name, "params must be a JSON object")
        spec = NODES[name]
        unknown = sorted(set(params) - set(spec.param_names()))
        if unknown:
            hints = "".join(did_you_mean(param, spec.param_names()) for param in unknown)
            raise _node_error(
                index,
                name,
                f"unknown params {unknown}{hints}; valid params: {spec.param_names()}",
            )
        if spec.asset in producers:
            raise _node_error(
                index, name, f"{spec.asset!r} is already produced by {producers[spec.asset]}"
            )
        producers[spec.asset] = name
        for asset, config_class, values in [
            (spec.asset, spec.config, {**params, **spec.fixed}),
            *[
                (a, c, {k: v for k, v in params.items() if k in c.model_fields})
                for a, c in spec.also.items()
            ],
        ]:
            try:
                config = config_class(**values)
            except (pydantic.ValidationError, dg.DagsterInvalidConfigError) as error:
                raise _node_error(index, name, f"invalid params: {error}") from error
            if asset not in plan.assets:
                plan.assets.append(asset)
            merged = {**plan.asset_config.get(asset, {}), **config.model_dump(exclude_unset=True)}
            plan.asset_config[asset] = merged
            plan.full_config[asset] = {**config.model_dump(), **merged}
    return plan


def load_graph_file(path: Path) -> GraphPlan:
    try:
        graph = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise GraphError(f"cannot read graph file {str(path)!r}: {error}") from error
    return plan_graph(graph)


def node_reference() -> str:
    """Markdown table of nodes and params (kept in the README)."""
    lines = ["| node | does | params (default) |", "|---|---|---|"]
    for name, spec in NODES.items():
        fields = spec.config.model_fields
        params = ", ".join(f"`{p}` ({fields[p].default!r})" for p in spec.param_names())
        lines.append(f"| `{name}` | {spec.summary} | {params} |")
    return "\n".join(lines)
