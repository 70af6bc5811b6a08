"""mediapipe solutions called through ``image_output``: the same outputs as ``process``."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from dpl_assets.nodes.mediapipe_faces import import_mediapipe
from dpl_assets.nodes.mediapipe_graph import image_output
from dpl_assets_tests.test_faces import astronaut, moving_clip


def _outputs(make, stream: str, frames: list[np.ndarray], direct: bool) -> list[bytes]:
    """Every frame's output ``stream`` from one new solution, serialized to compare; not
    direct: through image_output, which must not call ``process``."""
    with make() as solution:
        if direct:
            found = [getattr(solution.process(f), stream) for f in frames]
        else:
            solution.process = _not_called
            found = [image_output(solution, f, stream) for f in frames]
    return [b"".join(item.SerializeToString() for item in out or []) for out in found]


def _not_called(*args):
    raise AssertionError("process was called")


def test_tracking_mesh_gives_process_outputs_frame_by_frame():
    mp = import_mediapipe()
    frames = moving_clip(12)  # tracking mode: every frame after the first uses the last

    def make():
        return mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False, max_num_faces=1, refine_landmarks=True
        )

    direct = _outputs(make, "multi_face_landmarks", frames, direct=True)
    ours = _outputs(make, "multi_face_landmarks", frames, direct=False)
    assert all(direct) and ours == direct  # a face every frame, the same bytes


def test_detector_gives_process_outputs():
    mp = import_mediapipe()
    empty = np.zeros((240, 320, 3), np.uint8)
    frames = [astronaut(), empty, astronaut()[::2, ::2].copy()]

    def make():
        return mp.solutions.face_detection.FaceDetection(model_selection=1)

    direct = _outputs(make, "detections", frames, direct=True)
    ours = _outputs(make, "detections", frames, direct=False)
    assert direct[0] and direct[1] == b"" and ours == direct  # None for the empty frame too


def test_errors_are_processs_own():
    mp = import_mediapipe()
    with mp.solutions.face_detection.FaceDetection(model_selection=1) as detector:
        with pytest.raises(ValueError, match="three channel"):
            image_output(detector, np.zeros((32, 32, 4), np.uint8), "detections")
        with pytest.raises(AttributeError):
            image_output(detector, astronaut(), "no_such_stream")
    with pytest.raises(ValueError, match="_graph is None"):  # closed: process's own error
        image_output(detector, astronaut(), "detections")


def test_other_classes_go_through_their_process():
    mp = import_mediapipe()

    class Counted(mp.solutions.face_detection.FaceDetection):
        def process(self, image):
            return SimpleNamespace(detections=["from process"])

    with Counted(model_selection=1) as detector:  # a subclass may post-process its outputs
        assert image_output(detector, astronaut(), "detections") == ["from process"]


def test_a_solution_without_the_private_attributes_goes_through_process():
    calls = []

    def process(rgb):
        calls.append(rgb.shape)
        return SimpleNamespace(detections=["a face"])

    other = SimpleNamespace(process=process)  # e.g. a later mediapipe's solution
    assert image_output(other, astronaut(), "detections") == ["a face"]
    assert calls == [astronaut().shape]


# Minor page faults per tracking-mesh call on a 700 px crop (1.47 MB: over the 1 MB policy's
# threshold), in a fresh process with the steps' allocator policy.
PACKET_FAULTS_SCRIPT = """
import resource
import numpy as np
from dpl_assets import memory
from dpl_assets.nodes.mediapipe_faces import import_mediapipe
from dpl_assets.nodes.mediapipe_graph import image_output
from dpl_assets_tests.test_faces import astronaut

assert memory.map_large_blocks()
crop = np.pad(astronaut(), ((94, 94), (94, 94), (0, 0)))  # the 512 px photo in 700 px
mp = import_mediapipe()
with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, refine_landmarks=True) as mesh:
    for _ in range(5):
        image_output(mesh, crop, "multi_face_landmarks")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    found = 0
    for _ in range(20):
        found += bool(image_output(mesh, crop, "multi_face_landmarks"))
    print(found, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


def test_the_packets_copies_reuse_heap_instead_of_fresh_pages():
    from dpl_assets import memory
    from dpl_assets_tests.fresh_python import script_output

    if memory._glibc() is None:
        pytest.skip("glibc only")
    found, faults_per_call = script_output(PACKET_FAULTS_SCRIPT).split()[-2:]
    assert int(found) == 20  # the mesh tracked the face in every call
    # 1.47 MB of fresh pages would be ~360 faults a call (what it cost before the copies
    # came from the heap: 390-425 a frame on the benchmark clips)
    assert float(faults_per_call) < 150
