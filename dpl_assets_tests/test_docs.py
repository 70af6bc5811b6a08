"""docs/nodes.md is generated from the node specs and the datatype registry: a change to
either without regenerating it fails here. The code of docs/custom_nodes.md runs here too."""

import re
from pathlib import Path

import numpy as np

from dpl_assets import cli, specs
from dpl_assets.docs import DOC_PATH, nodes_markdown
from dpl_assets.graph import NODES
from dpl_assets.specs import NodeSpec

CUSTOM_NODES_DOC = Path(__file__).resolve().parents[1] / "docs" / "custom_nodes.md"


def test_docs_nodes_md_matches_the_specs():
    assert DOC_PATH.read_text(encoding="utf-8") == nodes_markdown(), (
        "docs/nodes.md drifted from the specs: run `python -m dpl_assets.docs`"
    )


def test_every_node_and_param_is_in_the_docs_and_dpl_nodes(capsys):
    assert cli.main(["nodes"]) == 0
    listed = capsys.readouterr().out
    text = DOC_PATH.read_text(encoding="utf-8")
    for name, spec in NODES.items():
        for shown in (text, listed):
            row = next(line for line in shown.splitlines() if line.startswith(f"| `{name}` |"))
            assert all(f"`{param}` (" in row for param in spec.param_names()), row
            assert all(f"`{key}`" in row for key in spec.outputs)


def test_the_custom_node_guide_example_is_a_valid_node():
    text = CUSTOM_NODES_DOC.read_text(encoding="utf-8")
    block = re.search(r"^```python\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    assert block, "docs/custom_nodes.md has no ```python block"
    # Its own datatype key, so nothing clashes with the example node other tests register.
    code = block.group(1).replace('"mouth_opening"', '"mouth_opening_doc"')
    namespace: dict = {"__name__": "custom_nodes_doc"}
    exec(compile(code, str(CUSTOM_NODES_DOC), "exec"), namespace)

    nodes = [value for value in namespace.values() if isinstance(value, NodeSpec)]
    assert len(nodes) == 1, nodes
    spec = nodes[0]
    specs._check_custom("docs/custom_nodes.md", spec)  # what load_node checks, no registering
    specs._check_datatypes("docs/custom_nodes.md", spec)
    assert spec.compute is not None and spec.config is not None

    landmarks = np.random.default_rng(0).uniform(0, 64, (5, 68, 2)).astype(np.float32)
    outputs = spec.compute({"landmarks": landmarks}, spec.config(scale=2.0))
    assert set(outputs) == set(spec.outputs) == {"mouth_opening_doc"}
    (declared,) = spec.declares
    assert declared.contract is not None
    assert declared.contract.violation(outputs["mouth_opening_doc"]) is None
