"""The pure-torch triangle rasterizer: the fallback when pytorch3d does not import.

:func:`dpl_assets.face3d.rasterizer.rasterize` calls :func:`rasterize_torch` for
``backend="torch"`` (or ``"auto"`` without pytorch3d). It works in pytorch3d's screen frame
(+x left, +y up, depth >= 1, smaller = nearer) with pytorch3d's own arithmetic for pixel
centres (``rasterize_meshes`` in ``pytorch3d/csrc/rasterize_meshes``: ``PixToNonSquareNdc``,
``EdgeFunctionForward``, ``BarycentricCoordsForward``, ``kEpsilon``), so both backends agree
to float rounding.

How it works: every face's pixel bounding box (a huge face: bands of its rows) is a *work
unit*; runs of units (*chunks*, at most about ``max_pairs`` pixels each) are expanded into
(face, pixel-centre) pairs, batched over items and faces. Pairs whose centre is inside the
face get a 64-bit key (depth in the high bits, face index in the low bits) and a
``scatter_reduce(amin)`` per pixel keeps the nearest face, ties to the lowest index. The
winners' barycentrics are recomputed once per covered pixel. Cost grows with the summed
bounding-box areas (about the covered area times depth complexity times ~2.5 for a head
mesh), not with F x pixels; memory with ``max_pairs`` (~150 bytes a pair).
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import torch

PIXELS_PER_BLOCK = 1 << 20
"""Per-pixel work after rasterizing goes in blocks of this many image pixels (bounds memory)."""
# pytorch3d's kEpsilon: faces with |2 x area| below it (NDC units) are skipped, and it is
# added to the area before dividing, so our barycentric coordinates equal theirs.
_AREA_EPSILON = 1e-8
# Bounding boxes are widened by this many pixels so that float rounding in the NDC -> index
# mapping never skips a pixel the exact inside test would accept.
_BBOX_MARGIN_PX = 1e-3
_EMPTY_KEY = torch.iinfo(torch.int64).max
_LOW_32_BITS = 0xFFFFFFFF
# Pixel indices are carried as float32 within a chunk: they stay exact below 2**24.
_MAX_PAIRS_PER_UNIT = 1 << 22


class _FaceTables(NamedTuple):
    """Per face of every item (N * F of them, item-major), in screen coordinates."""

    corner_x: torch.Tensor  # (N * F, 3) x of corners 0, 1, 2
    corner_y: torch.Tensor  # (N * F, 3)
    corner_depth: torch.Tensor  # (N * F, 3)
    area: torch.Tensor  # (N * F,) twice the signed area, pytorch3d's EdgeFunction
    # (N * F, 12): for the edge opposite each corner k, its start (x, y) and its direction
    # (dx, dy) times the area's sign, so "barycentric w_k > 0" is "edge value > 0" with no
    # division and bit-identical rounding (negating operands is exact).
    edges: torch.Tensor
    # (N * F, 4): |area + eps| and the corner depths, to interpolate depth from edge values.
    depth_terms: torch.Tensor


class _UnitRows(NamedTuple):
    """Rows of the per-unit table (one row per quantity: contiguous per-pair arithmetic is
    ~10x faster than strided columns), taken for every pair of a chunk."""

    edge0_x: torch.Tensor
    edge0_y: torch.Tensor
    edge0_dx: torch.Tensor
    edge0_dy: torch.Tensor
    edge1_x: torch.Tensor
    edge1_y: torch.Tensor
    edge1_dx: torch.Tensor
    edge1_dy: torch.Tensor
    edge2_x: torch.Tensor
    edge2_y: torch.Tensor
    edge2_dx: torch.Tensor
    edge2_dy: torch.Tensor
    columns: torch.Tensor  # pixel columns of the unit's box
    first_x: torch.Tensor  # first pixel x index (screen x, from the right image edge)
    first_y: torch.Tensor  # first pixel y index (screen y, from the bottom image edge)


class _WorkUnits(NamedTuple):
    """Face bounding boxes (or bands of their rows) to test pixel by pixel."""

    face: torch.Tensor  # (U,) face (item-major index) of each unit
    pairs: torch.Tensor  # (U,) pixels in each unit
    rows: torch.Tensor  # (15, U) float32 table, see _UnitRows
    chunk_bounds: list[int]  # unit index where each chunk starts, then the unit count


def rasterize_torch(
    screen: torch.Tensor, faces: torch.Tensor, height: int, width: int, max_pairs: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rasterize meshes already in pytorch3d's screen frame (see the module docstring).

    ``screen`` float32 (N, V, 3) (x left, y up in NDC, depth >= 1), ``faces`` int64 (F, 3),
    shared by the N meshes. ``max_pairs`` bounds how many (face, pixel) pairs are tested at
    once (about twice that at most).

    Returns pix_to_face int64 (N, H, W) (-1 empty), bary float32 (N, H, W, 3), depth float32
    (N, H, W) (screen depth, smaller = nearer; 0 where empty).
    """
    n_items, n_faces = screen.shape[0], faces.shape[0]
    tables = _face_tables(screen, faces)
    units = _work_units(tables, height, width, max_pairs)
    best = _nearest_face_keys(tables, units, n_items, n_faces, height, width)
    return _winning_fragments(best, tables, n_items, n_faces, height, width)


