"""A face track's columnar storage: what goes in comes out, and a frame costs its values.

Synthetic faces only (no model): a track of a long clip must not keep one Python object per
frame (see :mod:`dpl_assets.nodes.face_columns`); the bound here is analytic, from the
block sizes and :data:`~dpl_assets.nodes.face_columns.BYTES_PER_FRAME`.
"""

from __future__ import annotations

import re
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import TypeVar

import numpy as np
import pytest

from dpl_assets.nodes.face_columns import BYTES_PER_FRAME, MAX_BLOCK_FRAMES
from dpl_assets.nodes.face_model import FaceLandmarks
from dpl_assets.nodes.face_tracking import FaceInFrame, FaceTrack
from dpl_assets.nodes.faces import _assemble

T = TypeVar("T")


def synthetic_face(frame: int, keypoints: bool = True, mesh: bool = True) -> FaceInFrame:
    """A plausible face (eyes above the mouth, inside the box) whose values depend on
    ``frame``: box (5,), keypoints (6, 2), 68 points (68, 2), mesh (478, 3), all float32
    and freshly allocated (as a model's output is)."""
    rng = np.random.default_rng(frame)
    x, y = 100.0 + frame % 50, 80.0 + frame % 30
    box = np.array([x, y, x + 100, y + 100, 0.5 + frame % 7 / 20], np.float32)
    points = (np.array([x + 50, y + 40]) + rng.uniform(-2, 2, (68, 2))).astype(np.float32)
    points[48:68, 1] += 30  # the mouth below the eyes
    face_keypoints = np.array(
        [[x + 35, y + 40], [x + 65, y + 40], [x + 50, y + 55], [x + 50, y + 70],
         [x + 5, y + 50], [x + 95, y + 50]], np.float32,
    )  # fmt: skip
    face_mesh = rng.uniform(x, x + 100, (478, 3)).astype(np.float32) if mesh else None
    return FaceInFrame(box, face_keypoints if keypoints else None, FaceLandmarks(points, face_mesh))


def test_a_track_returns_the_values_it_was_given():
    # Frames with gaps; some without keypoints (predicted boxes), mesh or landmarks.
    frames = [0, 1, 2, 5, 6, 7, 9, 40, 41, 300, 301, 302, 303]
    given: dict[int, FaceInFrame] = {}
    track = FaceTrack()
    for i, frame in enumerate(frames):
        face = synthetic_face(frame, keypoints=i % 3 != 1, mesh=i % 4 != 2)
        if i == 5:
            face.landmarks = None  # the model found none
        given[frame] = face
        track.add(frame, face)
    assert list(track.faces) == frames and len(track) == len(frames)
    assert track.last_face is given[303] and track.last_box is given[303].box
    for frame, face in given.items():
        stored = track.faces[frame]
        np.testing.assert_array_equal(stored.box, face.box)
        for name in ("keypoints",):
            assert (getattr(stored, name) is None) == (getattr(face, name) is None)
        if face.keypoints is not None:
            np.testing.assert_array_equal(stored.keypoints, face.keypoints)
        assert (stored.landmarks is None) == (face.landmarks is None)
        if face.landmarks is not None and stored.landmarks is not None:
            np.testing.assert_array_equal(stored.landmarks.points, face.landmarks.points)
            if face.landmarks.mesh is None:
                assert stored.landmarks.mesh is None
            else:
                np.testing.assert_array_equal(stored.landmarks.mesh, face.landmarks.mesh)
    with pytest.raises(KeyError):
        track.faces[3]
    with pytest.raises(ValueError, match="not after"):
        track.add(303, synthetic_face(303))

    # The assembled arrays hold the same values, and the track is consumed.
    model = SimpleNamespace(name="synthetic", filter_threshold=0.5)
    result = _assemble(track, 310, model)  # type: ignore[arg-type]
    assert len(track.columns) == 0 and track.columns.blocks == []
    assert result.detected.tolist() == [f in given and f != frames[5] for f in range(310)]
    for frame, face in given.items():
        if face.landmarks is None:
            assert np.isnan(result.raw_bboxes[frame]).all()
            continue
        np.testing.assert_array_equal(result.raw_bboxes[frame], face.box)
        np.testing.assert_array_equal(result.landmarks[frame], face.landmarks.points)
        if face.landmarks.mesh is None:
            assert np.isnan(result.landmarks_mesh[frame]).all()
        else:
            np.testing.assert_array_equal(result.landmarks_mesh[frame], face.landmarks.mesh)
    chosen = result.info["chosen_track"]
    assert chosen["frames"] == len(frames) and chosen["implausible_frames"] == 1
    assert (chosen["first_frame"], chosen["last_frame"]) == (0, 303)


def capacity_for(frames: int) -> int:
    """Rows allocated for ``frames`` frames: blocks of 1, 2, 4 .. MAX_BLOCK_FRAMES, then
    MAX_BLOCK_FRAMES each."""
    capacity, block = 0, 1
    while capacity < frames:
        capacity += block
        block = min(2 * block, MAX_BLOCK_FRAMES)
    return capacity


def test_a_frame_costs_its_float32_values_not_objects():
    """1000 frames: the blocks hold exactly their rows' values, and the track grows the
    heap by those blocks only (one object per frame would add ~1 kB a frame on top)."""
    count = 1000
    capacity = capacity_for(count)
    assert capacity - count < MAX_BLOCK_FRAMES
    track = FaceTrack()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for frame in range(count):
            track.add(frame, synthetic_face(frame))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(track) == count and len(track.columns) == count - 1  # the latest: an object
    assert track.columns.nbytes == capacity_for(count - 1) * BYTES_PER_FRAME
    # The blocks, the latest face (an object: ~6.4 kB of values) and the block objects.
    bound = track.columns.nbytes + 2 * BYTES_PER_FRAME + 16 * 1024
    assert grown <= bound, (grown / count, bound / count)
    assert BYTES_PER_FRAME < 6.5 * 1024


def peak_rss_growth(work: Callable[[], T]) -> tuple[int, T]:
    """Bytes the process's peak RSS rose above its RSS during ``work()`` (Linux: the peak
    is reset first through ``/proc/self/clear_refs``), and what ``work`` returned."""

    def status(field: str) -> int:
        found = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
        assert found is not None
        return int(found.group(1)) * 1024

    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = status("VmRSS")
    value = work()
    return status("VmHWM") - before, value


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux /proc only")
def test_assembling_a_long_track_replaces_its_blocks_instead_of_adding_to_them():
    """6000 frames (~38 MB of blocks, ~38 MB of output arrays): the output is written as
    the blocks are freed, so RSS peaks near the track's size, not at both together."""
    count = 6000
    track = FaceTrack()
    for frame in range(count):
        track.add(frame, synthetic_face(frame))
    last = synthetic_face(count - 1).landmarks
    output_bytes = count * 4 * (5 + 68 * 2 + 478 * 3)
    model = SimpleNamespace(name="synthetic", filter_threshold=0.5)
    grown, result = peak_rss_growth(lambda: _assemble(track, count, model))  # type: ignore[arg-type]
    assert result.detected.all() and last is not None
    np.testing.assert_array_equal(result.landmarks_mesh[count - 1], last.mesh)
    assert grown < output_bytes / 4, (grown / 2**20, output_bytes / 2**20)
