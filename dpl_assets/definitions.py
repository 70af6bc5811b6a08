"""The Dagster entry point: ``dagster dev -w workspace.yaml`` or ``-m dpl_assets``."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from dpl_assets.assets import DATASET_LEVEL_ASSETS, NODE_SPECS, assets_with
from dpl_assets.assets.dependencies import required_inputs
from dpl_assets.automation import SCHEDULES, SENSORS
from dpl_assets.catalog import Catalog
from dpl_assets.checks import output_checks
from dpl_assets.cluster import celery_executor_def
from dpl_assets.executors import executor_name, k8s_executor_def
from dpl_assets.graph import (
    GraphError,
    GraphPlan,
    custom_names,
    is_custom,
    node_spec,
    plan_graph,
)
from dpl_assets.partitions import video_partitions
from dpl_assets.resources import TorchDevice
from dpl_assets.settings import output_dir_from_env
from dpl_assets.specs import NodeError, NodeSpec
from dpl_assets.storage.io_manager import ArtifactIOManager, ArtifactStorage

NEEDS_WEIGHTS: tuple[str, ...] = tuple(
    dict.fromkeys(key for spec in NODE_SPECS if spec.needs_weights for key in spec.outputs)
)
"""Outputs of the nodes that need model files the user brings (wav2vec, EMOCA, FLAME,
the head template): they and everything downstream stay out of ``offline_default``."""

OFFLINE = (
    dg.AssetSelection.all()
    - dg.AssetSelection.assets(*NEEDS_WEIGHTS).downstream()
    - dg.AssetSelection.assets(*DATASET_LEVEL_ASSETS)
)
"""Every per-video asset that needs no model files the user brings."""

offline_default_job = dg.define_asset_job(
    "offline_default",
    selection=OFFLINE,
    description="Every per-video asset that needs no model files you bring (no wav2vec, EMOCA, "
    "FLAME or renders).",
)

OFFLINE_AUDIO_GROUPS = ("sources", "audio")
"""The asset groups of ``offline_audio``: the per-video record and the audio assets."""

offline_audio_job = dg.define_asset_job(
    "offline_audio",
    selection=OFFLINE & dg.AssetSelection.groups(*OFFLINE_AUDIO_GROUPS),
    partitions_def=video_partitions,
    description="The probe record and the audio assets that need no model files you bring "
    "(16 kHz wav, volume, speech).",
)

_STOCK_EXECUTOR = dg.multi_or_in_process_executor

in_process_by_default_executor = dg.ExecutorDefinition(
    name="in_process_or_multiprocess",
    config_schema=dg.Field(
        _STOCK_EXECUTOR.config_schema.config_type, default_value={"in_process": {}}
    ),
    requirements=_STOCK_EXECUTOR.get_requirements,
    executor_creation_fn=_STOCK_EXECUTOR.executor_creation_fn,
    description="Dagster's default executor, in process unless the run config says "
    "`execution: {config: {multiprocess: {max_concurrent: N}}}`.",
)
"""Every step of a run in the run's own process, unless its config asks for processes.