def _face_tables(screen: torch.Tensor, faces: torch.Tensor) -> _FaceTables:
    n_items, n_faces = screen.shape[0], faces.shape[0]
    corners = screen[:, faces].reshape(n_items * n_faces, 3, 3)  # (N * F, corner, xyz)
    corner_x, corner_y, corner_depth = (c.contiguous() for c in corners.unbind(-1))
    x0, x1, x2 = corner_x.unbind(-1)
    y0, y1, y2 = corner_y.unbind(-1)
    z0, z1, z2 = corner_depth.unbind(-1)
    area = _edge(x2, y2, x0, y0, x1, y1)
    denominator = area + _AREA_EPSILON
    sign = torch.where(denominator < 0, -1.0, 1.0)
    edges = torch.stack(
        [x1, y1, (x2 - x1) * sign, (y2 - y1) * sign,
         x2, y2, (x0 - x2) * sign, (y0 - y2) * sign,
         x0, y0, (x1 - x0) * sign, (y1 - y0) * sign],
        dim=-1,
    )  # fmt: skip
    depth_terms = torch.stack([denominator.abs(), z0, z1, z2], dim=-1)
    return _FaceTables(corner_x, corner_y, corner_depth, area, edges, depth_terms)


def _work_units(tables: _FaceTables, height: int, width: int, max_pairs: int) -> _WorkUnits:
    """A face's pixel bounding box is one unit, or a band of its rows when the box alone
    holds more pairs than a chunk may; chunks are runs of whole units."""
    device = tables.area.device
    first_x, last_x = _index_range(
        tables.corner_x.amin(-1), tables.corner_x.amax(-1), width, height
    )
    first_y, last_y = _index_range(
        tables.corner_y.amin(-1), tables.corner_y.amax(-1), height, width
    )
    columns = (last_x - first_x + 1).clamp(min=0)
    # Degenerate faces get no rows, as pytorch3d skips them.
    rows = (last_y - first_y + 1).clamp(min=0) * (tables.area.abs() > _AREA_EPSILON)
    budget = min(max(max_pairs, width), _MAX_PAIRS_PER_UNIT)
    rows_per_unit = budget // columns.clamp(min=1)
    units_per_face = torch.where(columns > 0, (rows + rows_per_unit - 1) // rows_per_unit, 0)
    unit_face = torch.repeat_interleave(
        torch.arange(tables.area.numel(), device=device), units_per_face
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
    chunk_bounds = [0, *torch.unique_consecutive(cuts).tolist(), unit_face.numel()]
    unit_rows_table = torch.cat(
        [
            tables.edges.index_select(0, unit_face).T,
            torch.stack(
                [unit_columns.float(), first_x.index_select(0, unit_face).float(),
                 unit_first_y.float()]
            ),
        ]
    ).contiguous()  # fmt: skip
    return _WorkUnits(unit_face, unit_pairs, unit_rows_table, chunk_bounds)


def _nearest_face_keys(
    tables: _FaceTables, units: _WorkUnits, n_items: int, n_faces: int, height: int, width: int
) -> torch.Tensor:
    """Per image pixel (N * H * W,), the smallest (depth, face) key of the faces covering
    its centre (see :func:`_depth_key`), ``_EMPTY_KEY`` where none does."""
    device = tables.area.device
    pixels_per_image = height * width
    best = torch.full((n_items * pixels_per_image,), _EMPTY_KEY, dtype=torch.int64, device=device)
    x_half, y_half = _ndc_half_range(width, height), _ndc_half_range(height, width)
    for first_unit, end_unit in itertools.pairwise(units.chunk_bounds):
        if first_unit == end_unit:
            continue
        pairs = units.pairs[first_unit:end_unit]
        n_pairs = int(pairs.sum())
        unit_of_pair = torch.repeat_interleave(
            torch.arange(end_unit - first_unit, device=device), pairs, output_size=n_pairs
        )  # within the chunk
        pair = _UnitRows(*units.rows[:, first_unit:end_unit].index_select(1, unit_of_pair))
        # Offsets within the chunk (< 2**23), so float32 pair arithmetic stays exact.
        unit_first_pair = (pairs.cumsum(0) - pairs).float().index_select(0, unit_of_pair)
        local = torch.arange(n_pairs, device=device, dtype=torch.float32) - unit_first_pair
        row_in_unit = torch.floor(local / pair.columns)
        x_index = pair.first_x + (local - row_in_unit * pair.columns)
        y_index = pair.first_y + row_in_unit
        # Pixel centres exactly as _pixel_centres computes them.
        px = -x_half + (2 * x_half * x_index + x_half) / width
        py = -y_half + (2 * y_half * y_index + y_half) / height
        e0 = _edge_value(px, py, pair.edge0_x, pair.edge0_y, pair.edge0_dx, pair.edge0_dy)
        e1 = _edge_value(px, py, pair.edge1_x, pair.edge1_y, pair.edge1_dx, pair.edge1_dy)
        e2 = _edge_value(px, py, pair.edge2_x, pair.edge2_y, pair.edge2_dx, pair.edge2_dy)
        keep = torch.nonzero((e0 > 0) & (e1 > 0) & (e2 > 0)).squeeze(1)
        face = units.face.index_select(0, first_unit + unit_of_pair.index_select(0, keep))
        area, z0, z1, z2 = tables.depth_terms.index_select(0, face).unbind(-1)
        depth = (
            e0.index_select(0, keep) / area * z0
            + e1.index_select(0, keep) / area * z1
            + e2.index_select(0, keep) / area * z2
        )
        item = torch.div(face, n_faces, rounding_mode="floor")
        column = width - 1 - x_index.index_select(0, keep).long()
        row = height - 1 - y_index.index_select(0, keep).long()
        pixel = item * pixels_per_image + row * width + column
        best.scatter_reduce_(0, pixel, _depth_key(depth, face - item * n_faces), reduce="amin")
    return best


def _winning_fragments(
    best: torch.Tensor, tables: _FaceTables, n_items: int, n_faces: int, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decode the per-pixel keys into face index, barycentrics and depth of each winner."""
    device = best.device
    pixels_per_image = height * width
    pix_to_face = torch.full_like(best, -1)
    bary_out = tables.area.new_zeros((n_items * pixels_per_image, 3))
    depth_out = tables.area.new_zeros(n_items * pixels_per_image)
    centres_x = _pixel_centres(width, height, device)  # indexed by x_index = W - 1 - column
    centres_y = _pixel_centres(height, width, device)  # indexed by y_index = H - 1 - row
    for block_start in range(0, best.numel(), PIXELS_PER_BLOCK):
        block = best[block_start : block_start + PIXELS_PER_BLOCK]
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
            tables.corner_x.index_select(0, face),
            tables.corner_y.index_select(0, face),
            tables.area.index_select(0, face),
        )
        z = tables.corner_depth.index_select(0, face)
        pix_to_face[pixel] = face_in_mesh
        bary_out[pixel] = bary
        depth_out[pixel] = bary[:, 0] * z[:, 0] + bary[:, 1] * z[:, 1] + bary[:, 2] * z[:, 2]
    return (
        pix_to_face.view(n_items, height, width),
        bary_out.view(n_items, height, width, 3),
        depth_out.view(n_items, height, width),
    )


# --------------------------------------------------------------------------- pytorch3d arithmetic


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


def _edge_value(
    px: torch.Tensor,
    py: torch.Tensor,
    start_x: torch.Tensor,
    start_y: torch.Tensor,
    dx: torch.Tensor,
    dy: torch.Tensor,
) -> torch.Tensor:
    """:func:`_edge` with the edge's direction precomputed (see ``_FaceTables.edges``)."""
    return (px - start_x) * dy - (py - start_y) * dx


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
