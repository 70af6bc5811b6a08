"""``report.json`` and what is drawn from it, on a run made the way a user makes one.

``dpl run`` on three videos: a talking face (processed), a test-pattern film with no audio
stream (rejected twice: no audio stream, no face) and an empty upload (rejected: no
frames at all). References: the artefacts read with h5py / soundfile / json, the plots'
matplotlib artists, and frames of the previews decoded by Debian's ffmpeg.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile
from PIL import Image

from dpl_assets.report import without_subject
from dpl_assets.samples import make_clip, make_video_only
from dpl_assets.storage.image_stack import ImageStack
from dpl_assets.visualize.contact_sheet import mark_height, title_height
from dpl_assets.visualize.overlay import REJECTED_COLOR, banner
from dpl_assets.visualize.summary import collect_summary_inputs, summary_figures
from dpl_assets_tests import media_factory as media
from dpl_assets_tests.test_pipeline import run_cli

TALK, FILM, EMPTY = "talk", "silent film", "empty upload"
TILE, COLUMNS = 128, 3  # the contact sheet's


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("report")
    videos = root / "videos"
    make_clip(videos / f"{TALK}.mp4", "Hello there, this is a test.", seconds=2.0)
    make_video_only(videos / f"{FILM}.mp4", seconds=2.0)
    (videos / f"{EMPTY}.mp4").write_bytes(b"")
    graph = [
        {"name": "VideoToWavNode", "params": {}},
        {"name": "VolumeNode", "params": {}},
        {"name": "VideoToImagesNode", "params": {"fps": 25}},
        {"name": "FaceAlignmentNode", "params": {}},
        {"name": "EmocaLikeBboxesNode", "params": {}},
        {"name": "CropNode", "params": {"size_hw": [96, 96]}},
        {"name": "PreviewNode", "params": {}},
        {"name": "ContactSheetNode",
         "params": {"count": 6, "columns": COLUMNS, "tile_width": TILE}},
        {"name": "DatasetSummaryNode", "params": {}},
    ]  # fmt: skip
    code, by_id = run_cli(root, graph, {"video": "videos"})
    out = root / "out"
    return {
        "code": code,
        "out": out,
        "videos": by_id,
        "document": json.loads((out / "report.json").read_text()),
        "source": videos,
    }


def test_a_video_rejected_for_two_reasons_lists_both(run):
    assert run["code"] == 0
    film, empty = run["videos"][FILM], run["videos"][EMPTY]
    assert film["status"] == "rejected"
    [audio, face] = film["reasons"]
    assert audio == f"{run['source'] / FILM}.mp4: no audio stream"
    assert face.startswith(f"{run['source'] / FILM}.mp4: no face")  # every reason names the file
    # One line names the file once.
    assert film["reason"] == f"{audio}; " + face.removeprefix(f"{run['source'] / FILM}.mp4: ")
    assert empty["status"] == "rejected"
    assert empty["reasons"] == [f"{run['source'] / EMPTY}.mp4: zero-byte file"]
    assert run["videos"][TALK]["reasons"] == [] and run["videos"][TALK]["reason"] is None
    assert run["document"]["summary"]["rejected"] == 2


def test_processed_videos_have_their_basic_stats_from_the_outputs(run):
    talk, out = run["videos"][TALK], run["out"]
    with h5py.File(out / "images" / f"{TALK}.h5", "r") as file:
        times = np.asarray(file["timestamps"])
        fps = float(file.attrs["fps"])
    faces = json.loads((out / "faces" / f"{TALK}.json").read_text())
    wav = soundfile.info(str(out / "wav" / f"{TALK}.wav"))
    assert talk["stats"] == {
        "frames": times.size,
        "fps": fps,
        "duration_s": pytest.approx(times[-1] - times[0] + 1 / fps, abs=1e-3),
        "audio_s": pytest.approx(wav.frames / wav.samplerate, abs=1e-3),
        "face_coverage": faces["coverage"],
    }
    assert talk["stats"]["frames"] == 50 and fps == 25.0
    assert talk["stats"]["duration_s"] == pytest.approx(2.0, abs=0.05)
    assert talk["stats"]["face_coverage"] > 0.9
    # No speech-activity node exists: no speech figure is made up.
    assert not [key for key in talk["stats"] if "speech" in key]


def test_rejected_videos_have_only_the_stats_their_outputs_give(run):
    film, empty = run["videos"][FILM], run["videos"][EMPTY]
    assert set(film["stats"]) == {"frames", "fps", "duration_s"}  # frames, no audio, no face
    assert film["stats"]["frames"] == 50
    assert empty["stats"] == {}


def test_summary_plots_agree_with_the_report(run):
    document, out = run["document"], run["out"]
    records = collect_summary_inputs(out, document)
    figures = summary_figures(records)
    counts = document["summary"]

    for name in ("durations", "face_coverage"):
        [axes] = figures[name].axes
        legend = [text.get_text() for text in axes.get_legend().get_texts()]
        assert legend[0] == f"processed: {counts['processed']}"
        assert legend[1].startswith(f"rejected: {counts['rejected']} ")  # 2, not 1
        assert len(legend) == 2  # no failed videos
    [axes] = figures["durations"].axes
    legend = [text.get_text() for text in axes.get_legend().get_texts()]
    assert legend[1] == "rejected: 2 (1 without a duration)"  # the empty upload

    [axes] = figures["rejections"].axes
    labels = [tick.get_text() for tick in axes.get_yticklabels()]
    widths = [patch.get_width() for patch in axes.patches]
    assert dict(zip(labels, widths, strict=True)) == {
        "no audio stream": 1, "no face": 1, "zero-byte file": 1,
    }  # fmt: skip

    # Features: volume only (no wav2vec in this graph), labelled by the ids that have it.
    [axes] = figures["features"].axes
    assert axes.get_title().startswith("Volume")
    assert [tick.get_text() for tick in axes.get_xticklabels()] == [TALK]
    [container] = axes.containers
    _, _, (bars,) = container
    volume = np.load(out / "volume" / f"{TALK}.npy")
    [[(_, low), (_, high)]] = bars.get_segments()
    assert low >= 0
    assert (low, high) == pytest.approx(tuple(np.percentile(volume, [10, 90])), rel=1e-5)

    # The files the asset wrote are the same four plots, counted the same way.
    summary = out / "dataset_summary"
    assert sorted(p.name for p in summary.glob("*.png")) == [
        "durations.png", "face_coverage.png", "features.png", "rejections.png",
    ]  # fmt: skip


def frame_of(preview: Path, index: int, folder: Path) -> np.ndarray:
    """Frame ``index`` of ``preview`` as RGB, decoded by the system ffmpeg into a PNG."""
    png = folder / f"{preview.stem} {index}.png"
    subprocess.run(
        [media._system_binary("ffmpeg"), "-v", "error", "-y", "-i", "file:" + str(preview),
         "-vf", f"select=eq(n\\,{index})", "-frames:v", "1", "file:" + str(png)],
        check=True,
    )  # fmt: skip
    with Image.open(png) as image:
        return np.asarray(image.convert("RGB"))


def redness(pixels: np.ndarray, tolerance: int = 45) -> float:
    """Fraction of ``pixels`` near the banner's red."""
    return float((np.abs(pixels.astype(int) - REJECTED_COLOR) <= tolerance).all(axis=-1).mean())


