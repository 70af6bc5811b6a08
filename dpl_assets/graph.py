"""The seed's graph format: node names and params -> an asset selection and its run config.

A graph is a JSON list of ``{"name": "<NodeName>", "params": {...}}`` as in the original
tool. Each node name is a :class:`~dpl_assets.specs.NodeSpec`: a built-in name (it always
wins), ``"package.module:Name"`` for one of the user's own, or the plain name an installed
package registers in the :data:`~dpl_assets.specs.NODE_ENTRY_POINTS` entry-point group. It
maps to the asset(s) it materializes and to the typed config of its main asset; params are
validated before any work, and errors list what is valid.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pydantic

from dpl_assets.assets import NODE_SPECS, producers_of
from dpl_assets.discovery import did_you_mean
from dpl_assets.specs import (
    NODE_ENTRY_POINTS,
    NodeError,
    NodeSpec,
    installed_nodes,
    is_node_ref,
    load_node,
)


class GraphError(ValueError):
    """The graph is invalid; the message says what to fix."""


NODES: dict[str, NodeSpec] = {spec.name: spec for spec in NODE_SPECS}
"""Built-in node name -> its spec (see :data:`dpl_assets.assets.NODE_SPECS`)."""

BUILT_IN_OUTPUTS: frozenset[str] = frozenset(key for spec in NODE_SPECS for key in spec.outputs)


def is_custom(name: str) -> bool:
    """Whether a graph's node name is not a built-in one: ``"package.module:Name"`` or an
    installed node's entry-point name (see :func:`node_spec`)."""
    return name not in NODES


def node_spec(name: str) -> NodeSpec:
    """The spec a graph's node name means: a built-in name (always first), a
    ``"package.module:Name"``, or a name in the :data:`~dpl_assets.specs.NODE_ENTRY_POINTS`
    entry-point group. Raises :class:`NodeError` (unknown name, with the closest valid one;
    a custom node that does not load; one writing a built-in node's output)."""
    if name in NODES:
        return NODES[name]
    if not is_node_ref(name):
        installed = installed_nodes()
        if name not in installed:
            raise NodeError(_unknown_node(name, installed))
    spec = load_node(name)
    taken = sorted(set(spec.outputs) & BUILT_IN_OUTPUTS)
    if taken:
        raise NodeError(f"{name!r}: {taken} are built-in nodes' outputs; name yours apart")
    return spec


def _unknown_node(name: str, installed: Mapping[str, str]) -> str:
    hint = did_you_mean(name, [*NODES, *installed])
    listed = f"; installed nodes: {', '.join(installed)}" if installed else ""
    return (
        f"unknown node{hint}; valid nodes: {', '.join(NODES)}{listed} (or "
        "'package.module:Name' for a node of your own, or a name a package registers in "
        f"the {NODE_ENTRY_POINTS!r} entry-point group)"
    )


def planned_assets(spec: NodeSpec) -> list[tuple[str, type[dg.Config], bool]]:
    """``(asset, config class, is the main output)`` for every asset a node name runs: its
    outputs (they share its config) and the other nodes' outputs it also writes."""
    own = [(key, spec.config_class, index == 0) for index, key in enumerate(spec.outputs)]
    also = [(key, producers_of(key)[0].config_class, False) for key in spec.also]
    return own + also


@dataclass
class GraphPlan:
    """What a graph asks Dagster to do: the assets to materialize and their run config."""

    assets: list[str]
    asset_config: dict[str, dict[str, Any]]  # the params given (run config)
    full_config: dict[str, dict[str, Any]] = field(default_factory=dict)  # with defaults
    source: list[Any] = field(default_factory=list)  # the graph JSON it was planned from
    node_of: dict[str, NodeSpec] = field(default_factory=dict)  # asset -> node computing it

    @property
    def custom_nodes(self) -> list[str]:
        """Names of the graph's nodes from outside the package (``pkg.mod:Name`` or an
        installed node's entry-point name), as the graph gives them."""
        return custom_names(self.source)

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


