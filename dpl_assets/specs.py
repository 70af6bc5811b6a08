"""A node is one declaration: :class:`NodeSpec`, and how a graph names a node of its own.

A spec says everything the project needs to know about a graph node: its name (the
original tool's class name), the datatypes it reads and writes (registry keys: their codec,
contract, axis, NaN rule, packability and output check come from
:mod:`dpl_assets.datatypes`), its config class, whether it needs a GPU or model files you
bring, a one-line summary, and either the Dagster asset that computes it or a pure
``compute`` function from which that asset is generated (:mod:`dpl_assets.assets.generated`).
The graph's node table, ``dpl nodes``, the ``offline_default`` job, the inputs ``dpl run``
requires and ``docs/nodes.md`` are derived from the list of built-in specs
(:data:`dpl_assets.assets.NODE_SPECS`).

A graph may also name a spec of its own as ``"my_package.my_module:MyNode"`` (importable
from the process: installed, or on ``PYTHONPATH``). Such a node declares a ``compute``
function and any new datatypes it writes; it becomes a per-video asset with the same
partitions, storage, batch loop, output check and report as the built-in ones. The Dagster
code location knows it from the graph saved by ``dpl run`` (``catalog.json``) or from
``DPL_NODES`` (see :func:`dpl_assets.definitions.custom_node_refs`). Example::

    MOUTH_OPENING = Datatype("mouth_opening", StorageFormat.NPY, (".npy",),
                             "Lip gap over mouth width (N,) float32", ArrayContract(("N",),
                             "float32"), per=FRAME, nan_rows=True)

    def mouth_opening(inputs, config):
        return {"mouth_opening": gap_over_width(inputs["landmarks"])}

    MouthOpeningNode = NodeSpec(name="MouthOpeningNode", inputs=("landmarks",),
                                outputs=("mouth_opening",), compute=mouth_opening,
                                declares=(MOUTH_OPENING,), summary="lip gap per frame")
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dagster as dg

from dpl_assets.datatypes import DATATYPES, Datatype, StorageFormat, register_datatype

if TYPE_CHECKING:
    from dpl_assets.storage.video_io import VideoIO

Compute = Callable[["VideoIO", Any], Mapping[str, Any]]
"""A node's per-video computation: ``(inputs, config) -> outputs``. ``inputs`` is the
video's :class:`~dpl_assets.storage.video_io.VideoIO`: a mapping of each input datatype to
its loaded artefact (arrays for ``.npy`` datatypes, float32 samples for ``wav``, dicts for
JSON records, :class:`~dpl_assets.storage.handles.ImageStackRef` handles for image stacks),
with ``inputs.optional(key)`` for optional inputs, ``inputs.frame_times(n)`` for frame
times, ``inputs.source(kind)`` for the user's media and ``inputs.stage(key)`` for a file
output. ``outputs`` maps each output datatype to its value (an array meeting its
contract, a JSON-able dict, or a :class:`~dpl_assets.outcomes.StagedFile`). Raise
:class:`dpl_assets.outcomes.InputRejected` to reject the video with a reason; anything else
fails that video only (retried by the next run)."""

ComputeMany = Callable[[dict[str, "VideoIO"], Any], Mapping[str, Mapping[str, Any]]]
"""Several videos' computation at once: ``({video_id: inputs}, config) ->
{video_id: outputs}`` (see :data:`Compute`)."""

CUSTOM_STORAGE = (StorageFormat.NPY, StorageFormat.JSON, StorageFormat.WAV)
"""What a ``compute`` function's outputs may be stored as (values the store writes itself)."""


class NodeError(ValueError):
    """A node reference or spec is invalid; the message says what to fix."""