The stock default starts a process per step, and each loads this code location again
(~2-6 s here) before doing any work: most of a small run's time. In process, models also
load once per run, not once per step. A GPU lease is then held by the run's process
(``dpl_assets.devices``); retries and pools work as before (pools count runs here:
``granularity: run``). To spread a large run's steps over the cores, launch it with
``{"execution": {"config": {"multiprocess": {"max_concurrent": 2}}}}`` in its config.
"""


def _executor() -> dg.ExecutorDefinition:
    """The executor ``DPL_EXECUTOR`` names (:mod:`dpl_assets.executors`)."""
    name = executor_name()
    if name == "celery":  # every step on Celery workers (dpl_assets/cluster.py)
        return celery_executor_def()
    if name == "k8s":  # every step a Kubernetes job (deploy/)
        return k8s_executor_def()
    return in_process_by_default_executor


dataset_job = dg.define_asset_job(
    "dataset_level",
    selection=dg.AssetSelection.assets(*DATASET_LEVEL_ASSETS),
    description="The dataset pack and summary over every registered video (not partitioned).",
)


CUSTOM_NODES_ENV = "DPL_NODES"
"""Comma-separated custom nodes every code location loads (besides those of the graph
``dpl run`` saved in the output dir's catalog): ``package.module:Name`` references or the
names installed packages register in the ``dpl_assets.nodes`` entry-point group."""


def custom_node_refs(output_dir: Path | str) -> tuple[list[str], list[str]]:
    """The custom nodes a code location on ``output_dir`` knows: ``DPL_NODES``'s, and those
    named by the graph the last ``dpl run`` saved there; built-in names are left out (they
    need no loading). Returns (from env, from catalog), each a list of names as written:
    ``package.module:Name`` or an entry-point name."""
    from_env = [ref.strip() for ref in os.environ.get(CUSTOM_NODES_ENV, "").split(",")]
    saved = Catalog(output_dir).saved_graph() if Path(output_dir).is_dir() else None
    return [ref for ref in from_env if ref and is_custom(ref)], custom_names(saved)


def load_custom_nodes(output_dir: Path | str, nodes: Sequence[str] = ()) -> list[NodeSpec]:
    """The specs of the custom nodes named by ``nodes``, ``DPL_NODES`` and the saved graph,
    each once (:func:`dpl_assets.graph.node_spec`). One that fails to load raises
    :class:`NodeError` when named explicitly, and is a warning when only the saved graph
    names it (the code location still loads; that node's assets are missing)."""
    from_env, from_catalog = custom_node_refs(output_dir)
    explicit = [name for name in nodes if is_custom(name)]
    specs: dict[int, NodeSpec] = {}
    writers: dict[str, str] = {}
    for ref in dict.fromkeys([*explicit, *from_env, *from_catalog]):
        try:
            spec = node_spec(ref)
        except NodeError as error:
            if ref in explicit or ref in from_env:
                raise
            warnings.warn(f"custom node of the saved graph not loaded: {error}", stacklevel=2)
            continue
        if id(spec) in specs:  # one node under two names (reference and entry point)
            continue
        for key in spec.outputs:
            if writers.setdefault(key, ref) != ref:
                raise NodeError(f"custom nodes {writers[key]!r} and {ref!r} both write {key!r}")
        specs[id(spec)] = spec
    return list(specs.values())


def offline_jobs(custom: Sequence[NodeSpec]) -> list[dg.UnresolvedAssetJobDefinition]:
    """``offline_audio`` and ``offline_default``, also leaving out the outputs of ``custom``
    nodes that need model files (``needs_weights``) and everything downstream of them."""
    weights = [key for spec in custom if spec.needs_weights for key in spec.outputs]
    if not weights:
        return [offline_audio_job, offline_default_job]
    offline = OFFLINE - dg.AssetSelection.assets(*weights).downstream()
    audio = offline & dg.AssetSelection.groups(*OFFLINE_AUDIO_GROUPS)
    return [
        dg.define_asset_job(
            job.name,
            selection=selection,
            partitions_def=job.partitions_def,
            description=job.description,
        )
        for job, selection in ((offline_audio_job, audio), (offline_default_job, offline))
    ]


def packed_datatypes(graph: Sequence[Any] | None) -> list[str]:
    """The datatypes a graph's packers are asked to pack (their ``datatypes`` params), so
    the packers' assets depend on them; [] when there is no graph or it does not plan."""
    if not graph:
        return []
    try:
        plan = plan_graph(list(graph))
    except (GraphError, NodeError):
        return []  # the graph's own run reports what is wrong with it
    return plan_packed(plan)


def plan_packed(plan: GraphPlan) -> list[str]:
    """The datatypes ``plan``'s packers pack (their configured ``datatypes``)."""
    keys: list[str] = []
    for asset, spec in plan.node_of.items():
        if spec.configured_inputs == "datatypes":
            keys += required_inputs(spec, plan.full_config[asset])
    return list(dict.fromkeys(keys))


def build_definitions(
    output_dir: Path | str | None = None,
    jobs: list[dg.UnresolvedAssetJobDefinition] | None = None,
    nodes: Sequence[str] = (),
    packed: Sequence[str] | None = None,
) -> dg.Definitions:
    """All assets and resources, writing under ``output_dir`` (default: ``DPL_OUTPUT_DIR``),
    with the custom ``nodes`` (``package.module:Name`` or entry-point names) and those
    :func:`load_custom_nodes` finds; raises :class:`~dpl_assets.specs.NodeError` when one
    named in ``nodes`` or ``DPL_NODES`` does not load. ``packed``: what the graph's packers
    pack (default: as the graph ``dpl run`` saved there asks), so they run after it."""
    output_dir = output_dir or output_dir_from_env()
    storage = ArtifactStorage(output_dir=str(output_dir))
    custom = load_custom_nodes(output_dir, nodes)
    if packed is None:
        saved = Catalog(output_dir).saved_graph() if Path(output_dir).is_dir() else None
        packed = packed_datatypes(saved)
    assets = assets_with(custom, packed)
    return dg.Definitions(
        assets=assets,
        asset_checks=output_checks(assets),
        resources={
            "storage": storage,
            "artifacts": ArtifactIOManager(storage=storage),
            "torch_device": TorchDevice(),
        },
        jobs=[*offline_jobs(custom), dataset_job, *(jobs or [])],
        executor=_executor(),
        sensors=SENSORS,
        schedules=SCHEDULES,
    )
