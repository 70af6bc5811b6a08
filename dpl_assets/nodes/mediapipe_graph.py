"""One image through mediapipe's ``FaceMesh`` or ``FaceDetection`` (legacy solutions) at
less cost per call than their ``process``.

``SolutionBase.process`` builds a new namedtuple class on every call and sets each output
stream on it. :func:`image_output` sends the image and waits as ``process`` does, then
converts the one stream asked for: 0.15-0.19 ms less CPU per tracked face frame here
(mesh every frame, detector every 10), about 4 % of the face stage. It reads
``SolutionBase``'s private attributes (the legacy ``solutions`` API, unchanged through the
0.10 releases), so only these two classes go this way (their ``process`` only wraps the
image in ``{"image": image}``; others, e.g. ``Pose``, post-process their outputs) and
only while those attributes are there; anything else goes through ``process``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dpl_assets.memory import heap_blocks_below

_PRIVATE = (
    "_graph",
    "_graph_outputs",
    "_input_stream_type_info",
    "_output_stream_type_info",
    "_simulated_timestamp",
    "_make_packet",
    "_get_packet_content",
)
SIMULATED_FRAME_US = 33333
"""The timestamp step ``process`` gives each call (a 30 fps video): the same here, so a
tracking solution sees the same clock whichever way it is called."""


def image_output(solution: Any, rgb: np.ndarray, stream: str) -> Any:
    """``solution.process(rgb).<stream>``: what output ``stream`` holds after one RGB
    uint8 (H, W, 3) C-contiguous image (e.g. ``multi_face_landmarks``, a list of
    ``NormalizedLandmarkList``; ``detections``), or None when the graph gave nothing.

    Raises what ``process`` raises: RuntimeError from the graph, ValueError for an image
    that is not 3-channel or a closed solution, AttributeError for an unknown stream.
    """
    # mediapipe copies each image into a packet (and works on it in buffers as large): from
    # the heap, where the previous call's are reused, not freshly mapped pages each time.
    with heap_blocks_below(2 * rgb.nbytes):
        return _image_output(solution, rgb, stream)


def _image_output(solution: Any, rgb: np.ndarray, stream: str) -> Any:
    if not _plain_image_solution(solution, stream):
        return getattr(solution.process(rgb), stream)
    ((input_stream, input_type),) = solution._input_stream_type_info.items()
    solution._graph_outputs.clear()
    solution._simulated_timestamp += SIMULATED_FRAME_US  # before the check, as process
    if rgb.shape[2] != 3:
        raise ValueError("Input image must contain three channel rgb data.")
    packet = solution._make_packet(input_type, rgb).at(solution._simulated_timestamp)
    solution._graph.add_packet_to_input_stream(stream=input_stream, packet=packet)
    solution._graph.wait_until_idle()
    output = solution._graph_outputs.get(stream)
    if output is None:
        return None
    return solution._get_packet_content(solution._output_stream_type_info[stream], output)


_SOLUTIONS = {
    ("mediapipe.python.solutions.face_mesh", "FaceMesh"),
    ("mediapipe.python.solutions.face_detection", "FaceDetection"),
}
"""The classes (exactly: not subclasses) :func:`image_output` calls without ``process``."""


def _plain_image_solution(solution: Any, stream: str) -> bool:
    """Whether ``solution`` is one of :data:`_SOLUTIONS` with the attributes
    :func:`image_output` uses, a running graph, one image input stream and an output named
    ``stream``."""
    if (type(solution).__module__, type(solution).__qualname__) not in _SOLUTIONS:
        return False
    if not all(hasattr(solution, name) for name in _PRIVATE) or solution._graph is None:
        return False
    inputs, outputs = solution._input_stream_type_info, solution._output_stream_type_info
    if not isinstance(inputs, dict) or len(inputs) != 1 or not isinstance(outputs, dict):
        return False
    input_type = next(iter(inputs.values()))
    return getattr(input_type, "name", None) in ("IMAGE_FRAME", "IMAGE") and stream in outputs