def test_contact_sheets_and_previews_mark_rejected_videos_only(run, tmp_path):
    out, film = run["out"], run["videos"][FILM]
    mark = "REJECTED: " + "; ".join(
        without_subject(r, (film["source"], FILM)) for r in film["reasons"]
    )
    assert mark == "REJECTED: no audio stream; no face: no face detected in any frame"
    # A video with frames gets both, marked; one without frames neither.
    assert {"preview", "contact_sheet"} <= set(film["outputs"])
    assert not {"preview", "contact_sheet"} & set(run["videos"][EMPTY]["outputs"])

    top, band = title_height(TILE), mark_height(COLUMNS, TILE, mark)
    with Image.open(out / "contact_sheet" / f"{FILM}.png") as image:
        rejected_sheet = np.asarray(image.convert("RGB"))
    with Image.open(out / "contact_sheet" / f"{TALK}.png") as image:
        processed_sheet = np.asarray(image.convert("RGB"))
    assert rejected_sheet.shape[0] == top + band + 2 * 96  # 2 rows of 128x96 tiles
    assert processed_sheet.shape[0] == top + 2 * 128  # no banner
    assert redness(rejected_sheet[top : top + band], 10) > 0.6
    assert redness(processed_sheet[top : top + band], 10) < 0.05

    preview_band = banner(320, mark).shape[0]  # the film is 320 px wide
    rejected = frame_of(out / "preview" / f"{FILM}.mp4", 10, tmp_path)
    processed = frame_of(out / "preview" / f"{TALK}.mp4", 10, tmp_path)
    assert redness(rejected[-preview_band:]) > 0.5
    assert redness(processed[-preview_band:]) < 0.05


def test_previews_draw_the_crop_box(run, tmp_path):
    """The solid box of the preview is the crop box (``bboxes``, which includes the chin);
    the detector's box (``raw_bboxes``) is drawn dashed."""
    out = run["out"]
    crop = np.load(out / "bboxes" / f"{TALK}.npy")[10]
    detector = np.load(out / "raw_bboxes" / f"{TALK}.npy")[10]
    assert crop[3] > detector[3] + 4  # the crop reaches lower: the two are told apart
    frame = frame_of(out / "preview" / f"{TALK}.mp4", 10, tmp_path).astype(int)
    with ImageStack(out / "images" / f"{TALK}.h5", "images") as stack:
        source = stack[10].astype(int)
    assert 0 < crop[3] <= frame.shape[0]  # the bottom edge is inside the frame
    drawn = np.abs(frame - source).sum(axis=-1) > 90  # what the overlay changed

    def along_bottom(box: np.ndarray, mask: np.ndarray, rise: int = 0) -> float:
        """Fraction of the box's bottom edge (``rise`` px higher) where ``mask`` is set."""
        y = int(box[3]) - rise
        return float(mask[y - 1 : y + 1, int(box[0]) + 4 : int(box[2]) - 4].any(axis=0).mean())

    # Cyan after H.264's chroma blur: green and blue well above red.
    cyan = np.minimum(frame[..., 1], frame[..., 2]) - frame[..., 0] > 50
    assert along_bottom(crop, drawn) > 0.95 and along_bottom(crop, cyan) > 0.9  # solid
    assert 0.3 < along_bottom(detector, drawn) < 0.85  # dashed (the jaw's dots cross it)
    assert along_bottom(crop, drawn, rise=12) < 0.1  # between the edges: the plain frame
