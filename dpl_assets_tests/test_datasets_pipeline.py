"""Packed files and visualizations made the way a user makes them: ``dpl run`` on a face clip.

References: the per-video artefacts read with plain numpy/h5py, audio features resampled
here with ``np.interp`` and a moving average written out with ``np.convolve``, and ffprobe
(Debian's) for the preview's frame count and streams.
"""

import json
import subprocess
from pathlib import Path

import dagster as dg
import h5py
import numpy as np
import pytest

from dpl_assets import cli
from dpl_assets.samples import make_clip
from dpl_assets.storage.image_stack import ImageStack, decode_image
from dpl_assets_tests import media_factory as media
from dpl_assets_tests.test_pipeline import instance_for, run_cli
from dpl_assets_tests.tiny_wav2vec import PROJECTED_DIM, build_tiny_wav2vec

SECONDS = 2.0


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """One dpl run with every packer and visualization node; returns paths and the report."""
    root = tmp_path_factory.mktemp("datasets")
    make_clip(root / "videos" / "talk one.mp4", "Hello there, this is a test.", seconds=SECONDS)
    model = build_tiny_wav2vec(root / "w2v")
    graph = [
        {"name": "VideoToImagesNode", "params": {}},
        {"name": "VideoToWavNode", "params": {}},
        {"name": "Wav2vecNode", "params": {"checkpoint": str(model), "device": "cpu"}},
        {"name": "FaceAlignmentNode", "params": {}},
        {"name": "FixedBboxesNode", "params": {}},
        {"name": "CropNode", "params": {"size_hw": [96, 96]}},
        {"name": "HeadPoseNode", "params": {}},
        {"name": "BlinksNode", "params": {}},
        {"name": "H5DatasetNode", "params": {"layout": "filter32019", "jpeg_quality": 90}},
        {
            "name": "SourceSequenceNode",  # its 2D part (FLAME and renders need weights)
            "params": {"datatypes": ["images", "bboxes", "crops", "landmarks", "blinks"]},
        },
        {"name": "Vid2vidAudioNode", "params": {"window_size": 4}},
        {"name": "PreviewNode", "params": {}},
        {"name": "ContactSheetNode", "params": {"count": 6, "columns": 3, "tile_width": 128}},
        {"name": "DatasetPackNode", "params": {"source": "h5_dataset"}},
        {"name": "DatasetSummaryNode", "params": {}},
    ]
    code, _ = run_cli(root, graph, {"video": "videos"})
    out = root / "out"
    report = json.loads((out / "report.json").read_text())
    [video] = report["videos"]
    return {"code": code, "out": out, "video": video, "report": report}


def test_the_run_succeeds_and_every_output_check_passes(run):
    assert run["code"] == 0
    video = run["video"]
    assert video["status"] == "processed", video
    assert video["failed_checks"] == {}
    for key in ("h5_dataset", "source_sequence", "vid2vid_audio", "preview", "contact_sheet"):
        assert Path(video["outputs"][key]).is_file(), key


def frames_of(out: Path) -> tuple[int, np.ndarray]:
    with ImageStack(out / "images" / "talk one.h5") as stack:
        return len(stack), np.asarray(stack.timestamps)


def moving_average_reference(x: np.ndarray, window: int) -> np.ndarray:
    """Edge-padded moving average, window reaching w//2 back (scipy's convention)."""
    left = window // 2
    padded = np.concatenate([np.repeat(x[:1], left, 0), x, np.repeat(x[-1:], window - left - 1, 0)])
    kernel = np.ones(window) / window
    return np.stack(
        [np.convolve(padded[:, d], kernel, mode="valid") for d in range(x.shape[1])], axis=1
    )


def test_vid2vid_audio_holds_features_resampled_onto_the_crop_frames(run):
    out = run["out"]
    count, times = frames_of(out)
    wav2vec = np.load(out / "wav2vec" / "talk one.npy")
    volume = np.load(out / "volume" / "talk one.npy")
    blinks = np.load(out / "blinks" / "talk one.npy")
    step_times = (np.arange(len(wav2vec)) * 320 + 200) / 16000  # window centres
    volume_times = (np.arange(len(volume)) * 320 + 160) / 16000
    expected_w2v = np.stack(
        [np.interp(times, step_times, wav2vec[:, d]) for d in range(PROJECTED_DIM)], 1
    )
    expected_vol = np.interp(times, volume_times, volume)[:, None]
    expected_w2v = moving_average_reference(expected_w2v, 4)
    expected_vol = moving_average_reference(expected_vol, 4)
    with h5py.File(out / "vid2vid_audio" / "talk one.h5", "r") as file:
        assert set(file) >= {"crops", "wav2vec", "volume", "blinks", "audio_blink_feature"}
        assert file["crops"].shape[0] == count
        np.testing.assert_allclose(file["wav2vec"][:], expected_w2v, atol=1e-5)
        feature = file["audio_blink_feature"][:]
    assert feature.shape == (count, PROJECTED_DIM + 3)
    np.testing.assert_allclose(feature[:, :PROJECTED_DIM], expected_w2v, atol=1e-5)
    np.testing.assert_allclose(
        feature[:, PROJECTED_DIM : PROJECTED_DIM + 1], expected_vol, atol=1e-6
    )
    np.testing.assert_array_equal(feature[:, -2:], blinks[:, :2])


