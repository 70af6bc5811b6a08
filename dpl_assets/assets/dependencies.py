"""Which upstream datatypes a node needs before it can run (checked by ``dpl run``).

Derived from the node's spec (:class:`~dpl_assets.specs.NodeSpec`): its ``inputs``, or,
for a node whose config names what it reads (the packers' ``datatypes``, the dataset
pack's ``source``), the datatypes that config value names. ``optional_inputs`` are used
when present and never required.
"""

from collections.abc import Mapping
from typing import Any

from dpl_assets.specs import NodeSpec


def configured_inputs(spec: NodeSpec, config: Mapping[str, Any]) -> list[str]:
    """The datatypes ``config`` names in ``spec``'s configured-inputs field (one name or a
    list, e.g. a packer's ``datatypes``); [] for a node without one."""
    if not spec.configured_inputs:
        return []
    value = config.get(spec.configured_inputs, [])
    return [value] if isinstance(value, str) else list(value or [])


def declared_inputs(spec: NodeSpec, config: Mapping[str, Any]) -> frozenset[str]:
    """Every datatype ``spec`` may read for a video, given its full config: its inputs,
    optional inputs, and the datatypes the config names (a packer's ``datatypes``)."""
    return frozenset([*spec.inputs, *spec.optional_inputs, *configured_inputs(spec, config)])


def required_inputs(spec: NodeSpec, config: Mapping[str, Any]) -> list[str]:
    """The datatypes the node ``spec`` cannot run without, given its full config."""
    if spec.configured_inputs:
        return configured_inputs(spec, config)
    return [key for key in spec.inputs if key not in spec.optional_inputs]
