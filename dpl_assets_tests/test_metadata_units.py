"""Materialization metadata names its unit and means it: checked against independent
references (ffprobe's decoded frame count of a preview and of the source, libsndfile's
sample count of a wav, the arrays on disk), after a real ``dpl run`` of a sample clip (a
real face photo with synthetic speech)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import dagster as dg
import h5py
import numpy as np
import pytest
import soundfile

from dpl_assets import cli
from dpl_assets.samples import make_clip
from dpl_assets.settings import INSTANCE_SUBDIR

VIDEO = "talk one"
SECONDS = 2.0
GRAPH = [
    {"name": "VideoToWavNode", "params": {}},
    {"name": "VolumeNode", "params": {}},
    {"name": "VideoToImagesNode", "params": {}},
    {"name": "FaceAlignmentNode", "params": {}},
    {"name": "PreviewNode", "params": {}},
]
UNIT_SUFFIXES = ("_s", "_hz", "_px", "_bytes", "_pct", "_per_s")
COUNT_NAMES = {
    "samples",
    "video_frames",
    "feature_steps_50hz",
    "frames_with_face",
    "frames_gap_filled",
    "faces_seen",
    "most_faces_in_a_frame",
}
"""Integers whose name is their unit (samples, video frames, 50 Hz feature steps, faces)."""


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("units")
    videos = base / "videos"
    make_clip(videos / f"{VIDEO}.mp4", "Hello there, this is a test.", seconds=SECONDS)
    (base / "graph.json").write_text(json.dumps(GRAPH))
    (base / "inputs.json").write_text(json.dumps({"video": str(videos)}))
    out = base / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("DAGSTER_HOME", raising=False)
        code = cli.main(
            ["run", "--graph", str(base / "graph.json"), "--inputs", str(base / "inputs.json"),
             "--output_dir", str(out)]
        )  # fmt: skip
    assert code == 0, (out / "report.json").read_text()
    instance = dg.DagsterInstance.from_config(str(out / INSTANCE_SUBDIR))
    return {"out": out, "instance": instance, "source": videos / f"{VIDEO}.mp4"}


def metadata_of(run: dict, key: str) -> dict:
    records = (
        run["instance"]
        .fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[VIDEO]), limit=1
        )
        .records
    )
    assert records, f"no materialization of {key}"
    return {name: value.value for name, value in records[0].asset_materialization.metadata.items()}


def ffprobe_frames(path: Path) -> tuple[int, float]:
    """Decoded video frames (``-count_frames``) and the stream duration, by Debian's ffprobe."""
    answer = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries",
         "stream=nb_read_frames,duration", "-of", "json", f"file:{path}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    stream = json.loads(answer.stdout)["streams"][0]
    return int(stream["nb_read_frames"]), float(stream["duration"])


def test_preview_counts_its_video_frames(run):
    metadata = metadata_of(run, "preview")
    frames, duration = ffprobe_frames(run["out"] / "preview" / f"{VIDEO}.mp4")
    assert frames > 0
    assert metadata["video_frames"] == frames  # was "frames 0"
    assert metadata["duration_s"] == pytest.approx(duration, abs=0.05)
    assert metadata["has_audio"] is True


def test_wav_counts_samples_not_frames(run):
    metadata = metadata_of(run, "wav")
    info = soundfile.info(str(run["out"] / "wav" / f"{VIDEO}.wav"))
    assert metadata["samples"] == info.frames  # libsndfile's "frames" are samples per channel
    assert metadata["sample_rate_hz"] == info.samplerate == 16_000
    assert metadata["audio_s"] == pytest.approx(info.duration, abs=1e-3)
    assert metadata["audio_s"] == pytest.approx(SECONDS, abs=0.05)
    assert "frames" not in metadata and "video_frames" not in metadata


def test_images_count_the_decoded_frames(run):
    metadata = metadata_of(run, "images")
    source_frames, _ = ffprobe_frames(run["source"])
    with h5py.File(run["out"] / "images" / f"{VIDEO}.h5", "r") as stack:
        times = stack["timestamps"][:]
        width, height = int(stack.attrs["width"]), int(stack.attrs["height"])
    assert metadata["video_frames"] == len(times) == source_frames
    assert metadata["first_frame_s"] == pytest.approx(times[0], abs=1e-3)
    assert metadata["last_frame_s"] == pytest.approx(times[-1], abs=1e-3)
    assert (metadata["frame_width_px"], metadata["frame_height_px"]) == (width, height)


def test_arrays_name_their_axis(run):
    out = run["out"]
    volume = metadata_of(run, "volume")
    steps = np.load(out / "volume" / f"{VIDEO}.npy").shape[0]
    assert volume["feature_steps_50hz"] == steps and "video_frames" not in volume
    assert volume["audio_s"] == pytest.approx(steps / 50)
    landmarks = metadata_of(run, "landmarks")
    array = np.load(out / "landmarks" / f"{VIDEO}.npy")
    assert landmarks["video_frames"] == array.shape[0] == metadata_of(run, "images")["video_frames"]
    assert landmarks["shape"] == str(array.shape) and landmarks["dtype"] == "float32"


def test_faces_record_in_units(run):
    metadata = metadata_of(run, "faces")
    record = json.loads((run["out"] / "faces" / f"{VIDEO}.json").read_text())
    mask = np.load(run["out"] / "face_mask" / f"{VIDEO}.npy")
    assert metadata["video_frames"] == len(mask)
    assert metadata["frames_with_face"] == int((mask == 1).sum()) == record["frames_with_face"]
    assert metadata["face_coverage_pct"] == pytest.approx(100 * (mask > 0).mean(), abs=0.1)


def test_every_metadata_value_names_its_unit(run):
    for key in ("wav", "volume", "images", "faces", "face_mask", "landmarks", "preview"):
        for name, value in metadata_of(run, key).items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            assert name in COUNT_NAMES or name.endswith(UNIT_SUFFIXES), (key, name, value)
        assert re.fullmatch(r".*\.\w+", str(metadata_of(run, key)["path"]))
