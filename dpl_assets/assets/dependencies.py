"""Which upstream datatypes an asset needs before it can run (checked by ``dpl run``).

By default every parent in the asset graph is required. Two metadata keys relax that:
an asset lists parents it only uses when present (a preview draws landmarks if there are
any), or names the config field listing the datatypes it reads (the packers).
"""

import dagster as dg

OPTIONAL_INPUTS = "dpl/optional_inputs"
"""Asset metadata: upstream datatypes used when present, never required."""

CONFIGURED_INPUTS = "dpl/configured_inputs"
"""Asset metadata: the config field whose value lists the datatypes the asset reads."""

INPUTS_BY_VALUE = "dpl/inputs_by_value"
"""Asset metadata, with :data:`CONFIGURED_INPUTS`: the datatypes read for each value of
that field (when the field names a mode rather than the datatypes themselves)."""


def required_inputs(defs: dg.Definitions, asset: str, config: dict) -> list[str]:
    """The datatypes ``asset`` cannot run without, given its full config."""
    node = defs.resolve_asset_graph().get(dg.AssetKey(asset))
    metadata = node.metadata or {}
    field = metadata.get(CONFIGURED_INPUTS)
    if field:
        value = config.get(field, [])
        by_value = metadata.get(INPUTS_BY_VALUE)
        if by_value:
            return list(by_value[value])
        return [value] if isinstance(value, str) else list(value)
    optional = set(metadata.get(OPTIONAL_INPUTS, []))
    return [p.path[-1] for p in node.parent_keys if p.path[-1] not in optional]
