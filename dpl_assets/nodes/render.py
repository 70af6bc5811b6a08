"""Mesh renders of FLAME heads: normal, UV and mask images under DECA's orthographic camera.

The RenderingNode's library: a head template loader (``.obj`` with UVs), DECA's
orthographic projection, a triangle rasterizer (pure torch, or pytorch3d's when it is
importable) and the shading that turns fragments into the three image datatypes.

Coordinate conventions (the same as DECA/EMOCA, so their ``cam`` and ``light`` apply as is):

- **Model space** (FLAME): x to the subject's left = image right, y up, z out of the face
  towards the camera. The camera looks along -z, so of two surfaces the one with the larger
  z is in front.
- **Projected space** (:func:`orthographic_project`): ``xy = scale * (xy + [tx, ty])`` and
  ``z = scale * z`` (DECA scales z too; with ``scale > 0`` depth order is unchanged). x and
  y are normalised device coordinates (NDC): x = -1 is the left image edge and +1 the right
  edge, y = +1 the top edge and -1 the bottom edge (y up, image rows down).
- **Pixels**: pixel (row i, column j) is the square ``[j, j + 1] x [i, i + 1]`` in continuous
  pixel coordinates and is sampled at its centre, i.e. at NDC
  ``x = (2 j + 1) / W - 1``, ``y = 1 - (2 i + 1) / H`` (:func:`ndc_to_pixels` maps
  projected points to continuous pixel coordinates ``u = (x + 1) W / 2``,
  ``v = (1 - y) H / 2``). For a non-square image x spans the width and y the height, as
  DECA's renderer arranges for pytorch3d.
- **Coverage**: a pixel is covered by a face when its centre is strictly inside the
  triangle (all three barycentric coordinates > 0), as pytorch3d with ``blur_radius=0``;
  a centre lying exactly on an edge belongs to neither face. Of several covering faces the
  one with the largest projected z wins; exact depth ties go to the lower face index (as
  pytorch3d). No back-face culling. Barycentric coordinates are affine (orthographic:
  no perspective correction).

Internally both backends rasterize in pytorch3d's screen frame (+x left, +y up, depth
``= max_z + 1 - z`` per item, so every depth is >= 1 and pytorch3d never drops a face as
"behind the camera", which DECA's fixed ``z + 10`` shift could) with pytorch3d's own
arithmetic for pixel centres and barycentric coordinates, so the two agree to float
rounding.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch

Backend = Literal["auto", "torch", "pytorch3d"]
NormalEncoding = Literal["x255", "biased"]

# pytorch3d's kEpsilon: faces with |2 x area| below it (NDC units) are skipped, and it is
# added to the area before dividing, so our barycentric coordinates equal theirs.
_AREA_EPSILON = 1e-8
# Bounding boxes are widened by this many pixels so that float rounding in the NDC -> index
# mapping never skips a pixel the exact inside test would accept.
_BBOX_MARGIN_PX = 1e-3
_EMPTY_KEY = torch.iinfo(torch.int64).max
# Per-pixel work after rasterizing goes in blocks of this many image pixels (bounds memory).
_PIXELS_PER_BLOCK = 1 << 20
_LOW_32_BITS = 0xFFFFFFFF

# Order-2 spherical harmonics irradiance (Ramamoorthi & Hanrahan 2001) as DECA/EMOCA shade,
# for the basis [1, x, y, z, xy, xz, yz, x^2 - y^2, 3 z^2 - 1]: factor = the real SH
# normalisation x the Lambert kernel's A_l (2 pi / 3 for band 1, pi / 4 for band 2; bands
# 1-2 equal the paper's c1, c2, c5 constants). Band 0 carries no A_0 = pi: EMOCA's light
# coefficients were trained with DECA's factors, so we keep them exactly.
_SH_FACTORS = (
    1.0 / math.sqrt(4 * math.pi),
    (2 * math.pi / 3) * math.sqrt(3 / (4 * math.pi)),
    (2 * math.pi / 3) * math.sqrt(3 / (4 * math.pi)),
    (2 * math.pi / 3) * math.sqrt(3 / (4 * math.pi)),
    (math.pi / 4) * 3 * math.sqrt(5 / (12 * math.pi)),
    (math.pi / 4) * 3 * math.sqrt(5 / (12 * math.pi)),
    (math.pi / 4) * 3 * math.sqrt(5 / (12 * math.pi)),
    (math.pi / 4) * (3 / 2) * math.sqrt(5 / (12 * math.pi)),
    (math.pi / 4) * (1 / 2) * math.sqrt(5 / (4 * math.pi)),
)

ArrayLike = np.ndarray | torch.Tensor


# --------------------------------------------------------------------------- template


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
    vertices: list[tuple[float, float, float]] = []
    uvs: list[tuple[float, float]] = []
    corners: list[tuple[int, int]] = []  # (vertex, uv), 0-based, three per triangle
    corner_lines: list[int] = []

    def fail(line_number: int, message: str) -> ValueError:
        return ValueError(f"{path}:{line_number}: {message}")

    def numbers(fields: list[str], count: int, line_number: int, what: str) -> list[float]:
        if len(fields) < count:
            raise fail(line_number, f"{what} needs {count} numbers, got {' '.join(fields)!r}")
        try:
            values = [float(field) for field in fields[:count]]
        except ValueError:
            raise fail(line_number, f"{what} has a non-number in {' '.join(fields)!r}") from None
        if not all(math.isfinite(value) for value in values):
            raise fail(line_number, f"{what} has a non-finite number in {' '.join(fields)!r}")
        return values

    def index(field: str, defined: int, line_number: int, what: str) -> int:
        try:
            value = int(field)
        except ValueError:
            raise fail(line_number, f"bad {what} index {field!r}") from None
        if value == 0:
            raise fail(line_number, f"{what} index 0 (OBJ indices start at 1)")
        resolved = value - 1 if value > 0 else defined + value
        if resolved < 0:
            raise fail(line_number, f"{what} index {value} is before the first {what}")
        return resolved

    with path.open(encoding="utf-8", errors="replace") as lines:
        for line_number, line in enumerate(lines, start=1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            keyword, rest = fields[0], fields[1:]
            if keyword == "v":
                x, y, z = numbers(rest, 3, line_number, "vertex")
                vertices.append((x, y, z))
            elif keyword == "vt":
                u, v = numbers(rest, 2, line_number, "texture coordinate")
                uvs.append((u, v))
            elif keyword == "f":
                if len(rest) < 3:
                    raise fail(line_number, f"face needs at least 3 corners, got {len(rest)}")
                polygon = []
                for corner in rest:
                    parts = corner.split("/")
                    if len(parts) < 2 or not parts[1]:
                        raise fail(
                            line_number,
                            f"face corner {corner!r} has no texture index: the template "
                            "needs UVs (f v/vt v/vt v/vt)",
                        )
                    polygon.append(
                        (
                            index(parts[0], len(vertices), line_number, "vertex"),
                            index(parts[1], len(uvs), line_number, "texture coordinate"),
                        )
                    )
                for second in range(1, len(polygon) - 1):
                    corners += [polygon[0], polygon[second], polygon[second + 1]]
                    corner_lines += [line_number] * 3
    if not corners:
        raise ValueError(f"{path}: no faces ('f' lines) in the head template")
    if not uvs:
        raise ValueError(f"{path}: no texture coordinates ('vt' lines) in the head template")
    corner_array = np.asarray(corners, dtype=np.int64)
    # Positive indices may legally point forward in some writers; check them once at the end.
    for column, (limit, what) in enumerate(
        [(len(vertices), "vertex"), (len(uvs), "texture coordinate")]
    ):
        bad = np.flatnonzero(corner_array[:, column] >= limit)
        if bad.size:
            raise fail(
                corner_lines[bad[0]],
                f"{what} index {corner_array[bad[0], column] + 1} is out of range "
                f"(the file defines {limit})",
            )
    return MeshTemplate(
        vertices=np.asarray(vertices, dtype=np.float32).reshape(-1, 3),
        faces=corner_array[:, 0].reshape(-1, 3),
        uvs=np.asarray(uvs, dtype=np.float32).reshape(-1, 2),
        uv_faces=corner_array[:, 1].reshape(-1, 3),
    )


# --------------------------------------------------------------------------- camera


def orthographic_project(verts: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """DECA's orthographic camera: model-space verts (N, V, 3) -> projected (N, V, 3).

    ``cam`` (N, 3) is ``[scale, tx, ty]`` (as EMOCA predicts): ``xy' = scale * (xy + t)``,
    ``z' = scale * z``. The result's x, y are NDC (x right, y up; see the module docstring
    for the pixel mapping); z only orders depth (larger = nearer the camera).
    """
    if verts.ndim != 3 or verts.shape[-1] != 3:
        raise ValueError(f"verts must be (N, V, 3), got {tuple(verts.shape)}")
    if cam.shape != (verts.shape[0], 3):
        raise ValueError(f"cam must be (N, 3) = (scale, tx, ty), got {tuple(cam.shape)}")
    scale = cam[:, None, :1]
    shifted_xy = verts[..., :2] + cam[:, None, 1:]
    return torch.cat([shifted_xy, verts[..., 2:]], dim=-1) * scale


def ndc_to_pixels(points: torch.Tensor, image_size: int | Sequence[int]) -> torch.Tensor:
    """Projected x, y (..., >= 2) in NDC -> continuous pixel coordinates (..., 2) ``(u, v)``.

    ``u`` = column from the left edge, ``v`` = row from the top edge, in pixels; the centre
    of pixel (row i, column j) is at ``(j + 0.5, i + 0.5)``.
    """
    height, width = _image_hw(image_size)
    u = (points[..., 0] + 1) * (width / 2)
    v = (1 - points[..., 1]) * (height / 2)
    return torch.stack([u, v], dim=-1)


# --------------------------------------------------------------------------- rasterizer


class Fragments(NamedTuple):
    """Per-pixel result of rasterizing N meshes into H x W images (one face per pixel).

    - ``pix_to_face`` int64 (N, H, W): index (into the mesh's ``faces``) of the front-most
      face covering the pixel centre, -1 where no face does.
    - ``bary_coords`` float32 (N, H, W, 3): barycentric coordinates of the pixel centre in
      that face (weights of its corners 0, 1, 2; sum 1), 0 where empty.
    - ``z`` float32 (N, H, W): projected z of the visible surface (larger = nearer), -inf
      where empty.
    """

    pix_to_face: torch.Tensor
    bary_coords: torch.Tensor
    z: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """bool (N, H, W): True where a face covers the pixel centre."""
        return self.pix_to_face >= 0


@functools.cache
def pytorch3d_available() -> bool:
    """True when ``pytorch3d``'s mesh rasterizer imports (checked once per process)."""
    try:
        from pytorch3d.renderer.mesh import rasterize_meshes  # noqa: F401
    except (ImportError, OSError):  # OSError: a build that does not match this torch
        return False
    return True


def rasterize(
    verts: torch.Tensor,
    faces: ArrayLike,
    image_size: int | Sequence[int],
    *,
    backend: Backend = "auto",
    max_pairs_per_chunk: int = 1 << 20,
) -> Fragments:
    """Rasterize projected meshes: per pixel the front-most face and its barycentrics.

    ``verts`` float (N, V, 3) in projected space (from :func:`orthographic_project`: x, y
    NDC with y up, z larger = nearer); ``faces`` int (F, 3), shared by all N meshes;
    ``image_size`` ``S`` or ``(H, W)``. ``backend``: ``"torch"`` (the pure-torch rasterizer
    below), ``"pytorch3d"`` (``pytorch3d.renderer.mesh.rasterize_meshes``; ImportError if it
    does not import) or ``"auto"`` (pytorch3d when available, else torch). Runs on the
    device of ``verts``. ``max_pairs_per_chunk`` bounds the torch backend's memory: it
    tests at most about twice that many (face, pixel) pairs at once (~150 bytes each, so
    ~300 MB at the default), whatever the face sizes.

    Torch backend: every face's pixel bounding box (a huge face: bands of its rows) is a
    work unit; runs of units are expanded into (face, pixel-centre) pairs, batched over
    items and faces. Pairs whose centre is inside the face get a 64-bit key (depth in the
    high bits, face index in the low bits) and a ``scatter_reduce(amin)`` per pixel keeps
    the nearest face, ties to the lowest index. The winners' barycentrics are recomputed
    once per covered pixel. Cost grows with the summed bounding-box areas (about the
    covered area times depth complexity times ~2.5 for a head mesh), not with F x pixels.
    """
    height, width = _image_hw(image_size)
    faces_t = _faces_tensor(faces, verts.shape[1], verts.device)
    if verts.ndim != 3 or verts.shape[-1] != 3:
        raise ValueError(f"verts must be (N, V, 3), got {tuple(verts.shape)}")
    if not torch.isfinite(verts).all():
        raise ValueError("verts contain NaN or infinite values")
    if max_pairs_per_chunk < 1:
        raise ValueError("max_pairs_per_chunk must be >= 1")
    screen, depth_offset = _to_screen(verts.float(), height, width)
    chosen = _choose_backend(backend)
    if chosen == "pytorch3d":
        pix_to_face, bary, depth = _rasterize_pytorch3d(screen, faces_t, height, width)
    else:
        pix_to_face, bary, depth = _rasterize_torch(
            screen, faces_t, height, width, max_pairs_per_chunk
        )
    covered = pix_to_face >= 0
    z = torch.where(covered, depth_offset[:, None, None] - depth, float("-inf"))
    return Fragments(pix_to_face, bary, z)


def interpolate_face_attributes(
    fragments: Fragments, face_attributes: torch.Tensor
) -> torch.Tensor:
    """Barycentric interpolation of per-corner attributes: (N or 1, F, 3, D) -> (N, H, W, D).

    Pixels no face covers get 0.
    """
    out = face_attributes.new_zeros(fragments.pix_to_face.numel(), face_attributes.shape[-1])
    for pixels in _covered_pixel_blocks(fragments):
        out.index_copy_(0, pixels.flat_index, _interpolate(pixels, face_attributes))
    return out.view(*fragments.pix_to_face.shape, face_attributes.shape[-1])


class _CoveredPixels(NamedTuple):
    """Covered pixels of some fragments, flattened (M of them, in row-major order)."""

    flat_index: torch.Tensor  # (M,) into the flattened (N, H, W)
    item: torch.Tensor  # (M,) which mesh
    face: torch.Tensor  # (M,) face within that mesh
    bary: torch.Tensor  # (M, 3)


def _covered_pixel_blocks(fragments: Fragments) -> Iterator[_CoveredPixels]:
    """The covered pixels, in blocks of at most _PIXELS_PER_BLOCK image pixels."""
    _, height, width = fragments.pix_to_face.shape
    faces = fragments.pix_to_face.reshape(-1)
    bary = fragments.bary_coords.reshape(-1, 3)
    for start in range(0, faces.numel(), _PIXELS_PER_BLOCK):
        index = torch.nonzero(faces[start : start + _PIXELS_PER_BLOCK] >= 0).squeeze(1) + start
        yield _CoveredPixels(
            flat_index=index,
            item=torch.div(index, height * width, rounding_mode="floor"),
            face=faces.index_select(0, index),
            bary=bary.index_select(0, index),
        )


def _interpolate(pixels: _CoveredPixels, face_attributes: torch.Tensor) -> torch.Tensor:
    """(N or 1, F, 3, D) corner values -> (M, D) at the covered pixels."""
    if face_attributes.ndim != 4 or face_attributes.shape[2] != 3:
        raise ValueError(f"face_attributes must be (N, F, 3, D), got {face_attributes.shape}")
    n_sets, n_faces, _, depth = face_attributes.shape
    if n_sets == 1:
        rows = pixels.face
    elif pixels.item.numel() and int(pixels.item.max()) >= n_sets:
        raise ValueError(f"face_attributes hold {n_sets} items, fewer than the fragments")
    else:
        rows = pixels.item * n_faces + pixels.face
    corners = face_attributes.reshape(n_sets * n_faces, 3 * depth).index_select(0, rows)
    weighted = corners.view(-1, 3, depth) * pixels.bary.to(corners.dtype)[:, :, None]
    return weighted.sum(dim=1)


def _image_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int | np.integer):
        height = width = int(image_size)
    else:
        if len(image_size) != 2:
            raise ValueError(f"image_size must be S or (H, W), got {image_size!r}")
        height, width = int(image_size[0]), int(image_size[1])
    if height < 1 or width < 1:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return height, width


