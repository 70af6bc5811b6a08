"""docs/nodes.md is generated from the node specs and the datatype registry: a change to
either without regenerating it fails here."""

from dpl_assets import cli
from dpl_assets.docs import DOC_PATH, nodes_markdown
from dpl_assets.graph import NODES


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
