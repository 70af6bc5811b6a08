"""The shipped curation graph (``dpl_assets/configs/curation.json``: speech, scenes, the
speaking face, sync, quality, aligned crops, segments, training files) end to end on two
talking-photo clips: one in sync, one whose mouth never moves while speech is heard."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import h5py
import numpy as np
import pytest

from dpl_assets import cli
from dpl_assets.nodes.segments import LOW_SYNC
from dpl_assets.packing.reader import PackedWindows
from dpl_assets.settings import INSTANCE_SUBDIR
from dpl_assets_tests import talking_face
from dpl_assets_tests.dpl_runs import run_graph

GRAPH = Path(cli.__file__).parent / "configs" / "curation.json"

pytestmark = pytest.mark.skipif(
    not talking_face.have_media(), reason="needs Debian's pocketsphinx-testdata"
)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict[str, dict]:
    base = tmp_path_factory.mktemp("curation")
    talking_face.make_talking_clip(base / "videos" / "talking.mp4")
    talking_face.make_talking_clip(base / "videos" / "still.mp4", still=True)
    videos = run_graph(base, GRAPH, "videos", "out", "--workers", "1")
    return videos | {"_out": {"dir": base / "out"}}


def test_every_curation_output_is_made(report):
    talking = report["talking"]
    assert talking["status"] == "processed", talking
    for key in ("speech", "speech_spans", "scenes", "av_sync", "aligned_crops",
                "aligned_affines", "frame_quality", "frame_quality_ok", "segments",
                "segment_ids", "h5_dataset"):  # fmt: skip
        assert Path(talking["outputs"][key]).is_file(), key
    sync = json.loads(Path(talking["outputs"]["av_sync"]).read_text())
    assert sync["in_sync"] and abs(sync["offset_frames"]) <= 1
    assert sync["significance"] >= sync["min_significance"] == 4.0


def test_the_in_sync_clip_keeps_segments_and_the_still_one_none(report):
    talking = json.loads(Path(report["talking"]["outputs"]["segments"]).read_text())
    still = json.loads(Path(report["still"]["outputs"]["segments"]).read_text())
    assert talking["segment_count"] >= 1 and talking["kept_s"] >= 1.0
    assert LOW_SYNC not in talking["dropped_s"]
    assert still["segment_count"] == 0 and still["kept_s"] == 0
    assert still["dropped_s"].get(LOW_SYNC, 0) > 0  # charged to it where nothing came first


def test_training_files_are_served_per_kept_segment(report):
    out = report["_out"]["dir"]
    data = PackedWindows(out / "dataset_pack" / "h5_dataset", window=8)
    assert data.by_segment and len(data) > 0
    assert {data.locate(i)[0] for i in range(len(data))} == {"talking"}
    item = data[0]
    assert item["aligned_crops"].shape == (8, 256, 256, 3)
    with h5py.File(report["talking"]["outputs"]["h5_dataset"], "r") as packed:
        ids = np.asarray(packed["segment_ids"])
    assert (ids[item["start"] : item["start"] + 8] == item["segment"]).all()


def test_the_dataset_summary_counts_segment_seconds(report):
    out = report["_out"]["dir"]
    with dg.DagsterInstance.from_config(str(out / INSTANCE_SUBDIR)) as instance:
        (record,) = instance.fetch_materializations(dg.AssetKey("dataset_summary"), limit=1).records
    markdown = record.asset_materialization.metadata["summary"].value
    kept = sum(
        json.loads(Path(report[v]["outputs"]["segments"]).read_text())["kept_s"]
        for v in ("talking", "still")
    )
    assert "**Training segments** (2 videos)" in markdown
    assert f"| kept | {kept:.1f} |" in markdown
