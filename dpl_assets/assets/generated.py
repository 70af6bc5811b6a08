"""Assets generated from :class:`~dpl_assets.specs.NodeSpec` declarations with a ``compute``
function.

The asset is partitioned per video like every other, reads its inputs through the IO
manager (declared once, in the spec), runs its videos through the one batch loop
(:func:`dpl_assets.assets.batch.run_videos_multi`: skip done videos, carry rejections, isolate
failures, per-video events) and is stored, checked and reported by datatype. One output
makes an asset named after it; several make a multi-asset whose op is named after the node.

Node names that are variants of one computation (``VideoToWavNode`` and ``AacToWavNode``:
the same ``compute`` and outputs, told apart by their ``fixed`` params) share one asset;
each run reads only the inputs of the variant its config selects. Inputs that are source
media (``video``, ``aac``) are dependencies, located through the video's
:class:`~dpl_assets.storage.video_io.VideoIO`; optional inputs are dependencies read when
present (``io.optional``). A config with ``num_jobs`` / ``num_workers`` sets the threads.
"""

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import dagster as dg

from dpl_assets.assets.batch import (
    multi_outputs,
    per_video_asset,
    per_video_multi_asset,
    run_videos_multi,
)
from dpl_assets.assets.dependencies import configured_inputs, declared_inputs
from dpl_assets.assets.step_log import announce_files, output_name
from dpl_assets.datatypes import StorageFormat, get_datatype
from dpl_assets.executors import step_tags
from dpl_assets.resources import TorchDevice
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.io_manager import ArtifactStorage
from dpl_assets.storage.video_io import Reads, StepTools, VideoIO

GroupKey = tuple[int, tuple[str, ...], tuple[str, ...]]
"""A generated asset: its compute function, its outputs, the extra dependencies it got."""

_BUILT: dict[GroupKey, dg.AssetsDefinition] = {}


def op_name(spec: NodeSpec) -> str:
    """The op of a generated asset: its output's name, or the node's in snake case."""
    if len(spec.outputs) == 1:
        return spec.outputs[0]
    return re.sub(r"(?<!^)(?=[A-Z])", "_", spec.name.removesuffix("Node")).lower()


def _group_key(spec: NodeSpec, packable_extra: Sequence[str] = ()) -> GroupKey:
    extra = tuple(packable_extra) if spec.configured_inputs else ()
    return id(spec.compute), tuple(sorted(spec.outputs)), extra


def assets_of(
    specs: Sequence[NodeSpec], packable_extra: Sequence[str] = ()
) -> list[dg.AssetsDefinition]:
    """The assets computing ``specs``, each once: hand-written ones as they are, and one
    generated asset per group of variants (same ``compute`` and outputs).

    ``packable_extra``: more datatypes the nodes with configured inputs (the packers) may
    be asked to read (custom nodes' outputs): they become dependencies, so they run first.
    """
    groups: dict[GroupKey, list[NodeSpec]] = {}
    for spec in specs:
        if spec.asset is None:
            groups.setdefault(_group_key(spec, packable_extra), []).append(spec)
    for key, variants in groups.items():
        if key not in _BUILT:
            _BUILT[key] = _build(variants, key[2])
    seen: dict[int, dg.AssetsDefinition] = {}
    for spec in specs:
        asset = spec.asset or _BUILT[_group_key(spec, packable_extra)]
        seen.setdefault(id(asset), asset)
    return list(seen.values())


def spec_asset(spec: NodeSpec) -> dg.AssetsDefinition:
    """The asset computing ``spec`` (built once per group of variants)."""
    if spec.asset is not None:
        return spec.asset
    key = _group_key(spec)
    if key not in _BUILT:
        _BUILT[key] = _build([spec])
    return _BUILT[key]


def variant_for(variants: Sequence[NodeSpec], config: Any) -> NodeSpec:
    """The variant whose ``fixed`` params the run's ``config`` has (the node name chosen)."""
    for spec in variants:
        if all(getattr(config, name) == value for name, value in spec.fixed.items()):
            return spec
    names = ", ".join(spec.name for spec in variants)
    raise dg.Failure(f"the config matches none of {names}: {config}")


def _outputs_of(spec: NodeSpec, io: VideoIO, config: Any) -> dict[str, Any]:
    assert spec.compute is not None
    result = spec.compute(io, config)
    if not isinstance(result, Mapping) or set(result) != set(spec.outputs):
        got = sorted(result) if isinstance(result, Mapping) else type(result).__name__
        raise TypeError(f"{spec.name}: compute returned {got}, not {list(spec.outputs)}")
    return dict(result)


def _workers(config: Any) -> int:
    workers = getattr(config, "num_jobs", None) or getattr(config, "num_workers", None)
    return int(workers or 1)


def _is_media(key: str) -> bool:
    return get_datatype(key).storage is StorageFormat.MEDIA


def _configured_defaults(spec: NodeSpec) -> list[str]:
    """What a node with configured inputs reads by default (its config field's default)."""
    if not spec.configured_inputs:
        return []
    field = spec.configured_inputs
    return configured_inputs(spec, {field: spec.config_class.model_fields[field].default})


