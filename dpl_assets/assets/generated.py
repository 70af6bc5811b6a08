"""Assets generated from a :class:`~dpl_assets.specs.NodeSpec` with a ``compute`` function.

The asset is partitioned per video like every other, reads its inputs through the IO
manager (declared once, in the spec), runs its videos through the one batch loop
(:func:`dpl_assets.assets.batch.run_videos`: skip done videos, carry rejections, isolate
failures, per-video events) and is stored, checked and reported by datatype. One output
makes an asset named after it; several make a multi-asset whose op is named after the node.
"""

import re
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg

from dpl_assets.assets.batch import (
    VideoInputs,
    multi_outputs,
    per_video_asset,
    per_video_multi_asset,
    run_videos,
    run_videos_multi,
)
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.io_manager import ArtifactStorage

_BUILT: dict[int, dg.AssetsDefinition] = {}


def op_name(spec: NodeSpec) -> str:
    """The op of a generated asset: its output's name, or the node's in snake case."""
    if len(spec.outputs) == 1:
        return spec.outputs[0]
    return re.sub(r"(?<!^)(?=[A-Z])", "_", spec.name.removesuffix("Node")).lower()


def spec_asset(spec: NodeSpec) -> dg.AssetsDefinition:
    """The asset computing ``spec`` (built once per spec)."""
    if spec.asset is not None:
        return spec.asset
    if id(spec) not in _BUILT:
        _BUILT[id(spec)] = _build(spec)
    return _BUILT[id(spec)]


def _outputs_of(spec: NodeSpec, video_inputs: VideoInputs, config: Any) -> dict[str, Any]:
    assert spec.compute is not None
    result = spec.compute(video_inputs, config)
    if not isinstance(result, Mapping) or set(result) != set(spec.outputs):
        got = sorted(result) if isinstance(result, Mapping) else type(result).__name__
        raise TypeError(f"{spec.name}: compute returned {got}, not {list(spec.outputs)}")
    return dict(result)


def _build(spec: NodeSpec) -> dg.AssetsDefinition:
    options: dict[str, Any] = {
        "ins": {key: dg.AssetIn(key) for key in spec.inputs},
        "group_name": spec.group,
        "description": f"``{spec.name}``: {spec.summary}"
        + (f"\n\n{spec.compute.__doc__}" if spec.compute and spec.compute.__doc__ else ""),
    }
    if spec.needs_gpu:
        options["pool"] = "gpu"

    if len(spec.outputs) == 1:
        key = spec.outputs[0]

        def one_output(
            context: dg.AssetExecutionContext,
            config: dg.Config,
            storage: ArtifactStorage,
            **inputs: Any,
        ) -> dict:
            return run_videos(
                context, storage, recompute=config.recompute, inputs=inputs,  # type: ignore[attr-defined]
                compute_one=lambda _, loaded: _outputs_of(spec, loaded, config)[key],
            )  # fmt: skip

        one_output.__annotations__["config"] = spec.config_class  # Dagster reads the class
        return per_video_asset(name=key, **options)(one_output)

    def several_outputs(
        context: dg.AssetExecutionContext,
        config: dg.Config,
        storage: ArtifactStorage,
        **inputs: Any,
    ) -> Iterator[dg.Output]:
        per_output = run_videos_multi(
            context, storage, outputs=spec.outputs,
            recompute=config.recompute,  # type: ignore[attr-defined]
            inputs=inputs, compute_one=lambda _, loaded: _outputs_of(spec, loaded, config),
        )  # fmt: skip
        yield from multi_outputs(per_output)

    several_outputs.__annotations__["config"] = spec.config_class
    return per_video_multi_asset(spec.outputs, name=op_name(spec), **options)(several_outputs)
