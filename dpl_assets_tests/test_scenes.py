"""SceneCutNode: PySceneDetect's content detector on clips of two real photos (skimage's
astronaut, matplotlib's Grace Hopper), each given slight motion: a hard cut, a cross-fade
and a single shot."""

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import scenedetect
from matplotlib import cbook
from PIL import Image
from skimage.data import astronaut

from dpl_assets.media.ffmpeg import ffmpeg_executable
from dpl_assets.media.frames import DecodeRecipe
from dpl_assets.nodes.scenes import detect_cuts, scene_ranges
from dpl_assets_tests import media_factory as media
from dpl_assets_tests.test_vision_pipeline import write_clip


def grace_hopper() -> np.ndarray:
    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as image:
        return np.asarray(image.convert("RGB"))


def shot(photo: np.ndarray, count: int, size: tuple[int, int] = (160, 120)) -> list[np.ndarray]:
    """``count`` frames of ``photo`` at ``size`` (width, height), panning a few pixels."""
    return [
        cv2.resize(np.roll(photo, round(4 * np.sin(i / 4)), axis=1), size, cv2.INTER_AREA)
        for i in range(count)
    ]


def two_shots(path: Path, first: int = 20, second: int = 20, size=(160, 120)) -> Path:
    """A clip cutting from the astronaut to Grace Hopper at frame ``first``."""
    return write_clip(path, shot(astronaut(), first, size) + shot(grace_hopper(), second, size))


def cuts_of(clip: Path, **params) -> list[int]:
    frames = (frame.rgb for frame in DecodeRecipe().frames(clip))
    return detect_cuts(frames, 25.0, **params)[0]


def reference_cuts(clip: Path) -> list[int]:
    """PySceneDetect's own ``detect()`` (its OpenCV video backend, default settings)."""
    scenes = scenedetect.detect(str(clip), scenedetect.ContentDetector())
    return [start.frame_num for start, _ in scenes[1:]]


@pytest.mark.parametrize("size", [(160, 120), (320, 240)])
def test_two_shots_give_one_cut_at_the_first_frame_of_the_second(tmp_path, size):
    clip = two_shots(tmp_path / "two shots.mp4", 20, 20, size)

    cuts = cuts_of(clip)

    assert len(cuts) == 1 and abs(cuts[0] - 20) <= 1, cuts
    assert cuts == reference_cuts(clip)
    assert scene_ranges(cuts, 40).tolist() == [[0, cuts[0]], [cuts[0], 40]]


def test_a_cross_fade_is_no_cut_with_the_default_threshold(tmp_path):
    # xfade blends the shots over 25 frames (1 s): each frame changes by a twenty-fifth of
    # the whole change, content scores stay ~13 (a hard cut between these shots scores ~50),
    # under the default threshold 27: PySceneDetect finds no cut, and neither do we.
    first = two_shots(tmp_path / "a.mp4", 50, 0)
    second = write_clip(tmp_path / "b.mp4", shot(grace_hopper(), 50))
    fade = tmp_path / "fade.mp4"
    subprocess.run(
        [ffmpeg_executable(), "-v", "error", "-y", "-i", str(first), "-i", str(second),
         "-filter_complex", "[0:v][1:v]xfade=transition=fade:duration=1:offset=1,format=yuv420p",
         *media._video_codec_args(), str(fade)],
        check=True,
    )  # fmt: skip

    assert cuts_of(fade) == [] == reference_cuts(fade)
    # The hard cut between the same shots is found, and a low enough threshold cuts the fade.
    assert cuts_of(two_shots(tmp_path / "cut.mp4", 25, 25)) == [25]
    assert len(cuts_of(fade, threshold=8.0)) >= 1


def test_a_single_shot_has_no_cut(tmp_path):
    clip = write_clip(tmp_path / "one shot.mp4", shot(astronaut(), 40))

    assert cuts_of(clip) == []
    assert scene_ranges([], 40).tolist() == [[0, 40]]


def test_min_scene_len_merges_cuts_closer_than_it(tmp_path):
    frames = shot(astronaut(), 20) + shot(grace_hopper(), 5) + shot(astronaut(), 15)
    clip = write_clip(tmp_path / "flash.mp4", frames)

    assert cuts_of(clip, min_scene_len=3) == [20, 25]
    # The default 15 frames: the 5-frame shot is merged away, as PySceneDetect's own run has it.
    assert cuts_of(clip) == [20] == reference_cuts(clip)
