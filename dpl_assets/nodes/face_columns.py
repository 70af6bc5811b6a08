"""One track's faces over frames, stored as float32 columns (a few kB per frame, no objects).

A track of a long clip holds a face for most of its frames (90 000 at 25 fps for an hour):
one Python object per frame (box, points and mesh as separate small arrays, a dict entry)
cost about 3x the values themselves and fragmented the heap. Here a frame costs its values
only: box (5,) + detector keypoints (6, 2) + 68 points (68, 2) + mesh (478, 3) float32,
its frame index and a flag byte, ~6.4 kB (:data:`BYTES_PER_FRAME`).

The columns grow in blocks: the first holds 1 frame and each next one twice as many, up to
:data:`MAX_BLOCK_FRAMES` (then all blocks are that size), so a short track (a passing
face, a false detection) costs about its frames, a long one wastes at most one block, and
nothing is ever copied to grow. A block's mesh is allocated when the first mesh arrives
in it (the face-alignment backend has none).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from dpl_assets.nodes.face_model import MESH_POINTS

MAX_BLOCK_FRAMES = 256  # 1.5 MB of mesh a block: large enough to be few, small to waste
BYTES_PER_FRAME = 4 * (5 + 6 * 2 + 68 * 2 + MESH_POINTS * 3) + 4 + 1  # values, index, flags

# Flag bits of a frame
HAS_KEYPOINTS = 1  # the detector gave keypoints (a box predicted by tracking has none)
HAS_LANDMARKS = 2  # the model gave landmarks (68 points) for the face
HAS_MESH = 4  # ... and a mesh


@dataclass
class FaceBlock:
    """Consecutive stored frames of a track (``n`` of them filled, in frame order).

    - ``frames`` int32 (capacity,): frame index of each row;
    - ``boxes`` float32 (capacity, 5): ``[x1, y1, x2, y2, score]`` px;
    - ``keypoints`` float32 (capacity, 6, 2): the detector's keypoints px (rows without
      :data:`HAS_KEYPOINTS` are undefined);
    - ``points`` float32 (capacity, 68, 2): the 68 landmarks px (rows without
      :data:`HAS_LANDMARKS` are undefined);
    - ``mesh`` float32 (capacity, 478, 3) px, or None while no row has :data:`HAS_MESH`;
    - ``flags`` uint8 (capacity,): :data:`HAS_KEYPOINTS` | :data:`HAS_LANDMARKS` | :data:`HAS_MESH`.
    """

    frames: np.ndarray
    boxes: np.ndarray
    keypoints: np.ndarray
    points: np.ndarray
    mesh: np.ndarray | None
    flags: np.ndarray
    n: int = 0

    @classmethod
    def empty(cls, capacity: int) -> FaceBlock:
        return cls(
            frames=np.empty(capacity, np.int32),
            boxes=np.empty((capacity, 5), np.float32),
            keypoints=np.empty((capacity, 6, 2), np.float32),
            points=np.empty((capacity, 68, 2), np.float32),
            mesh=None,
            flags=np.zeros(capacity, np.uint8),
        )

    @property
    def capacity(self) -> int:
        return int(self.frames.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of the block's arrays (allocated, filled or not)."""
        arrays = (self.frames, self.boxes, self.keypoints, self.points, self.mesh, self.flags)
        return sum(a.nbytes for a in arrays if a is not None)


class FaceColumns:
    """The frames of one track in :class:`FaceBlock` s, appended in increasing frame order."""

    def __init__(self) -> None:
        self.blocks: list[FaceBlock] = []
        self.count = 0  # frames stored

    def __len__(self) -> int:
        return self.count

    @property
    def nbytes(self) -> int:
        """Bytes of all blocks' arrays (what the stored frames cost, spare rows included)."""
        return sum(block.nbytes for block in self.blocks)

    def append(
        self,
        frame: int,
        box: np.ndarray,
        keypoints: np.ndarray | None,
        points: np.ndarray | None,
        mesh: np.ndarray | None,
    ) -> None:
        """Store frame ``frame``'s face: box (5,) px, detector keypoints (6, 2) px or None,
        68 points (68, 2) px or None, mesh (478, 3) px or None (ignored without points).
        ValueError unless ``frame`` is after the last stored one."""
        if self.count and frame <= self.last_frame:
            raise ValueError(f"frame {frame} is not after the track's last, {self.last_frame}")
        if not self.blocks or self.blocks[-1].n == self.blocks[-1].capacity:
            capacity = min(2 ** len(self.blocks), MAX_BLOCK_FRAMES)
            self.blocks.append(FaceBlock.empty(capacity))
        block = self.blocks[-1]
        row = block.n
        block.frames[row] = frame
        block.boxes[row] = box
        flags = 0
        if keypoints is not None:
            block.keypoints[row] = keypoints
            flags |= HAS_KEYPOINTS
        if points is not None:
            block.points[row] = points
            flags |= HAS_LANDMARKS
            if mesh is not None:
                if block.mesh is None:
                    block.mesh = np.empty((block.capacity, MESH_POINTS, 3), np.float32)
                block.mesh[row] = mesh
                flags |= HAS_MESH
        block.flags[row] = flags
        block.n += 1
        self.count += 1

    @property
    def last_frame(self) -> int:
        block = self.blocks[-1]
        return int(block.frames[block.n - 1])

    def frames(self) -> np.ndarray:
        """Frame indices int32 (count,) of the stored frames, increasing."""
        return np.concatenate([b.frames[: b.n] for b in self.blocks] or [np.empty(0, np.int32)])

    def boxes(self) -> np.ndarray:
        """Boxes float32 (count, 5) of the stored frames, in frame order."""
        return np.concatenate(
            [b.boxes[: b.n] for b in self.blocks] or [np.empty((0, 5), np.float32)]
        )

    def row(self, frame: int) -> tuple[FaceBlock, int]:
        """The block and row holding frame ``frame``; KeyError when it is not stored."""
        for block in self.blocks:
            if block.n and block.frames[0] <= frame <= block.frames[block.n - 1]:
                row = int(np.searchsorted(block.frames[: block.n], frame))
                if block.frames[row] == frame:
                    return block, row
                break
        raise KeyError(frame)

    def drain(self) -> Iterator[FaceBlock]:
        """The blocks in frame order, each let go once the caller is done with it (so that
        copying a track out costs one block, not the whole track, on top of the copy);
        the columns are empty afterwards."""
        self.blocks.reverse()
        while self.blocks:
            block = self.blocks.pop()
            self.count -= block.n
            yield block
