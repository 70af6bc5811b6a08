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


def slow_run_args(root: Path, videos: list[str], seconds: float = 4.0) -> list[str]:
    """``dpl run`` arguments (no ``--workers``) of VideoToWav and the slow node
    (``custom_slow_example``: ``seconds`` a video, each start logged to ``root/started``)
    over 0.5 s talking clips named ``videos`` in ``root/videos``, into ``root/out``."""
    from dpl_assets_tests import media_factory

    graph = [
        {"name": "VideoToWavNode", "params": {}},
        {"name": "dpl_assets_tests.custom_slow_example:SlowNode",
         "params": {"marker": str(root / "started"), "seconds": seconds}},
    ]  # fmt: skip
    (root / "graph.json").write_text(json.dumps(graph))
    for name in videos:
        media_factory.make_talking_clip(root / "videos" / f"{name}.mp4", seconds=0.5)
    (root / "inputs.json").write_text(json.dumps({"video": "videos"}))
    return ["run", "--graph", str(root / "graph.json"), "--inputs", str(root / "inputs.json"),
            "--output_dir", str(root / "out")]  # fmt: skip


def slow_starts(root: Path) -> list[tuple[int, str]]:
    """(pid, video) of each video the slow node of :func:`slow_run_args` started, in order."""
    marker = root / "started"
    lines = marker.read_text().splitlines() if marker.exists() else []
    return [(int(pid), video) for pid, video in (line.split() for line in lines)]
