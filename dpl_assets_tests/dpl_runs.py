"""`dpl run` in the test process: a graph over a folder of videos, its report by video id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dpl_assets import cli


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
