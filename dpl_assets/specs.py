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
from the process: installed, or on ``PYTHONPATH``), or by a plain name an installed
package registers in the entry-point group :data:`NODE_ENTRY_POINTS` (a built-in name always
means the built-in node). Such a node declares a ``compute`` function and any new datatypes
it writes; it becomes a per-video asset with the same partitions, storage, batch loop,
output check and report as the built-in ones. The Dagster code location knows it from the
graph saved by ``dpl run`` (``catalog.sqlite``) or from ``DPL_NODES`` (see
:func:`dpl_assets.definitions.custom_node_refs`). ``docs/custom_nodes.md`` is the guide.
Example::

    MOUTH_OPENING = Datatype("mouth_opening", StorageFormat.NPY, (".npy",),
                             "Lip gap over mouth width (N,) float32", ArrayContract(("N",),
                             "float32"), per=FRAME, nan_rows=True)

    def mouth_opening(io, config):
        return {"mouth_opening": gap_over_width(io["landmarks"])}

    MouthOpeningNode = NodeSpec(name="MouthOpeningNode", inputs=("landmarks",),
                                outputs=("mouth_opening",), compute=mouth_opening,
                                declares=(MOUTH_OPENING,), summary="lip gap per frame")
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dagster as dg

from dpl_assets.datatypes import DATATYPES, Datatype, StorageFormat, register_datatype

if TYPE_CHECKING:
    from dpl_assets.storage.video_io import VideoIO

Compute = Callable[["VideoIO", Any], Mapping[str, Any]]
"""A node's per-video computation: ``(io, config) -> outputs``.

``io`` is the video's :class:`~dpl_assets.storage.video_io.VideoIO`: a mapping of each
input datatype to its loaded artefact (arrays for ``.npy`` datatypes, float32 (N,) samples
at 16 kHz for ``wav``, dicts for JSON records,
:class:`~dpl_assets.storage.handles.ImageStackRef` handles for image stacks, paths for
whole files), with ``io.optional(key)`` for optional inputs (None when absent or
rejected), ``io.frame_times(n)`` for frame times (seconds), ``io.source(kind)`` for
the user's media, ``io.stage(key)`` for a file output, ``io.model`` and
``io.device`` for the node's model (:attr:`NodeSpec.model`).

``outputs`` maps every output datatype to its value, by the datatype's storage format:
``npy``: an array meeting its contract; ``json``: a JSON-able dict; ``wav``: float32 (N,)
samples in [-1, 1] at 16 kHz; ``image_stack``: a
:class:`~dpl_assets.outcomes.StagedFile` of ``io.stage(key)`` after writing there with
:class:`~dpl_assets.storage.image_stack.ImageStackWriter` (dataset named ``key``, one
image per frame at the frame's time); ``file``: a ``StagedFile`` of ``io.stage(key)``
after writing the whole file there. Raise :class:`dpl_assets.outcomes.InputRejected` to
reject the video with a reason; anything else fails that video only (retried by the next
run); missing or extra outputs fail it with a ``TypeError``."""

ComputeMany = Callable[[dict[str, "VideoIO"], Any], Mapping[str, Mapping[str, Any]]]
"""Several videos' computation at once: ``({video_id: io}, config) ->
{video_id: outputs}`` (see :data:`Compute`)."""

CUSTOM_STORAGE = (
    StorageFormat.NPY,
    StorageFormat.JSON,
    StorageFormat.WAV,
    StorageFormat.IMAGE_STACK,
    StorageFormat.FILE,
)
"""What a custom node's outputs may be stored as: every format the pipeline writes
(:data:`Compute` says what value each takes). ``media`` is the user's source files only."""

NODE_ENTRY_POINTS = "dpl_assets.nodes"
"""Entry-point group of installed nodes: a package's ``pyproject.toml`` registers
``[project.entry-points."dpl_assets.nodes"] MouthOpeningNode = "my_pkg.nodes:MouthOpeningNode"``
and graphs may then name ``"MouthOpeningNode"`` (a built-in node's name always means the
built-in node)."""

