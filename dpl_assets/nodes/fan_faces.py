"""The optional ``face-alignment`` backend: the original tool's S3FD detector + 2D-FAN-4.

``face-alignment`` (Adrian Bulat's package, 1.5) needs two weight files that it downloads
into torch's hub cache on first use: ``s3fd-619a316812.pth`` (detector) and
``2DFAN4-11f355bf06.pth.tar`` (68-point landmarks), both under
``$TORCH_HOME/hub/checkpoints/`` (``~/.cache/torch/hub/checkpoints`` by default). On a
machine without internet, put them there by hand; a missing file is a
:class:`~dpl_assets.nodes.wav2vec.ModelLoadError` naming the path and the download address.

Install: ``pip install --no-deps face-alignment==1.5.0`` (its wheel requires
``opencv-python``, which would overwrite the ``cv2`` that mediapipe's
``opencv-contrib-python`` provides; its other needs, numba, scikit-image and tqdm, come
with the ``face-alignment`` extra of this package). With ``DPL_NO_DOWNLOADS=1`` in the
environment, missing weights fail at once instead of being fetched (offline clusters).

Outputs follow :class:`~dpl_assets.nodes.face_model.FaceModel`: boxes ``[x1, y1, x2, y2,
score]`` px from S3FD (after its own NMS and ``filter_threshold``), no detector keypoints,
68 points px from FAN (with its horizontal-flip averaging), and no dense mesh.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from dpl_assets.nodes.face_model import (
    DEFAULT_FILTER_THRESHOLD,
    ClosedOnExit,
    FaceLandmarks,
    as_rgb,
    check_threshold,
    largest_first,
)
from dpl_assets.nodes.wav2vec import ModelLoadError

FAN_WEIGHTS = "2DFAN4-11f355bf06.pth.tar"
S3FD_WEIGHTS = "s3fd-619a316812.pth"
DOWNLOAD_BASE = "https://www.adrianbulat.com/downloads/python-fan/"
NO_DOWNLOADS_ENV = "DPL_NO_DOWNLOADS"  # set: missing weights fail at once, never fetched


def weights_dir() -> Path:
    """Where ``face-alignment`` looks for (and downloads) its weights: torch's hub cache."""
    import torch  # with the backend's first use, not with the package

    return Path(torch.hub.get_dir()) / "checkpoints"


class FanFaceModel(ClosedOnExit):
    """S3FD + FAN through the ``face-alignment`` package, on ``device`` (``cpu``/``cuda:N``).

    Loaded on first use; :meth:`close` frees it. Not thread-safe: one per thread.
    """

    name = "face_alignment"

    def __init__(
        self,
        filter_threshold: float = DEFAULT_FILTER_THRESHOLD,
        device: str = "cpu",
        flip_input: bool = True,
    ):
        self.filter_threshold = check_threshold(filter_threshold)
        self.device = device
        self.flip_input = flip_input
        self._aligner: Any = None

    def _model(self) -> Any:
        if self._aligner is None:
            self._aligner = self._load()
        return self._aligner

    def _load(self) -> Any:
        try:
            import face_alignment
        except ImportError as error:
            raise ModelLoadError(
                "backend 'face_alignment' needs the face-alignment package: "
                "pip install 'dpl_assets[face-alignment]' && "
                "pip install --no-deps face-alignment==1.5.0"
            ) from error
        folder = weights_dir()
        detector_path = folder / S3FD_WEIGHTS
        missing = [name for name in (S3FD_WEIGHTS, FAN_WEIGHTS) if not (folder / name).exists()]
        if missing and os.environ.get(NO_DOWNLOADS_ENV):
            raise ModelLoadError(
                f"face-alignment weights missing: {', '.join(missing)} in {folder} "
                f"({NO_DOWNLOADS_ENV} is set, so they are not downloaded; get them from "
                f"{DOWNLOAD_BASE}<name> or set TORCH_HOME)"
            )
        try:
            return face_alignment.FaceAlignment(
                face_alignment.LandmarksType.TWO_D,
                device=self.device,
                flip_input=self.flip_input,
                face_detector="sfd",
                face_detector_kwargs={
                    "filter_threshold": self.filter_threshold,
                    # given explicitly so a present file is never re-fetched
                    "path_to_detector": str(detector_path) if detector_path.exists() else None,
                },
                compile=False,  # torch.compile needs a C++ toolchain and minutes per process
            )
        # URLError is an OSError; a damaged file fails torch.load with UnpicklingError
        except (OSError, RuntimeError, KeyError, EOFError, pickle.UnpicklingError) as error:
            where = (
                f"missing {', '.join(missing)} in {folder} (download from {DOWNLOAD_BASE}"
                f"<name>, or set TORCH_HOME)"
                if missing
                else f"weights in {folder} do not load"
            )
            raise ModelLoadError(f"face-alignment could not load: {where}: {error}") from error

    def close(self) -> None:
        """Drop the loaded model (a later call loads it again)."""
        self._aligner = None

    def detect(self, rgb: np.ndarray) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """S3FD faces in an RGB uint8 (H, W, 3) frame, largest first: ``(box (5,), None)``."""
        boxes = self._model().face_detector.detect_from_image(as_rgb(rgb).copy())
        faces: list[tuple[np.ndarray, np.ndarray | None]] = [
            (np.asarray(box, np.float32)[:5], None) for box in boxes
        ]
        return largest_first(faces)

    def landmarks(self, rgb: np.ndarray, box: np.ndarray) -> FaceLandmarks | None:
        """FAN's 68 points (68, 2) px for the face in ``box`` ``[x1, y1, x2, y2, ...]``."""
        found = self._model().get_landmarks_from_image(
            as_rgb(rgb), detected_faces=[np.asarray(box, np.float32)]
        )
        if not found:
            return None
        return FaceLandmarks(np.asarray(found[0], np.float32)[:, :2])