def test_h5_dataset_in_the_original_jpeg_filter_layout(run):
    out = run["out"]
    count, times = frames_of(out)
    with ImageStack(out / "images" / "talk one.h5") as stack:
        reference = [stack[i] for i in range(count)]
    with h5py.File(out / "h5_dataset" / "talk one.h5", "r") as file:
        images = file["images"]
        height, width = reference[0].shape[:2]
        assert images.shape == (count, height, width, 3) and images.chunks == (1, height, width, 3)
        plist = images.id.get_create_plist()
        filter_id, _, options, _ = plist.get_filter(0)
        assert filter_id == 32019 and tuple(options) == (90, width, height, 1)
        np.testing.assert_allclose(file["timestamps"][:], times)
        for index in (0, count // 2, count - 1):
            _, chunk = images.id.read_direct_chunk((index, 0, 0, 0))
            decoded = decode_image(np.frombuffer(chunk, np.uint8)).astype(np.float64)
            mse = np.mean((decoded - reference[index]) ** 2)
            assert 10 * np.log10(255**2 / mse) > 30  # re-encoded at quality 90
        for key in ("landmarks", "bboxes", "head_pose", "blinks", "volume"):
            assert file[key].shape[0] == count, key
        np.testing.assert_array_equal(
            file["landmarks"][:], np.load(out / "landmarks" / "talk one.npy")
        )


def test_preview_has_every_frame_and_the_audio(run):
    out = run["out"]
    count, _ = frames_of(out)
    preview = out / "preview" / "talk one.mp4"
    probed = media.ffprobe_json(preview)
    kinds = sorted(stream["codec_type"] for stream in probed["streams"])
    assert kinds == ["audio", "video"]
    counted = subprocess.run(
        ["/usr/bin/ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
         "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(preview)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert int(counted) == count


def test_contact_sheet_is_a_png_of_the_asked_grid(run):
    from PIL import Image

    sheet = run["out"] / "contact_sheet" / "talk one.png"
    assert sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(sheet) as image:
        image.load()
        assert image.width == 3 * 128 and image.height > 2 * 128  # 2 rows + a title band


def test_dataset_pack_and_summary_cover_the_video(run):
    out = run["out"]
    assert set(run["report"]["dataset"]) == {"dataset_pack", "dataset_summary"}
    folder = out / "dataset_pack" / "h5_dataset"
    index = json.loads((folder / "index.json").read_text())
    assert list(index["videos"]) == ["talk one"]
    count, _ = frames_of(out)
    with h5py.File(folder / "dataset.h5", "r") as linked:
        [group] = linked["videos"].values()  # through the external link into the shard
        assert group["images"].shape[0] == count
        np.testing.assert_array_equal(
            group["landmarks"][:], np.load(out / "landmarks" / "talk one.npy")
        )
    # What the UI shows: the digest on the summary's materialization, a link per preview.
    instance = instance_for(out)
    [record] = instance.fetch_materializations(dg.AssetKey("dataset_summary"), limit=1).records
    markdown = record.asset_materialization.metadata["summary"].value
    assert "processed" in markdown and ".png" in markdown
    [images] = instance.fetch_materializations(dg.AssetKey("images"), limit=1).records
    metadata = images.asset_materialization.metadata
    assert metadata["video_frames"].value == frames_of(out)[0]
    assert metadata["status"].value == "written" and metadata["compute_s"].value > 0
    [faces] = instance.fetch_materializations(dg.AssetKey("faces"), limit=1).records
    assert faces.asset_materialization.metadata["frames_with_face"].value == frames_of(out)[0]
    observed = instance.fetch_observations(dg.AssetKey("preview"), limit=5).records
    assert any(
        r.asset_observation.partition == "talk one" and "path" in r.asset_observation.metadata
        for r in observed
    )
    plots = sorted(p.name for p in (out / "dataset_summary").glob("*.png"))
    assert plots and all(
        (out / "dataset_summary" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in plots
    )


def test_a_rerun_does_nothing_new_and_a_new_video_is_appended(run):
    out = run["out"]
    before = {
        p: p.stat().st_mtime_ns
        for folder in ("h5_dataset", "dataset_summary")
        for p in (out / folder).iterdir()
    }  # a rerun with nothing new rewrites none of these, the dataset-level ones included
    first_shard = out / "dataset_pack" / "h5_dataset" / "shard-00000.h5"
    shard_before = first_shard.read_bytes()
    root = out.parent
    arguments = ["run", "--graph", str(root / "graph.json"), "--inputs",
                 str(root / "inputs.json"), "--output_dir", str(out)]  # fmt: skip
    assert cli.main(arguments) == 0
    assert before == {path: path.stat().st_mtime_ns for path in before}

    make_clip(root / "videos" / "talk two.mp4", "A second speaker.", seconds=1.0)
    assert cli.main(arguments) == 0
    index = json.loads((out / "dataset_pack" / "h5_dataset" / "index.json").read_text())
    assert list(index["videos"]) == ["talk one", "talk two"]
    assert index["videos"]["talk two"]["shard"] != "shard-00000.h5"
    assert first_shard.read_bytes() == shard_before  # appending never rewrites a shard
