"""`dpl run` in the test process: a graph over a folder of videos, its report by video id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dpl_assets import cli
from dpl_assets.storage.image_stack import ImageStack


def run_graph(
    root: Path, graph: list | Path, videos: str | Path, out: str = "out", *extra: str
) -> dict[str, dict[str, Any]]:
    """``dpl run`` of ``graph`` (a node list, written to ``root/{out}.graph.json``, or a
    graph file) over the folder ``videos`` (relative to ``root`` or absolute) into
    ``root/out``, with ``extra`` command-line arguments; asserts exit status 0 and returns
    report.json's videos by id."""
    if not isinstance(graph, Path):
        graph_file = root / f"{out}.graph.json"
        graph_file.write_text(json.dumps(graph))
        graph = graph_file
    inputs = root / f"{out}.inputs.json"
    inputs.write_text(json.dumps({"video": str(videos)}))
    code = cli.main(["run", "--graph", str(graph), "--inputs", str(inputs),
                     "--output_dir", str(root / out), *extra])  # fmt: skip
    assert code == 0
    report = json.loads((root / out / "report.json").read_text())["videos"]
    return {entry["video_id"]: entry for entry in report}


def assert_same_outputs(entry: dict[str, Any], other: dict[str, Any]) -> None:
    """Two report entries of one video have the same arrays (``.npy``) and the same encoded
    images (``.h5`` stacks), output by output (``entry``'s outputs, looked up in ``other``)."""
    for key, path in entry["outputs"].items():
        twin = other["outputs"][key]
        if path.endswith(".npy"):
            np.testing.assert_array_equal(np.load(path), np.load(twin), err_msg=key)
        elif path.endswith(".h5"):
            with ImageStack(Path(path)) as a, ImageStack(Path(twin)) as b:
                assert [a.encoded(i) for i in range(len(a))] == [
                    b.encoded(i) for i in range(len(b))
                ], key