@dataclass(frozen=True)
class NodeSpec:
    """One graph node, declared once.

    Attributes:
        name: the node's name in graphs (the original tool's class name).
        inputs: datatypes the node cannot run without.
        outputs: datatypes its asset writes; the first is the node's main output (a graph
            cannot name two nodes with the same main output).
        config: its parameters (a ``NodeConfig`` for per-video nodes: they take
            ``recompute``).
        summary: what it does, in a few words (docs and ``dpl nodes``).
        fixed: config values the node name implies (``VideoToWavNode``: ``source=video``).
        only: when set, the params this name takes (besides ``recompute``); default: all of
            the config's fields that are not fixed.
        optional_inputs: datatypes it uses when they exist.
        configured_inputs: the config field whose value names the datatypes it reads (the
            packers' ``datatypes``): those are then its required inputs.
        also: other nodes' outputs this name materializes too (``Wav2vecNode``: ``volume``,
            as the original wrote it), each with the params its own config accepts.
        needs_gpu: runs a model in the ``gpu`` pool (one GPU lease per process).
        needs_weights: needs model files the user brings (left out of ``offline_default``).
        asset: the Dagster asset computing it (built-in nodes written as assets);
        compute: or the pure per-video function its asset is generated from
            (:data:`Compute`); custom nodes must give this.
        declares: new datatypes the node writes (custom nodes), registered when it loads.
        group: the Dagster asset group of a generated asset.
        model: ``(config, device) -> model``: what ``compute`` runs (a face detector...),
            made once per worker thread of a step when first used (``inputs.model``) and
            closed at the step's end when it has ``close()``; ``device()`` gives the torch
            device, resolved on first call (a CPU-only model never leases a GPU).
        compute_many: ``({video_id: inputs}, config) -> {video_id: outputs}``: the step's
            videos in one batch (GPU batches across videos); a video it leaves out, or
            all of them when it raises, go through ``compute`` one by one.
        required_params: config fields that must be set (model files): a step without them
            fails before any video, naming them.
        summarize: ``{output: {video_id: outcome}} -> {output: metadata}``: totals of the
            step shown on its outputs (the run's log).
        announce: each new file is announced on its partition with a link (previews).
    """

    name: str
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    config: type[dg.Config] | None = None
    summary: str = ""
    fixed: Mapping[str, Any] = field(default_factory=dict)
    only: tuple[str, ...] = ()
    optional_inputs: tuple[str, ...] = ()
    configured_inputs: str | None = None
    also: tuple[str, ...] = ()
    needs_gpu: bool = False
    needs_weights: bool = False
    asset: dg.AssetsDefinition | None = field(default=None, compare=False)
    compute: Compute | None = field(default=None, compare=False)
    declares: tuple[Datatype, ...] = ()
    group: str = "custom"
    model: Callable[[Any, Callable[[], str]], Any] | None = field(default=None, compare=False)
    compute_many: ComputeMany | None = field(default=None, compare=False)
    required_params: tuple[str, ...] = ()
    summarize: (
        Callable[[Mapping[str, Mapping[str, Any]]], Mapping[str, Mapping[str, Any]]] | None
    ) = field(default=None, compare=False)
    announce: bool = False

    @property
    def main(self) -> str:
        """The node's main output (its asset in the graph's plan)."""
        return self.outputs[0]

    @property
    def config_class(self) -> type[dg.Config]:
        from dpl_assets.assets.config import NodeConfig  # the default: just ``recompute``

        return self.config or NodeConfig

    def param_names(self) -> list[str]:
        """The params a graph may give this node, sorted."""
        fields = set(self.config_class.model_fields)
        names = (set(self.only) | {"recompute"}) & fields if self.only else fields
        return sorted(names - set(self.fixed))


def is_node_ref(name: str) -> bool:
    """``"package.module:Name"``: a node defined outside the package."""
    return ":" in name


_LOADED: dict[str, NodeSpec] = {}


def load_node(ref: str) -> NodeSpec:
    """The :class:`NodeSpec` named by ``"package.module:Name"``, imported once; its declared
    datatypes are added to the registry. Raises :class:`NodeError` saying what is wrong."""
    if ref in _LOADED:
        return _LOADED[ref]
    module_name, _, attribute = ref.partition(":")
    if not module_name or not attribute:
        raise NodeError(f"{ref!r}: a custom node is named 'package.module:Name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise NodeError(
            f"{ref!r}: cannot import {module_name!r} ({error}); install it or put it on PYTHONPATH"
        ) from error
    spec = getattr(module, attribute, None)
    if not isinstance(spec, NodeSpec):
        found = "nothing" if spec is None else type(spec).__name__
        raise NodeError(f"{ref!r}: {module_name}.{attribute} is {found}, not a NodeSpec")
    _check_custom(ref, spec)
    for datatype in spec.declares:
        try:
            register_datatype(datatype)
        except ValueError as error:
            raise NodeError(f"{ref!r}: {error}") from error
    _check_datatypes(ref, spec)
    _LOADED[ref] = spec
    return spec


def loaded_nodes() -> dict[str, NodeSpec]:
    """The custom nodes loaded so far, by reference."""
    return dict(_LOADED)


def _check_custom(ref: str, spec: NodeSpec) -> None:
    from dpl_assets.assets.config import NodeConfig

    if spec.compute is None:
        raise NodeError(f"{ref!r}: a custom node needs a compute function")
    if not spec.outputs:
        raise NodeError(f"{ref!r}: a node needs at least one output datatype")
    if spec.config is not None and not issubclass(spec.config, NodeConfig):
        raise NodeError(f"{ref!r}: config must subclass dpl_assets.assets.config.NodeConfig")
    if spec.optional_inputs or spec.configured_inputs or spec.also or spec.fixed:
        raise NodeError(
            f"{ref!r}: custom nodes declare inputs and outputs only (no optional_inputs, "
            "configured_inputs, also or fixed)"
        )


def _check_datatypes(ref: str, spec: NodeSpec) -> None:
    for key in (*spec.inputs, *spec.outputs):
        if key not in DATATYPES:
            raise NodeError(
                f"{ref!r}: unknown datatype {key!r}; declare it in the spec's `declares` or "
                f"use one of {', '.join(DATATYPES)}"
            )
    for key in spec.outputs:
        if DATATYPES[key].storage not in CUSTOM_STORAGE:
            stored = DATATYPES[key].storage.value
            raise NodeError(f"{ref!r}: output {key!r} is stored as {stored}; a compute "
                            "function writes npy, json or wav datatypes")  # fmt: skip