UNSUPPORTED_IN_CUSTOM = ("configured_inputs", "also", "fixed", "asset")
""":class:`NodeSpec` fields only built-in nodes use (packers, variants of one asset, other
nodes' outputs, hand-written assets): a custom node declaring one is refused."""


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
            made once per worker thread of a step when first used (``io.model``) and
            closed at the step's end when it has ``close()``; ``device()`` gives the torch
            device, resolved on first call (a CPU-only model never leases a GPU).
        compute_many: ``({video_id: io}, config) -> {video_id: outputs}``: the step's
            videos in one batch (GPU batches across videos); a video it leaves out, or
            all of them when it raises, go through ``compute`` one by one.
        required_params: config fields that must be set (model files): a step without them
            fails before any video, naming them.
        summarize: ``{output: {video_id: outcome}} -> {output: metadata}``: totals of the
            step shown on its outputs (the run's log).
        announce: each new file is announced on its partition with a link (previews).
        preload: modules its ``model`` needs (``torch``...), imported by ``dpl run``'s
            worker processes as they start, while the ``dpl`` process registers videos.
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
    preload: tuple[str, ...] = ()
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
        """The node's Dagster config class: ``config``, else :class:`NodeConfig` (only
        ``recompute``)."""
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


def installed_nodes() -> dict[str, str]:
    """Node names installed packages register in :data:`NODE_ENTRY_POINTS`, each with the
    ``package.module:Name`` it points at, sorted by name (read from the installed
    distributions' metadata on every call, so a package installed meanwhile counts)."""
    points = importlib.metadata.entry_points(group=NODE_ENTRY_POINTS)
    return {point.name: point.value for point in sorted(points, key=lambda p: p.name)}


_LOADED: dict[str, NodeSpec] = {}


def load_node(ref: str) -> NodeSpec:
    """The :class:`NodeSpec` named by ``"package.module:Name"`` or by an entry point of
    :data:`NODE_ENTRY_POINTS`, imported once; its declared datatypes are added to the
    registry once the whole spec is valid. Raises :class:`NodeError` saying what to fix."""
    if ref in _LOADED:
        return _LOADED[ref]
    found = _import_ref(ref) if is_node_ref(ref) else _import_entry_point(ref)
    if not isinstance(found, NodeSpec):
        raise NodeError(f"{ref!r} is {type(found).__name__}, not a NodeSpec")
    _check_custom(ref, found)
    _check_datatypes(ref, found)
    try:
        for datatype in found.declares:
            register_datatype(datatype)
    except ValueError as error:  # what the registry refuses beyond the checks above
        raise NodeError(f"{ref!r}: {error}") from error
    _LOADED[ref] = found
    return found


def _import_ref(ref: str) -> object:
    module_name, _, attribute = ref.partition(":")
    if not module_name or not attribute:
        raise NodeError(f"{ref!r}: a custom node is named 'package.module:Name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise NodeError(
            f"{ref!r}: cannot import {module_name!r} ({error}); install it or put it on PYTHONPATH"
        ) from error
    if not hasattr(module, attribute):
        defined = sorted(
            name for name, value in vars(module).items() if isinstance(value, NodeSpec)
        )
        raise NodeError(
            f"{ref!r}: module {module_name} has no attribute {attribute!r}; the NodeSpecs it "
            f"defines: {', '.join(defined) or 'none'}"
        )
    return getattr(module, attribute)


def _import_entry_point(name: str) -> object:
    points = importlib.metadata.entry_points(group=NODE_ENTRY_POINTS).select(name=name)
    values = sorted({point.value for point in points})
    if not values:
        raise NodeError(
            f"{name!r}: no installed package registers a node of that name (entry-point "
            f"group {NODE_ENTRY_POINTS!r}); install it, or name it 'package.module:Name'"
        )
    if len(values) > 1:
        owners = ", ".join(
            f"{point.dist.name if point.dist else '?'} ({point.value})" for point in points
        )
        raise NodeError(
            f"{name!r} is registered by several installed packages: {owners}; uninstall "
            "one or name the node as 'package.module:Name'"
        )
    try:
        return next(iter(points)).load()
    except (ImportError, AttributeError) as error:
        raise NodeError(
            f"{name!r}: its entry point {values[0]!r} does not load ({error}); reinstall "
            "the package that registers it"
        ) from error


def _check_custom(ref: str, spec: NodeSpec) -> None:
    from dpl_assets.assets.config import NodeConfig

    if spec.compute is None:
        raise NodeError(f"{ref!r}: a custom node needs a compute function (NodeSpec(compute=))")
    if not spec.outputs:
        raise NodeError(f"{ref!r}: a node needs at least one output datatype")
    if spec.config is not None and not issubclass(spec.config, NodeConfig):
        raise NodeError(f"{ref!r}: config must subclass dpl_assets.assets.config.NodeConfig")
    refused = [name for name in UNSUPPORTED_IN_CUSTOM if getattr(spec, name)]
    if refused:
        raise NodeError(
            f"{ref!r}: custom nodes cannot declare {', '.join(refused)} (only built-in "
            "packers, variants and hand-written assets use them); remove it: the asset is "
            "generated from compute, its inputs are `inputs` and `optional_inputs`"
        )
    fields = spec.config_class.model_fields
    unknown = [name for name in spec.required_params if name not in fields]
    if unknown:
        raise NodeError(
            f"{ref!r}: required_params {unknown} are not fields of "
            f"{spec.config_class.__name__} (fields: {', '.join(sorted(fields))})"
        )
    for name in ("model", "compute_many", "summarize"):
        if getattr(spec, name) is not None and not callable(getattr(spec, name)):
            raise NodeError(f"{ref!r}: {name} must be a function")


def _check_datatypes(ref: str, spec: NodeSpec) -> None:
    """Every datatype the node names is registered or declared, and storable by it."""
    declared: dict[str, Datatype] = {}
    for datatype in spec.declares:
        _check_declared(ref, datatype)
        declared[datatype.key] = datatype
    known = {**DATATYPES, **declared}
    for key in (*spec.inputs, *spec.optional_inputs, *spec.outputs):
        if key not in known:
            raise NodeError(
                f"{ref!r}: unknown datatype {key!r}; declare it in the spec's `declares` or "
                f"use one of {', '.join(DATATYPES)}"
            )
    for key in spec.optional_inputs:
        if known[key].storage is StorageFormat.MEDIA:
            raise NodeError(
                f"{ref!r}: optional input {key!r} is source media; read it with "
                f"io.source({key!r}) or io.sources, or list it in `inputs`"
            )
    for key in spec.outputs:
        if known[key].storage not in CUSTOM_STORAGE:
            raise NodeError(
                f"{ref!r}: output {key!r} is StorageFormat.MEDIA (the user's source files, "
                f"never written); write a datatype of your own stored as {_formats()} (a "
                "video you make: FILE)"
            )


def _check_declared(ref: str, datatype: Datatype) -> None:
    known = DATATYPES.get(datatype.key)
    if known is not None and known != datatype:
        raise NodeError(
            f"{ref!r}: datatype {datatype.key!r} is already registered differently; give "
            "yours another key"
        )
    if datatype.storage not in CUSTOM_STORAGE:
        raise NodeError(
            f"{ref!r}: declared datatype {datatype.key!r} is StorageFormat.MEDIA, which only "
            f"the user's source files are; store it as {_formats()} (a video you make: FILE)"
        )


def _formats() -> str:
    """``StorageFormat.NPY, JSON, ... or FILE``: what a custom node may write."""
    names = [storage.name for storage in CUSTOM_STORAGE]
    return f"StorageFormat.{', '.join(names[:-1])} or {names[-1]}"