def _options(variants: Sequence[NodeSpec], extra_deps: Sequence[str] = ()) -> dict[str, Any]:
    """The Dagster definition of a group: loaded inputs, dependencies, pool, docs."""
    first = variants[0]
    inputs = list(dict.fromkeys(key for spec in variants for key in spec.inputs))
    optional = {key for spec in variants for key in spec.optional_inputs}
    loaded = [key for key in inputs if not _is_media(key) and key not in optional]
    outputs = {key for spec in variants for key in spec.outputs}
    deps = [key for key in inputs if key not in loaded]
    # An optional input the node also writes (the user's raw_bboxes) is read, not a parent.
    deps += sorted(optional - set(inputs) - outputs)
    # A node whose config names what it reads: what it reads by default (and what it may
    # be asked to) runs before it.
    configured = [key for spec in variants for key in _configured_defaults(spec)]
    deps += [key for key in dict.fromkeys([*configured, *extra_deps]) if key not in deps]
    names = ", ".join(f"``{spec.name}``" for spec in variants)
    doc = first.compute.__doc__ if first.compute and first.compute.__doc__ else ""
    options: dict[str, Any] = {
        "ins": {key: dg.AssetIn(key) for key in loaded},
        "group_name": first.group,
        "description": f"{names}: {first.summary}" + (f"\n\n{doc}" if doc else ""),
    }
    if deps:
        options["deps"] = deps
    needs_gpu = any(spec.needs_gpu for spec in variants)
    if needs_gpu:
        options["pool"] = "gpu"
    options["op_tags"] = step_tags(needs_gpu)  # Celery queue; a GPU on Kubernetes
    return options


def check_required_params(spec: NodeSpec, config: Any) -> None:
    """Fail the step before any video when a param the node cannot run without is unset."""
    missing = [name for name in spec.required_params if not getattr(config, name)]
    if missing:
        fields = spec.config_class.model_fields
        needs = "; ".join(f"{name} ({fields[name].description or 'see docs'})" for name in missing)
        raise dg.Failure(f"{spec.name} needs {needs}", allow_retries=False)


def declared_reads(spec: NodeSpec, config: Any) -> Reads:
    """What ``spec`` may read for a video: its inputs, optional inputs, and the datatypes
    its config names (a packer's ``datatypes``)."""
    return Reads(spec.name, declared_inputs(spec, config.model_dump()))


def _tools(spec: NodeSpec, config: Any, torch_device: TorchDevice) -> StepTools:
    """The step's device (the node's ``device`` param, else the resource's) and models."""
    node_device = getattr(config, "device", "auto")
    model = spec.model
    return StepTools(
        device=lambda: torch_device.for_node(node_device),
        model=(lambda device: model(config, device)) if model is not None else None,
    )


def run_spec(
    context: dg.AssetExecutionContext,
    spec: NodeSpec,
    config: Any,
    storage: ArtifactStorage,
    torch_device: TorchDevice,
    inputs: Mapping[str, Any],
) -> dict[str, dict[str, Any]]:
    """One step of ``spec``'s asset: its videos through the batch loop with its inputs,
    device and models; its totals on its outputs; its new files announced."""
    check_required_params(spec, config)
    mine = {key: inputs[key] for key in spec.inputs if key in inputs}
    batch = spec.compute_many
    tools = _tools(spec, config, torch_device)
    try:
        per_output = run_videos_multi(
            context, storage, outputs=spec.outputs, recompute=config.recompute, inputs=mine,
            compute_one=lambda _, io: _outputs_of(spec, io, config),
            compute_many=(lambda todo: {v: dict(out) for v, out in batch(todo, config).items()})
            if batch else None,
            workers=_workers(config), tools=tools, reads=declared_reads(spec, config),
        )  # fmt: skip
    finally:
        tools.close()
    if spec.summarize is not None:
        for key, metadata in spec.summarize(per_output).items():
            context.add_output_metadata(dict(metadata), output_name=output_name(context, key))
    if spec.announce:
        for key in spec.outputs:
            announce_files(context, storage.store(), key, per_output[key])
    return per_output


def _build(variants: Sequence[NodeSpec], extra_deps: Sequence[str] = ()) -> dg.AssetsDefinition:
    first = variants[0]
    options = _options(variants, extra_deps)

    if len(first.outputs) == 1:
        key = first.outputs[0]

        def one_output(
            context: dg.AssetExecutionContext,
            config: dg.Config,
            storage: ArtifactStorage,
            torch_device: TorchDevice,
            **inputs: Any,
        ) -> dict:
            spec = variant_for(variants, config)
            return run_spec(context, spec, config, storage, torch_device, inputs)[key]

        one_output.__annotations__["config"] = first.config_class  # Dagster reads the class
        return per_video_asset(name=key, **options)(one_output)

    def several_outputs(
        context: dg.AssetExecutionContext,
        config: dg.Config,
        storage: ArtifactStorage,
        torch_device: TorchDevice,
        **inputs: Any,
    ) -> Iterator[dg.Output]:
        spec = variant_for(variants, config)
        yield from multi_outputs(run_spec(context, spec, config, storage, torch_device, inputs))

    several_outputs.__annotations__["config"] = first.config_class
    return per_video_multi_asset(first.outputs, name=op_name(first), **options)(several_outputs)
