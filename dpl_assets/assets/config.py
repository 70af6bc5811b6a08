"""The base of every node's parameters. Each node's own ``Config`` class (typed params,
named as in the original tool) lives beside its :class:`~dpl_assets.specs.NodeSpec`."""

import dagster as dg
from pydantic import Field


class NodeConfig(dg.Config):
    """Parameters every node has."""

    recompute: bool = Field(
        default=False,
        description="Recompute videos whose artefact (or rejection) already exists.",
    )