def custom_names(graph: object) -> list[str]:
    """The names of a graph's (parsed JSON) nodes that are not built-in, once each, in
    order; nothing for what is not a graph."""
    nodes = graph if isinstance(graph, list) else []
    names = [node.get("name") for node in nodes if isinstance(node, Mapping)]
    return list(dict.fromkeys(n for n in names if isinstance(n, str) and is_custom(n)))


def _node_error(index: int, name: str, message: str) -> GraphError:
    return GraphError(f"graph node #{index} ({name}): {message}")


def _resolve(graph: list[Any]) -> list[tuple[str, Mapping[str, Any], NodeSpec]]:
    """Each node's name, params and spec. Custom nodes load here, before any params are
    validated, so a packer may name a custom datatype wherever the node is in the graph."""
    nodes, problems = [], []  # every node's problem is reported, not only the first
    for index, node in enumerate(graph):
        if not isinstance(node, Mapping) or "name" not in node or set(node) - {"name", "params"}:
            problems.append(f'graph node #{index} must be {{"name": ..., "params": {{...}}}}')
            continue
        name, params = str(node["name"]), node.get("params") or {}
        try:
            spec = node_spec(name)
        except NodeError as error:
            problems.append(str(_node_error(index, name, str(error))))
            continue
        if not isinstance(params, Mapping):
            problems.append(str(_node_error(index, name, "params must be a JSON object")))
            continue
        nodes.append((name, params, spec))
    if problems:
        raise GraphError("\n".join(problems))
    return nodes


def plan_graph(graph: object) -> GraphPlan:
    """Validate a graph (parsed JSON) and turn it into a :class:`GraphPlan`; raises
    :class:`GraphError` naming the node (by position and name) and what to fix."""
    if not isinstance(graph, list) or not graph:
        raise GraphError('a graph is a non-empty JSON list of {"name": ..., "params": {...}}')
    nodes = _resolve(graph)
    plan = GraphPlan(assets=[], asset_config={}, source=list(graph))
    producers: dict[str, str] = {}
    for index, (name, params, spec) in enumerate(nodes):
        unknown = sorted(set(params) - set(spec.param_names()))
        if unknown:
            hints = "".join(did_you_mean(param, spec.param_names()) for param in unknown)
            raise _node_error(
                index,
                name,
                f"unknown params {unknown}{hints}; valid params: {spec.param_names()}",
            )
        if spec.main in producers:
            raise _node_error(
                index, name, f"{spec.main!r} is already produced by {producers[spec.main]}"
            )
        producers[spec.main] = name
        for asset, config_class, main in planned_assets(spec):
            values = (
                {**params, **spec.fixed}
                if main
                else {k: v for k, v in params.items() if k in config_class.model_fields}
            )
            try:
                config = config_class(**values)
            except (pydantic.ValidationError, dg.DagsterInvalidConfigError) as error:
                raise _node_error(index, name, f"invalid params: {error}") from error
            if asset not in plan.assets:
                plan.assets.append(asset)
            merged = {**plan.asset_config.get(asset, {}), **config.model_dump(exclude_unset=True)}
            plan.asset_config[asset] = merged
            plan.full_config[asset] = {**config.model_dump(), **merged}
            if main or asset not in plan.node_of:
                plan.node_of[asset] = spec if asset in spec.outputs else producers_of(asset)[0]
    return plan


def load_graph_file(path: Path) -> GraphPlan:
    try:
        graph = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise GraphError(f"cannot read graph file {str(path)!r}: {error}") from error
    return plan_graph(graph)


def node_reference() -> str:
    """Markdown table of the built-in nodes (``dpl nodes``; ``docs/nodes.md``)."""
    from dpl_assets.docs import HEADER, node_table

    legend = HEADER.split("\n\n")[-1].strip()  # what "needs" means, as in docs/nodes.md
    return f"{node_table(NODE_SPECS)}\n\n{legend}"