def _faces_tensor(faces: ArrayLike, n_vertices: int, device: torch.device) -> torch.Tensor:
    faces_t = torch.as_tensor(faces, device=device).long()
    if faces_t.ndim != 2 or faces_t.shape[1] != 3:
        raise ValueError(f"faces must be (F, 3), got {tuple(faces_t.shape)}")
    if faces_t.numel() and (faces_t.min() < 0 or faces_t.max() >= n_vertices):
        raise ValueError(f"faces index vertices outside 0..{n_vertices - 1}")
    if faces_t.shape[0] >= 2**31:
        raise ValueError("at most 2**31 - 1 faces per mesh")
    return faces_t


def _choose_backend(backend: str) -> str:
    if backend == "torch":
        return "torch"
    if backend == "pytorch3d":
        return "pytorch3d"
    if backend == "auto":
        return "pytorch3d" if pytorch3d_available() else "torch"
    raise ValueError(f"backend must be 'auto', 'torch' or 'pytorch3d', not {backend!r}")


def _to_screen(
    projected: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected (x right, y up, z near) -> pytorch3d screen (x left, y up, depth >= 1).

    A non-square image stretches the longer axis as DECA does, so x in [-1, 1] still spans
    the width and y in [-1, 1] the height under pytorch3d's non-square NDC.
    """
    x, y, z = projected.unbind(-1)
    if height > width:
        y = y * (height / width)
    elif width > height:
        x = x * (width / height)
    depth_offset = z.amax(dim=1) + 1 if z.shape[1] else z.new_ones(z.shape[0])
    screen = torch.stack([-x, y, depth_offset[:, None] - z], dim=-1)
    return screen, depth_offset


def _ndc_half_range(size: int, other: int) -> float:
    """Half of pytorch3d's NDC range along an axis of ``size`` pixels (other axis ``other``)."""
    return size / other if size > other else 1.0


def _pixel_centres(size: int, other: int, device: torch.device) -> torch.Tensor:
    """NDC of pixel centres 0..size-1 along one screen axis, computed as pytorch3d does."""
    half = _ndc_half_range(size, other)
    index = torch.arange(size, device=device, dtype=torch.float32)
    return -half + (2 * half * index + half) / size


def _index_range(
    low: torch.Tensor, high: torch.Tensor, size: int, other: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last pixel index whose centre lies within [low, high] NDC (may be empty)."""
    half = _ndc_half_range(size, other)

    def to_index(ndc: torch.Tensor) -> torch.Tensor:
        return ((ndc + half) * size - half) / (2 * half)

    first = torch.ceil(to_index(low) - _BBOX_MARGIN_PX).clamp(0, size)
    last = torch.floor(to_index(high) + _BBOX_MARGIN_PX).clamp(-1, size - 1)
    return first.long(), last.long()


def _edge(
    px: torch.Tensor,
    py: torch.Tensor,
    ax: torch.Tensor,
    ay: torch.Tensor,
    bx: torch.Tensor,
    by: torch.Tensor,
) -> torch.Tensor:
    """Twice the signed area of (p, a, b); the same expression as pytorch3d's EdgeFunction."""
    return (px - ax) * (by - ay) - (py - ay) * (bx - ax)


def _barycentric(
    px: torch.Tensor, py: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, area: torch.Tensor
) -> torch.Tensor:
    """Barycentrics (P, 3) of points (P,) in triangles with corner coordinates (P, 3)."""
    denominator = area + _AREA_EPSILON
    x0, x1, x2 = fx.unbind(-1)
    y0, y1, y2 = fy.unbind(-1)
    w0 = _edge(px, py, x1, y1, x2, y2) / denominator
    w1 = _edge(px, py, x2, y2, x0, y0) / denominator
    w2 = _edge(px, py, x0, y0, x1, y1) / denominator
    return torch.stack([w0, w1, w2], dim=-1)


def _depth_key(depth: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
    """int64 keys ordered by (depth, face): the float's bits made order-preserving."""
    bits = depth.float().contiguous().view(torch.int32)
    # Negative floats order backwards as integers: flip their magnitude bits.
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).long()
    return ordered * (1 << 32) + face


def _rasterize_torch(
    screen: torch.Tensor, faces: torch.Tensor, height: int, width: int, max_pairs: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pure-torch rasterizer in pytorch3d's screen frame (see :func:`rasterize`).

    Returns pix_to_face int64 (N, H, W) (-1 empty), bary float32 (N, H, W, 3), depth float32
    (N, H, W) (screen depth, smaller = nearer; 0 where empty).
    """
    device = screen.device
    n_items, n_faces = screen.shape[0], faces.shape[0]
    pixels_per_image = height * width
    corners = screen[:, faces].reshape(n_items * n_faces, 3, 3)  # (N * F, corner, xyz)
    fx, fy, fdepth = (coordinate.contiguous() for coordinate in corners.unbind(-1))
    x0, x1, x2 = fx.unbind(-1)
    y0, y1, y2 = fy.unbind(-1)
    z0, z1, z2 = fdepth.unbind(-1)
    area = _edge(x2, y2, x0, y0, x1, y1)
    denominator = area + _AREA_EPSILON
    sign = torch.where(denominator < 0, -1.0, 1.0)
    # Per face, for each barycentric w_k: the start (a) and sign-adjusted direction (b - a)
    # of the edge opposite corner k, so that "w_k > 0" becomes "edge value > 0" with no
    # division and bit-identical rounding (negating operands is exact).
    edge_table = torch.stack(
        [x1, y1, (x2 - x1) * sign, (y2 - y1) * sign,
         x2, y2, (x0 - x2) * sign, (y0 - y2) * sign,
         x0, y0, (x1 - x0) * sign, (y1 - y0) * sign],
        dim=-1,
    )  # fmt: skip
    depth_table = torch.stack([denominator.abs(), z0, z1, z2], dim=-1)

    # Work units: a face's pixel bounding box, or a band of its rows when the box alone holds
    # more pairs than a chunk may; chunks are runs of whole units.
    first_x, last_x = _index_range(fx.amin(-1), fx.amax(-1), width, height)
    first_y, last_y = _index_range(fy.amin(-1), fy.amax(-1), height, width)
    columns = (last_x - first_x + 1).clamp(min=0)
    rows = (last_y - first_y + 1).clamp(min=0) * (area.abs() > _AREA_EPSILON)  # pytorch3d
    budget = min(max(max_pairs, width), 1 << 22)  # float32 indices below stay exact
    rows_per_unit = budget // columns.clamp(min=1)
    units_per_face = torch.where(columns > 0, (rows + rows_per_unit - 1) // rows_per_unit, 0)
    unit_face = torch.repeat_interleave(
        torch.arange(n_items * n_faces, device=device), units_per_face
    )
    unit_in_face = torch.arange(unit_face.numel(), device=device) - (
        units_per_face.cumsum(0) - units_per_face
    ).index_select(0, unit_face)
    unit_rows_per_unit = rows_per_unit.index_select(0, unit_face)
    unit_first_y = first_y.index_select(0, unit_face) + unit_in_face * unit_rows_per_unit
    unit_rows = torch.minimum(
        unit_rows_per_unit, last_y.index_select(0, unit_face) + 1 - unit_first_y
    )
    unit_columns = columns.index_select(0, unit_face)
    unit_pairs = unit_rows * unit_columns
    unit_ends = unit_pairs.cumsum(0)
    total = int(unit_ends[-1]) if unit_ends.numel() else 0
    cuts = torch.searchsorted(
        unit_ends, torch.arange(budget, max(total, budget), budget, device=device), right=True
    )
    bounds = [0, *torch.unique_consecutive(cuts).tolist(), unit_face.numel()]
    # Per unit, one row per quantity (rows keep the per-pair arithmetic on contiguous
    # memory, ~10x faster than strided columns): the 12 edge values, then its columns,
    # first x index and first y index as float32 (exact: below 2**24).
    unit_table = torch.cat(
        [
            edge_table.index_select(0, unit_face).T,
            torch.stack(
                [unit_columns.float(), first_x.index_select(0, unit_face).float(),
                 unit_first_y.float()]
            ),
        ]
    ).contiguous()  # fmt: skip

    best = torch.full((n_items * pixels_per_image,), _EMPTY_KEY, dtype=torch.int64, device=device)
    x_half, y_half = _ndc_half_range(width, height), _ndc_half_range(height, width)
    for first_unit, end_unit in itertools.pairwise(bounds):
        if first_unit == end_unit:
            continue
        pairs = unit_pairs[first_unit:end_unit]
        n_pairs = int(pairs.sum())
        unit_of_pair = torch.repeat_interleave(
            torch.arange(end_unit - first_unit, device=device), pairs, output_size=n_pairs
        )  # within the chunk
        t = unit_table[:, first_unit:end_unit].index_select(1, unit_of_pair).unbind(0)
        # Offsets within the chunk (< 2**23), so float32 pair arithmetic stays exact.
        unit_first_pair = (pairs.cumsum(0) - pairs).float().index_select(0, unit_of_pair)
        local = torch.arange(n_pairs, device=device, dtype=torch.float32) - unit_first_pair
        row_in_unit = torch.floor(local / t[12])
        x_index = t[13] + (local - row_in_unit * t[12])
        y_index = t[14] + row_in_unit
        # Pixel centres exactly as _pixel_centres computes them.
        px = -x_half + (2 * x_half * x_index + x_half) / width
        py = -y_half + (2 * y_half * y_index + y_half) / height
        e0 = (px - t[0]) * t[3] - (py - t[1]) * t[2]
        e1 = (px - t[4]) * t[7] - (py - t[5]) * t[6]
        e2 = (px - t[8]) * t[11] - (py - t[9]) * t[10]
        keep = torch.nonzero((e0 > 0) & (e1 > 0) & (e2 > 0)).squeeze(1)
        face = unit_face.index_select(0, first_unit + unit_of_pair.index_select(0, keep))
        d = depth_table.index_select(0, face)
        depth = (
            e0.index_select(0, keep) / d[:, 0] * d[:, 1]
            + e1.index_select(0, keep) / d[:, 0] * d[:, 2]
            + e2.index_select(0, keep) / d[:, 0] * d[:, 3]
        )
        item = torch.div(face, n_faces, rounding_mode="floor")
        column = width - 1 - x_index.index_select(0, keep).long()
        row = height - 1 - y_index.index_select(0, keep).long()
        pixel = item * pixels_per_image + row * width + column
        best.scatter_reduce_(0, pixel, _depth_key(depth, face - item * n_faces), reduce="amin")

    pix_to_face = torch.full_like(best, -1)
    bary_out = screen.new_zeros((n_items * pixels_per_image, 3))
    depth_out = screen.new_zeros(n_items * pixels_per_image)
    centres_x = _pixel_centres(width, height, device)  # indexed by x_index = W - 1 - column
    centres_y = _pixel_centres(height, width, device)  # indexed by y_index = H - 1 - row
    for block_start in range(0, best.numel(), _PIXELS_PER_BLOCK):
        block = best[block_start : block_start + _PIXELS_PER_BLOCK]
        pixel = torch.nonzero(block != _EMPTY_KEY).squeeze(1)
        face_in_mesh = block.index_select(0, pixel) & _LOW_32_BITS
        pixel += block_start
        item = torch.div(pixel, pixels_per_image, rounding_mode="floor")
        within = pixel - item * pixels_per_image
        row = torch.div(within, width, rounding_mode="floor")
        column = within - row * width
        face = item * n_faces + face_in_mesh
        bary = _barycentric(
            centres_x[width - 1 - column],
            centres_y[height - 1 - row],
            fx.index_select(0, face),
            fy.index_select(0, face),
            area.index_select(0, face),
        )
        z = fdepth.index_select(0, face)
        pix_to_face[pixel] = face_in_mesh
        bary_out[pixel] = bary
        depth_out[pixel] = bary[:, 0] * z[:, 0] + bary[:, 1] * z[:, 1] + bary[:, 2] * z[:, 2]
    return (
        pix_to_face.view(n_items, height, width),
        bary_out.view(n_items, height, width, 3),
        depth_out.view(n_items, height, width),
    )


def _rasterize_pytorch3d(
    screen: torch.Tensor, faces: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same contract as :func:`_rasterize_torch`, through pytorch3d's rasterizer."""
    try:
        from pytorch3d.renderer.mesh import rasterize_meshes
        from pytorch3d.structures import Meshes
    except (ImportError, OSError) as error:
        raise ImportError(
            f"backend='pytorch3d' was requested but pytorch3d does not import ({error}); "
            "install a pytorch3d build matching this torch, or use backend='torch'"
        ) from error
    n_items, n_faces = screen.shape[0], faces.shape[0]
    meshes = Meshes(verts=screen, faces=faces[None].expand(n_items, -1, -1))
    pix_to_face, zbuf, bary, _ = rasterize_meshes(
        meshes,
        image_size=(height, width),
        blur_radius=0.0,
        faces_per_pixel=1,
        bin_size=None,
        max_faces_per_bin=None,
        perspective_correct=False,
        clip_barycentric_coords=False,
        cull_backfaces=False,
    )
    packed = pix_to_face[..., 0]
    covered = packed >= 0
    # pytorch3d numbers faces across the batch ("packed"); ours count within each mesh.
    first_face = (torch.arange(n_items, device=screen.device) * n_faces)[:, None, None]
    pix_to_face_out = torch.where(covered, packed - first_face, -1)
    bary_out = torch.where(covered[..., None], bary[..., 0, :], 0.0).float()
    return pix_to_face_out, bary_out, zbuf[..., 0].float()


# --------------------------------------------------------------------------- shading


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit vertex normals (N, V, 3): area-weighted sums of adjacent face normals (as DECA).

    Face normals follow the right-hand rule ``(v1 - v0) x (v2 - v0)``: a triangle whose
    corners run counter-clockwise as seen from the camera faces the camera (+z).
    """
    corners = verts[:, faces]  # (N, F, 3, 3)
    # The cross product's length is twice the face area: larger faces weigh more.
    face_normals = torch.linalg.cross(
        corners[:, :, 1] - corners[:, :, 0], corners[:, :, 2] - corners[:, :, 0], dim=-1
    )
    normals = torch.zeros_like(verts)
    for corner in range(3):
        normals.index_add_(1, faces[:, corner], face_normals)
    return torch.nn.functional.normalize(normals, dim=-1, eps=1e-6)


def sh_shading(normals: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
    """Spherical-harmonics irradiance (N, ..., 3) for normals (N, ..., 3), light (N, 9, 3).

    ``light[n, k, c]`` is the coefficient of SH basis function k for colour channel c, in
    DECA/EMOCA's order and scale; the shading is ``sum_k light[n, k, c] * factor_k *
    basis_k(normal)`` with the basis ``[1, x, y, z, xy, xz, yz, x^2 - y^2, 3 z^2 - 1]`` in
    model axes. Normals are used as given (DECA does not renormalise interpolated normals).
    A light of ``[sqrt(4 pi), 0, ...]`` per channel shades every normal with 1.
    """
    basis = _sh_basis(normals)
    flat = basis.reshape(basis.shape[0], -1, 9)
    return torch.bmm(flat, light.to(basis.dtype)).reshape(*normals.shape)


def _sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """(..., 3) normals -> (..., 9) DECA's SH basis functions times their factors."""
    x, y, z = normals.unbind(-1)
    basis = torch.stack(
        [torch.ones_like(x), x, y, z, x * y, x * z, y * z, x * x - y * y, 3 * z * z - 1], dim=-1
    )
    return basis * basis.new_tensor(_SH_FACTORS)


class Renders(NamedTuple):
    """The RenderingNode's three images per frame, uint8 on the input's device.

    - ``render_normal`` (N, H, W, 3): vertex normals interpolated across faces, RGB = model
      axes (x right, y up, z towards the camera), encoded by ``normal_encoding``; 0 where
      empty.
    - ``render_uv`` (N, H, W, 3): ``(u, 1 - v, 0.5) * SH shading * alpha``, x 255.
    - ``render_mask`` (N, H, W): 255 where the mesh covers the pixel centre, else 0.
    """

    render_normal: torch.Tensor
    render_uv: torch.Tensor
    render_mask: torch.Tensor


def render(
    verts: ArrayLike,
    cam: ArrayLike,
    light: ArrayLike,
    template: MeshTemplate,
    image_size: int | Sequence[int],
    uv_size: int = 256,
    *,
    backend: Backend = "auto",
    normal_encoding: NormalEncoding = "x255",
    max_pairs_per_chunk: int = 1 << 20,
) -> Renders:
    """Render N FLAME meshes as the original RenderingNode (DECA's renderer) did.

    - ``verts`` (N, V, 3) model-space vertices (FLAME output), ``cam`` (N, 3)
      ``[scale, tx, ty]``, ``light`` (N, 9, 3) (or (N, 27)) SH coefficients, all float
      (numpy or torch; computed in float32 on the device of ``verts``).
    - ``template``: the head template's faces and UV layout (:func:`load_obj_template`); its
      V must match ``verts``.
    - ``image_size``: ``S`` or ``(H, W)`` pixels. ``uv_size``: side of the UV texture whose
      texels the UV colours stand for: ``u`` and ``v`` are clamped to
      ``[0.5 / uv_size, 1 - 0.5 / uv_size]``, exactly what bilinearly sampling a texture
      holding each texel centre's ``(u, 1 - v)`` gives (as DECA samples its uv_size
      texture, with edge texels extended), so values away from the UV border are exact.
    - ``normal_encoding``: ``"x255"`` (the original: ``normal * 255`` clipped to [0, 255],
      so negative components become 0; a normal facing the camera is (0, 0, 255)) or
      ``"biased"`` (``(normal + 1) / 2 * 255``, keeps the sign; facing the camera is
      (128, 128, 255)).
    - ``backend``, ``max_pairs_per_chunk``: see :func:`rasterize`.

    Floats become uint8 as ``round(clip(value, 0, 1) * 255)``. Returns :class:`Renders`.
    """
    if uv_size < 1:
        raise ValueError(f"uv_size must be positive, got {uv_size}")
    if normal_encoding not in ("x255", "biased"):
        raise ValueError(f"normal_encoding must be 'x255' or 'biased', not {normal_encoding!r}")
    verts_t = torch.as_tensor(verts).float()
    device = verts_t.device
    cam_t = torch.as_tensor(cam, device=device).float()
    light_t = torch.as_tensor(light, device=device).float()
    if verts_t.ndim != 3 or verts_t.shape[-1] != 3:
        raise ValueError(f"verts must be (N, V, 3), got {tuple(verts_t.shape)}")
    n_items = verts_t.shape[0]
    if light_t.shape == (n_items, 27):
        light_t = light_t.reshape(n_items, 9, 3)
    if light_t.shape != (n_items, 9, 3):
        raise ValueError(f"light must be (N, 9, 3) SH coefficients, got {tuple(light_t.shape)}")
    if verts_t.shape[1] != len(template.vertices):
        raise ValueError(
            f"verts have {verts_t.shape[1]} vertices but the head template has "
            f"{len(template.vertices)}"
        )
    faces = torch.as_tensor(template.faces, device=device).long()
    projected = orthographic_project(verts_t, cam_t)
    fragments = rasterize(
        projected,
        faces,
        image_size,
        backend=backend,
        max_pairs_per_chunk=max_pairs_per_chunk,
    )
    # Shade only the covered pixels (about half of a face crop), block by block to bound
    # memory, and write them into the images.
    corner_normals = vertex_normals(verts_t, faces)[:, faces]  # (N, F, 3, 3)
    uvs = torch.as_tensor(template.uvs, device=device).float()
    uv_corners = uvs[torch.as_tensor(template.uv_faces, device=device).long()]  # (F, 3, 2)
    texel = 0.5 / uv_size
    image_shape = fragments.pix_to_face.shape
    render_normal = torch.zeros((*image_shape, 3), dtype=torch.uint8, device=device)
    render_uv = torch.zeros_like(render_normal)
    for pixels in _covered_pixel_blocks(fragments):
        normals = _interpolate(pixels, corner_normals)  # (M, 3)
        basis = _sh_basis(normals)
        counts = torch.bincount(pixels.item, minlength=n_items).tolist()
        shading = torch.cat([part @ light_t[n] for n, part in enumerate(basis.split(counts))])
        # Clamp after interpolating, as sampling a uv_size texture would.
        u, v = _interpolate(pixels, uv_corners[None]).clamp(texel, 1 - texel).unbind(-1)
        uv_colour = torch.stack([u, 1 - v, torch.full_like(u, 0.5)], dim=-1)
        encoded = normals if normal_encoding == "x255" else (normals + 1) / 2
        render_normal.view(-1, 3).index_copy_(0, pixels.flat_index, _to_uint8(encoded))
        render_uv.view(-1, 3).index_copy_(0, pixels.flat_index, _to_uint8(uv_colour * shading))
    return Renders(
        render_normal=render_normal,
        render_uv=render_uv,
        render_mask=fragments.mask.to(torch.uint8) * 255,
    )


def _to_uint8(image: torch.Tensor) -> torch.Tensor:
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)
