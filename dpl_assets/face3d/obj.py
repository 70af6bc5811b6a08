"""The head template: a Wavefront ``.obj`` with UVs (DECA's ``head_template.obj``).

The RenderingNode needs the template's triangles and texture layout; its vertex positions
are replaced by FLAME's. Source of the template: DECA's ``data/head_template.obj``
(github.com/yfeng95/DECA, ``fetch_data.sh``); format: the Wavefront OBJ specification
(``v``, ``vt`` and ``f v/vt/vn`` statements, 1-based and negative indices).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np


class MeshTemplate(NamedTuple):
    """A head template's topology and UV layout (unpacks as a 4-tuple).

    - ``vertices`` float32 (V, 3): template positions (model units; only V is used to render).
    - ``faces`` int64 (F, 3): vertex indices of each triangle, 0-based.
    - ``uvs`` float32 (T, 2): texture coordinates (u right, v up, as in ``.obj``).
    - ``uv_faces`` int64 (F, 3): the ``uvs`` index of each triangle corner.
    """

    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    uv_faces: np.ndarray


def load_obj_template(path: str | Path) -> MeshTemplate:
    """Read a head template ``.obj`` (``v``, ``vt`` and ``f v/vt ...`` lines) into arrays.

    Face corners may be ``v/vt`` or ``v/vt/vn``; indices are 1-based, negative ones count
    back from the last element defined so far (OBJ rule); polygons with more than three
    corners are split into a fan of triangles around their first corner. Normals, groups,
    materials, comments and other statements are ignored.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file and
    line for malformed input (a bad number, a corner without a texture index, an index out
    of range) or a template without faces or UVs.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"head template not found: {path}")
    reader = _ObjReader(path)
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line_number, line in enumerate(lines, start=1):
            reader.read_statement(line_number, line.split("#", 1)[0].split())
    return reader.template()


class _ObjReader:
    """Accumulates one file's ``v``, ``vt`` and triangulated ``f`` statements."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.vertices: list[tuple[float, float, float]] = []
        self.uvs: list[tuple[float, float]] = []
        self.corners: list[tuple[int, int]] = []  # (vertex, uv), 0-based, three per triangle
        self.corner_lines: list[int] = []

    def fail(self, line_number: int, message: str) -> ValueError:
        return ValueError(f"{self.path}:{line_number}: {message}")

    def read_statement(self, line_number: int, fields: list[str]) -> None:
        if not fields:
            return
        keyword, rest = fields[0], fields[1:]
        if keyword == "v":
            x, y, z = self._numbers(rest, 3, line_number, "vertex")
            self.vertices.append((x, y, z))
        elif keyword == "vt":
            u, v = self._numbers(rest, 2, line_number, "texture coordinate")
            self.uvs.append((u, v))
        elif keyword == "f":
            self._face(rest, line_number)

    def _face(self, corners: list[str], line_number: int) -> None:
        if len(corners) < 3:
            raise self.fail(line_number, f"face needs at least 3 corners, got {len(corners)}")
        polygon = []
        for corner in corners:
            parts = corner.split("/")
            if len(parts) < 2 or not parts[1]:
                raise self.fail(
                    line_number,
                    f"face corner {corner!r} has no texture index: the template "
                    "needs UVs (f v/vt v/vt v/vt)",
                )
            polygon.append(
                (
                    self._index(parts[0], len(self.vertices), line_number, "vertex"),
                    self._index(parts[1], len(self.uvs), line_number, "texture coordinate"),
                )
            )
        for second in range(1, len(polygon) - 1):
            self.corners += [polygon[0], polygon[second], polygon[second + 1]]
            self.corner_lines += [line_number] * 3

    def _numbers(self, fields: list[str], count: int, line_number: int, what: str) -> list[float]:
        if len(fields) < count:
            raise self.fail(line_number, f"{what} needs {count} numbers, got {' '.join(fields)!r}")
        try:
            values = [float(field) for field in fields[:count]]
        except ValueError:
            raise self.fail(
                line_number, f"{what} has a non-number in {' '.join(fields)!r}"
            ) from None
        if not all(math.isfinite(value) for value in values):
            raise self.fail(line_number, f"{what} has a non-finite number in {' '.join(fields)!r}")
        return values

    def _index(self, field: str, defined: int, line_number: int, what: str) -> int:
        try:
            value = int(field)
        except ValueError:
            raise self.fail(line_number, f"bad {what} index {field!r}") from None
        if value == 0:
            raise self.fail(line_number, f"{what} index 0 (OBJ indices start at 1)")
        resolved = value - 1 if value > 0 else defined + value
        if resolved < 0:
            raise self.fail(line_number, f"{what} index {value} is before the first {what}")
        return resolved

    def template(self) -> MeshTemplate:
        if not self.corners:
            raise ValueError(f"{self.path}: no faces ('f' lines) in the head template")
        if not self.uvs:
            raise ValueError(
                f"{self.path}: no texture coordinates ('vt' lines) in the head template"
            )
        corner_array = np.asarray(self.corners, dtype=np.int64)
        # Positive indices may legally point forward in some writers; check them once at the end.
        for column, (limit, what) in enumerate(
            [(len(self.vertices), "vertex"), (len(self.uvs), "texture coordinate")]
        ):
            bad = np.flatnonzero(corner_array[:, column] >= limit)
            if bad.size:
                raise self.fail(
                    self.corner_lines[bad[0]],
                    f"{what} index {corner_array[bad[0], column] + 1} is out of range "
                    f"(the file defines {limit})",
                )
        return MeshTemplate(
            vertices=np.asarray(self.vertices, dtype=np.float32).reshape(-1, 3),
            faces=corner_array[:, 0].reshape(-1, 3),
            uvs=np.asarray(self.uvs, dtype=np.float32).reshape(-1, 2),
            uv_faces=corner_array[:, 1].reshape(-1, 3),
        )
