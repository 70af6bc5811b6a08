"""One image through a mediapipe legacy solution (``FaceMesh``, ``FaceDetection``) at less
cost per call than ``SolutionBase.process``.

``process`` builds a new namedtuple class on every call (``collections.namedtuple``:
~0.14 ms, about 4 % of a tracked face frame here, more than our own per-frame Python) and
converts every output stream. :func:`image_output` sends the image and waits as ``process``
does, then converts the one stream asked for. It reads ``SolutionBase``'s private
attributes (mediapipe's legacy ``solutions`` API, unchanged through the 0.10 releases); a
solution without them goes through ``process``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

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
    if not _plain_image_solution(solution, stream):
        return getattr(solution.process(rgb), stream)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError("Input image must contain three channel rgb data.")
    ((input_stream, input_type),) = solution._input_stream_type_info.items()
    solution._graph_outputs.clear()
    solution._simulated_timestamp += SIMULATED_FRAME_US
    packet = solution._make_packet(input_type, rgb).at(solution._simulated_timestamp)
    solution._graph.add_packet_to_input_stream(stream=input_stream, packet=packet)
    solution._graph.wait_until_idle()
    output = solution._graph_outputs.get(stream)
    if output is None:
        return None
    return solution._get_packet_content(solution._output_stream_type_info[stream], output)


def _plain_image_solution(solution: Any, stream: str) -> bool:
    """Whether ``solution`` has the attributes :func:`image_output` uses, a running graph,
    one image input stream and an output named ``stream``."""
    if not all(hasattr(solution, name) for name in _PRIVATE) or solution._graph is None:
        return False
    inputs, outputs = solution._input_stream_type_info, solution._output_stream_type_info
    if not isinstance(inputs, dict) or len(inputs) != 1 or not isinstance(outputs, dict):
        return False
    input_type = next(iter(inputs.values()))
    return getattr(input_type, "name", None) in ("IMAGE_FRAME", "IMAGE") and stream in outputs
