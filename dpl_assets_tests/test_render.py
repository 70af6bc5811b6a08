"""Mesh rendering against analytic answers: coverage, depth order, normals, UVs, SH shading.

Expected values come from geometry computed here in float64 (pixel centres tested against
polygon edges, affine UV maps solved directly), never from the renderer's own helpers. The
pytorch3d path is checked two ways: against real pytorch3d when it imports (not on this
machine), and always through a stand-in ``pytorch3d`` module whose ``rasterize_meshes`` is
an independent naive implementation of pytorch3d's documented conventions, so the adapter's
axis flips, packed face indices and non-square handling are exercised.
"""

import math
import sys
import types

import numpy as np
import pytest
import torch

from dpl_assets.face3d.camera import ndc_to_pixels, orthographic_project
from dpl_assets.face3d.obj import MeshTemplate, load_obj_template
from dpl_assets.face3d.rasterizer import Fragments, pytorch3d_available, rasterize
from dpl_assets.face3d.render import render
from dpl_assets.face3d.shading import sh_shading

# Offsets that keep pixel centres off every edge, so coverage has one right answer.
NUDGE = np.array([0.0123, 0.0071, 0.0])
SQUARE_FACES = np.array([[0, 1, 2], [0, 2, 3]])
SQUARE_UVS = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)
# A light whose SH shading is 1 for every normal (DECA's band-0 factor is 1 / sqrt(4 pi)).
UNIT_LIGHT = np.zeros((1, 9, 3), np.float32)
UNIT_LIGHT[:, 0] = math.sqrt(4 * math.pi)
IDENTITY_CAM = np.array([[1.0, 0.0, 0.0]], np.float32)


def square(half: float = 0.5, z: float = 0.0, centre=(0.0, 0.0)) -> np.ndarray:
    """Corners (4, 3) of an axis-aligned square, counter-clockwise seen from +z."""
    cx, cy = centre
    return np.array(
        [[cx - half, cy - half, z], [cx + half, cy - half, z], [cx + half, cy + half, z],
         [cx - half, cy + half, z]]
    )  # fmt: skip


def polygon_fan(sides: int, radius: float, centre) -> tuple[np.ndarray, np.ndarray]:
    """A regular polygon as a triangle fan around its centre: verts (sides + 1, 3), faces."""
    angles = 2 * np.pi * np.arange(sides) / sides + 0.1
    rim = np.stack([radius * np.cos(angles), radius * np.sin(angles), np.zeros(sides)], 1)
    verts = np.vstack([np.zeros(3), rim]) + np.array([centre[0], centre[1], 0.0])
    faces = np.array([[0, 1 + k, 1 + (k + 1) % sides] for k in range(sides)])
    return verts, faces


def pixel_centres(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """NDC (x right, y up) of every pixel centre, each (H, W), float64."""
    rows, columns = np.mgrid[0:height, 0:width]
    return (2 * columns + 1) / width - 1, 1 - (2 * rows + 1) / height


def inside_convex(polygon_xy: np.ndarray, height: int, width: int) -> np.ndarray:
    """bool (H, W): pixel centres strictly inside a counter-clockwise convex polygon."""
    x, y = pixel_centres(height, width)
    inside = np.ones((height, width), bool)
    for a, b in zip(polygon_xy, np.roll(polygon_xy, -1, axis=0), strict=True):
        inside &= (b[0] - a[0]) * (y - a[1]) - (b[1] - a[1]) * (x - a[0]) > 0
    return inside


def boundary_pixel_bound(polygon_xy: np.ndarray, height: int, width: int) -> int:
    """An upper bound on the pixels a polygon's boundary passes through: a segment spanning
    dx by dy pixels meets at most dx + dy + 2 of them."""
    pixels = polygon_xy * [width / 2, height / 2]
    steps = np.abs(np.diff(np.vstack([pixels, pixels[:1]]), axis=0))
    return int(np.ceil(steps.sum() + 2 * len(pixels)))


def fragments_of(verts: np.ndarray, faces: np.ndarray, size, **kwargs) -> Fragments:
    return rasterize(torch.tensor(verts, dtype=torch.float32)[None], faces, size, **kwargs)


def uv_template(verts: np.ndarray, faces=SQUARE_FACES, uvs=SQUARE_UVS, uv_faces=None):
    return MeshTemplate(
        verts.astype(np.float32), faces, uvs, faces if uv_faces is None else uv_faces
    )


def sphere(rings: int = 12, columns: int = 16, radius: float = 0.6) -> tuple[np.ndarray, ...]:
    """A closed UV sphere (outward counter-clockwise faces) with its lat-long UVs."""
    polar = np.linspace(0, np.pi, rings + 2)[1:-1]
    azimuth = 2 * np.pi * np.arange(columns) / columns
    p, a = np.meshgrid(polar, azimuth, indexing="ij")
    ring_verts = np.stack([np.sin(p) * np.cos(a), np.cos(p), np.sin(p) * np.sin(a)], -1)
    verts = radius * np.vstack([[0, 1, 0], ring_verts.reshape(-1, 3), [0, -1, 0]])
    bottom = len(verts) - 1
    faces = []
    for c in range(columns):
        n = (c + 1) % columns
        faces.append([0, 1 + n, 1 + c])
        for r in range(rings - 1):
            a0, a1 = 1 + r * columns + c, 1 + r * columns + n
            b0, b1 = a0 + columns, a1 + columns
            faces += [[a0, a1, b1], [a0, b1, b0]]
        last = 1 + (rings - 1) * columns
        faces.append([bottom, last + c, last + n])
    faces = np.array(faces)
    # Outward orientation check: the normal of each face points away from the centre.
    corners = verts[faces]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    flip = (normals * corners.mean(1)).sum(1) < 0
    faces[flip] = faces[flip][:, ::-1]
    uvs = np.stack([np.arctan2(verts[:, 2], verts[:, 0]) / (2 * np.pi) % 1,
                    np.arccos(np.clip(verts[:, 1] / radius, -1, 1)) / np.pi], 1)  # fmt: skip
    return verts.astype(np.float32), faces, uvs.astype(np.float32)


# --------------------------------------------------------------------------- coverage


@pytest.mark.parametrize("size", [32, 63, 128])
def test_square_mask_is_its_pixel_centres_and_area(size):
    corners = square(0.55) + NUDGE
    fragments = fragments_of(corners, SQUARE_FACES, size, backend="torch")
    expected = inside_convex(corners[:, :2], size, size)
    assert np.array_equal(fragments.mask[0].numpy(), expected)
    area_px = (1.1 * size / 2) ** 2
    bound = boundary_pixel_bound(corners[:, :2], size, size)
    assert abs(int(fragments.mask.sum()) - area_px) <= bound


@pytest.mark.parametrize("sides", [5, 12, 40])
def test_regular_polygon_mask_area_matches_analytic_area(sides):
    size, radius = 96, 0.7
    verts, faces = polygon_fan(sides, radius, centre=(0.031, -0.047))
    fragments = fragments_of(verts, faces, size, backend="torch")
    rim = verts[1:, :2]
    assert np.array_equal(fragments.mask[0].numpy(), inside_convex(rim, size, size))
    area_px = sides / 2 * radius**2 * math.sin(2 * math.pi / sides) * (size / 2) ** 2
    assert abs(int(fragments.mask.sum()) - area_px) <= boundary_pixel_bound(rim, size, size)


def test_pixel_centres_on_a_shared_edge_belong_to_neither_face():
    # pytorch3d's rule (blur_radius 0): strict inside. The diagonal of this square runs
    # from the bottom-left to the top-right corner exactly through the centres of the pixels
    # (row 4 + k, column 11 - k): those stay empty.
    fragments = fragments_of(square(0.5), SQUARE_FACES, 16, backend="torch")
    diagonal = fragments.mask[0].numpy()[np.arange(4, 12), np.arange(11, 3, -1)]
    assert not diagonal.any()
    assert int(fragments.mask.sum()) == 64 - 8


def test_non_square_image_spans_width_in_x_and_height_in_y():
    height, width = 20, 40
    corners = square(0.5) + NUDGE
    fragments = fragments_of(corners, SQUARE_FACES, (height, width), backend="torch")
    assert fragments.mask.shape == (1, height, width)
    assert np.array_equal(fragments.mask[0].numpy(), inside_convex(corners[:, :2], height, width))


def test_chunk_size_does_not_change_the_result():
    verts, faces, _ = sphere()
    tilted = torch.tensor(verts @ np.array([[1, 0, 0], [0, 0.8, -0.6], [0, 0.6, 0.8]]).T)[None]
    whole = rasterize(tilted.float(), faces, 48, backend="torch")
    chunked = rasterize(tilted.float(), faces, 48, backend="torch", max_pairs_per_chunk=97)
    for a, b in zip(whole, chunked, strict=True):
        assert torch.equal(a, b)


def test_mesh_partly_outside_the_image_is_clipped():
    corners = square(0.8, centre=(-0.9, 0.6)) + NUDGE  # crosses the left and top edges
    fragments = fragments_of(corners, SQUARE_FACES, 40, backend="torch")
    assert np.array_equal(fragments.mask[0].numpy(), inside_convex(corners[:, :2], 40, 40))
    # Entirely outside: nothing; far larger than the image: everything.
    assert not fragments_of(square(0.3, centre=(5, -7)), SQUARE_FACES, 40).mask.any()
    huge = fragments_of(square(1e4) + NUDGE, SQUARE_FACES, 40, max_pairs_per_chunk=300)
    assert huge.mask.all()


def test_degenerate_faces_are_skipped():
    verts = np.array([[0, 0, 0], [0.5, 0.5, 0], [1, 1, 0]], float)  # collinear
    assert not fragments_of(verts, np.array([[0, 1, 2]]), 16).mask.any()


# --------------------------------------------------------------------------- depth


@pytest.mark.parametrize("near_first", [True, False])
def test_nearer_triangle_hides_farther_one_whatever_the_face_order(near_first):
    far = [[-0.9, -0.9, 0.0], [0.9, -0.9, 0.0], [0.0, 0.9, 0.0]]
    near = [[-0.3, -0.3, 0.5], [0.3, -0.3, 0.5], [0.0, 0.3, 0.5]]
    verts = np.array(near + far if near_first else far + near) + NUDGE
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    near_index = 0 if near_first else 1
    fragments = fragments_of(verts, faces, 64, backend="torch")
    near_pixels = inside_convex(np.array(near)[:, :2] + NUDGE[:2], 64, 64)
    far_pixels = inside_convex(np.array(far)[:, :2] + NUDGE[:2], 64, 64) & ~near_pixels
    pix_to_face = fragments.pix_to_face[0].numpy()
    assert (pix_to_face[near_pixels] == near_index).all()
    assert (pix_to_face[far_pixels] == 1 - near_index).all()
    np.testing.assert_allclose(fragments.z[0].numpy()[near_pixels], 0.5, atol=1e-6)
    np.testing.assert_allclose(fragments.z[0].numpy()[far_pixels], 0.0, atol=1e-6)
    assert torch.isneginf(fragments.z[~fragments.mask]).all()


def test_depth_and_barycentrics_interpolate_a_sloped_triangle():
    verts = np.array([[-0.8, -0.7, 1.0], [0.9, -0.6, -2.0], [0.1, 0.8, 3.0]])
    fragments = fragments_of(verts, np.array([[0, 1, 2]]), 32, backend="torch")
    x, y = pixel_centres(32, 32)
    mask = fragments.mask[0].numpy()
    # Solve the barycentric coordinates of every covered pixel centre directly.
    matrix = np.vstack([verts[:, :2].T, np.ones(3)])
    targets = np.stack([x[mask], y[mask], np.ones(mask.sum())])
    expected = np.linalg.solve(matrix, targets).T
    np.testing.assert_allclose(fragments.bary_coords[0].numpy()[mask], expected, atol=1e-5)
    np.testing.assert_allclose(fragments.z[0].numpy()[mask], expected @ verts[:, 2], atol=1e-5)


# --------------------------------------------------------------------------- camera


def test_orthographic_projection_scales_then_shifts_as_deca():
    verts = torch.tensor([[[0.1, -0.2, 0.3], [0.0, 0.0, -0.5]]])
    cam = torch.tensor([[8.0, 0.05, -0.02]])
    projected = orthographic_project(verts, cam)
    expected = [[8 * 0.15, 8 * -0.22, 8 * 0.3], [8 * 0.05, 8 * -0.02, 8 * -0.5]]
    np.testing.assert_allclose(projected[0].numpy(), expected, rtol=1e-6)
    corners = torch.tensor([[-1.0, 1.0], [1.0, -1.0], [1 / 64 - 1, 1 - 1 / 64]])
    np.testing.assert_allclose(
        ndc_to_pixels(corners, 64).numpy(), [[0, 0], [64, 64], [0.5, 0.5]], atol=1e-6
    )


def test_camera_translation_moves_the_render():
    corners = square(0.3) + NUDGE
    template = uv_template(corners)
    light = UNIT_LIGHT
    moved = np.array([[1.0, 0.25, -0.5]], np.float32)  # right by 1/8, down by 1/4 of 64 px
    base = render(corners[None], IDENTITY_CAM, light, template, 64, backend="torch")
    shifted = render(corners[None], moved, light, template, 64, backend="torch")
    expected = np.roll(base.render_mask[0].numpy(), shift=(16, 8), axis=(0, 1))
    assert np.array_equal(shifted.render_mask[0].numpy(), expected)


# --------------------------------------------------------------------------- shading


@pytest.mark.parametrize(
    ("encoding", "colour"), [("x255", (0, 0, 255)), ("biased", (128, 128, 255))]
)
def test_plane_facing_the_camera_renders_the_facing_colour_everywhere_inside(encoding, colour):
    corners = square(0.6, z=0.2) + NUDGE
    out = render(
        corners[None], IDENTITY_CAM, UNIT_LIGHT, uv_template(corners), 48,
        backend="torch", normal_encoding=encoding,
    )  # fmt: skip
    inside = inside_convex(corners[:, :2], 48, 48)
    normal = out.render_normal[0].numpy()
    assert (normal[inside] == colour).all()
    assert (normal[~inside] == 0).all()
    assert np.array_equal(out.render_mask[0].numpy(), np.where(inside, 255, 0))


def test_tilted_plane_normal_is_its_rotated_normal():
    angle = math.radians(40)
    rotation = np.array(
        [[math.cos(angle), 0, math.sin(angle)], [0, 1, 0], [-math.sin(angle), 0, math.cos(angle)]]
    )
    corners = (square(0.6) @ rotation.T) + NUDGE
    out = render(corners[None], IDENTITY_CAM, UNIT_LIGHT, uv_template(corners), 48)
    inside = out.render_mask[0].numpy() > 0
    assert inside.sum() > 300
    expected = np.round(np.array([math.sin(angle), 0, math.cos(angle)]) * 255)
    assert np.abs(out.render_normal[0].numpy()[inside] - expected).max() <= 1


def test_sh_shading_matches_ramamoorthi_hanrahan_constants():
    # Bands 1-2 with the paper's c1, c2, c5 (c3 = 3 c5); band 0 is DECA's 1 / sqrt(4 pi).
    c1, c2, c5 = 0.429043, 0.511664, 0.247708
    generator = torch.Generator().manual_seed(0)
    normals = torch.nn.functional.normalize(torch.randn(2, 50, 3, generator=generator), dim=-1)
    light = torch.randn(2, 9, 3, generator=generator)
    x, y, z = (normals[..., k, None] for k in range(3))
    L = light[:, None]  # (N, 1, 9, 3)
    expected = (
        L[:, :, 0] / math.sqrt(4 * math.pi)
        + 2 * c2 * (L[:, :, 1] * x + L[:, :, 2] * y + L[:, :, 3] * z)
        + 2 * c1 * (L[:, :, 4] * x * y + L[:, :, 5] * x * z + L[:, :, 6] * y * z)
        + c1 * L[:, :, 7] * (x * x - y * y)
        + c5 * L[:, :, 8] * (3 * z * z - 1)
    )
    torch.testing.assert_close(sh_shading(normals, light), expected, atol=1e-5, rtol=1e-5)


def test_uv_render_is_the_analytic_uv_times_shading():
    # The two triangles use their own UV corners (a seam), so uv_faces must be honoured.
    corners = square(0.7) + NUDGE
    uvs = np.array([[0.1, 0.2], [0.9, 0.2], [0.9, 0.6], [0.2, 0.3], [0.6, 0.9], [0.2, 0.9]])
    uv_faces = np.array([[0, 1, 2], [3, 4, 5]])
    template = uv_template(corners, uvs=uvs.astype(np.float32), uv_faces=uv_faces)
    light = UNIT_LIGHT.copy()
    light[:, 0] *= 0.8  # uniform shading 0.8, per channel
    out = render(corners[None], IDENTITY_CAM, light, template, 40, uv_size=256)
    x, y = pixel_centres(40, 40)
    tested = 0
    for face, uv_face in zip(SQUARE_FACES, uv_faces, strict=True):
        inside = inside_convex(corners[face, :2], 40, 40)
        matrix = np.vstack([corners[face, :2].T, np.ones(3)])
        bary = np.linalg.solve(matrix, np.stack([x[inside], y[inside], np.ones(inside.sum())]))
        u, v = (bary.T @ uvs[uv_face]).T
        expected = np.round(0.8 * 255 * np.stack([u, 1 - v, np.full_like(u, 0.5)], 1))
        assert np.abs(out.render_uv[0].numpy()[inside] - expected).max() <= 1
        tested += inside.sum()
    assert tested > 600
    assert (out.render_uv[0].numpy()[out.render_mask[0].numpy() == 0] == 0).all()


def test_uv_size_clamps_uvs_to_texel_centres():
    corners = square(0.9) + NUDGE
    out = render(corners[None], IDENTITY_CAM, UNIT_LIGHT, uv_template(corners), 64, uv_size=4)
    covered = out.render_mask[0].numpy() > 0
    red = out.render_uv[0, ..., 0].numpy()[covered]
    assert red.min() == round(0.125 * 255) and red.max() == round(0.875 * 255)


def test_sphere_centre_faces_the_camera_and_is_lit_by_the_z_band():
    verts, faces, uvs = sphere(rings=24, columns=32)
    template = MeshTemplate(verts, faces, uvs, faces)
    light = np.zeros((1, 9, 3), np.float32)
    light[:, 3] = 1.0  # linear band along z: shading = sqrt(pi / 3) * n_z
    out = render(verts[None], IDENTITY_CAM, light, template, 64, normal_encoding="biased")
    normal = out.render_normal[0].numpy().astype(int)
    # A faceted sphere: vertex normals 5.6 degrees apart, so a few levels off straight on.
    assert np.abs(normal[31:33, 31:33] - [128, 128, 255]).max() <= 6
    # The silhouette has radius 0.6 * 32 = 19.2 px around (32, 32): near its top the
    # normal points up (+y, green), near its right edge right (+x, red).
    assert normal[14:16, 31:33, 1].min() > 200 and normal[14:16, 31:33, 0].max() < 140
    assert normal[31:33, 48:50, 0].min() > 200 and normal[31:33, 48:50, 1].max() < 140
    # Shading sqrt(pi / 3) * n_z on the blue channel 0.5: ~130 straight on, darker at the rim.
    blue = out.render_uv[0, ..., 2].numpy().astype(int)
    assert abs(blue[31:33, 31:33] - 0.5 * math.sqrt(math.pi / 3) * 255).max() <= 2
    assert blue[31:33, 49].max() < 70
    # Mask area ~ the disc (the polygonal silhouette is slightly smaller).
    area = int((out.render_mask[0] > 0).sum())
    assert 0.95 * math.pi * (0.6 * 32) ** 2 < area <= math.pi * (0.6 * 32) ** 2 + 64


# --------------------------------------------------------------------------- batching


def test_batched_render_equals_per_item_renders():
    verts, faces, uvs = sphere()
    template = MeshTemplate(verts, faces, uvs, faces)
    generator = np.random.default_rng(3)
    batch = verts[None] + generator.normal(0, 0.02, (3, *verts.shape)).astype(np.float32)
    cams = np.array([[1.0, 0, 0], [1.2, 0.1, -0.05], [0.8, -0.2, 0.1]], np.float32)
    lights = generator.normal(0, 0.3, (3, 9, 3)).astype(np.float32)
    lights[:, 0] += 2.0
    together = render(batch, cams, lights, template, 40)
    for item in range(3):
        alone = render(batch[item : item + 1], cams[item : item + 1], lights[item : item + 1],
                       template, 40)  # fmt: skip
        for a, b in zip(together, alone, strict=True):
            assert torch.equal(a[item], b[0])


def test_render_rejects_mismatched_inputs():
    verts, faces, uvs = sphere()
    template = MeshTemplate(verts, faces, uvs, faces)
    with pytest.raises(ValueError, match="light must be"):
        render(verts[None], IDENTITY_CAM, np.zeros((1, 9)), template, 16)
    with pytest.raises(ValueError, match="head template has"):
        render(verts[None, :10], IDENTITY_CAM, UNIT_LIGHT, template, 16)
    with pytest.raises(ValueError, match="NaN"):
        render(np.full_like(verts, np.nan)[None], IDENTITY_CAM, UNIT_LIGHT, template, 16)
    with pytest.raises(ValueError, match="backend"):
        render(verts[None], IDENTITY_CAM, UNIT_LIGHT, template, 16, backend="opengl")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_gpu_render_equals_cpu_render():
    verts, faces, uvs = sphere()
    template = MeshTemplate(verts, faces, uvs, faces)
    cpu = render(verts[None], IDENTITY_CAM, UNIT_LIGHT, template, 64, backend="torch")
    gpu = render(torch.tensor(verts[None]).cuda(), IDENTITY_CAM, UNIT_LIGHT, template, 64,
                 backend="torch")  # fmt: skip
    for a, b in zip(cpu, gpu, strict=True):
        assert (a.int() - b.cpu().int()).abs().max() <= 1


# --------------------------------------------------------------------------- .obj loader

OBJ_TEXT = """# head template
mtllib head.mtl
v 0.0 0.0 0.0
v 1.0 0.0 0.0 0.5 0.5 0.5
v 1.0 1.0 0.0
v 0.0 1.0 0.5
vt 0.0 0.0
vt 1.0 0.0 0.0
vt 1.0 1.0
vt 0.0 1.0
vn 0 0 1
g face
s off
f 1/1 2/2 3/3
f 1/1/1 3/3/1 4/4/1
f -4/-4 -3/-3 -2/-2 -1/-1
"""


def test_obj_template_loads_what_was_written(tmp_path):
    path = tmp_path / "head_template.obj"
    path.write_text(OBJ_TEXT)
    vertices, faces, uvs, uv_faces = load_obj_template(path)
    np.testing.assert_array_equal(vertices, [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0.5]])
    np.testing.assert_array_equal(uvs, [[0, 0], [1, 0], [1, 1], [0, 1]])
    # The quad (negative indices) becomes a fan of two triangles.
    np.testing.assert_array_equal(faces, [[0, 1, 2], [0, 2, 3], [0, 1, 2], [0, 2, 3]])
    np.testing.assert_array_equal(uv_faces, faces)
    assert vertices.dtype == np.float32 and faces.dtype == np.int64


def test_obj_template_round_trips_a_generated_mesh(tmp_path):
    verts, faces, uvs = sphere()
    uv_faces = faces[:, ::-1].copy()  # distinct from faces, to catch a mix-up
    lines = [f"v {x!r} {y!r} {z!r}" for x, y, z in verts.tolist()]
    lines += [f"vt {u!r} {v!r}" for u, v in uvs.tolist()]
    lines += [" ".join(["f", *(f"{a + 1}/{b + 1}" for a, b in zip(f, t, strict=True))])
              for f, t in zip(faces, uv_faces, strict=True)]  # fmt: skip
    path = tmp_path / "sphere.obj"
    path.write_text("\n".join(lines) + "\n")
    loaded = load_obj_template(path)
    np.testing.assert_array_equal(loaded.vertices, verts)
    np.testing.assert_array_equal(loaded.faces, faces)
    np.testing.assert_array_equal(loaded.uvs, uvs)
    np.testing.assert_array_equal(loaded.uv_faces, uv_faces)


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("v 1.0 zero 2.0", "non-number"),
        ("v 1.0 2.0", "needs 3 numbers"),
        ("vt 0.5", "needs 2 numbers"),
        ("f 1 2 3", "no texture index"),
        ("f 1//1 2//2 3//3", "no texture index"),
        ("f 1/1 2/2 9/3", "vertex index 9 is out of range"),
        ("f 1/1 2/2 3/7", "texture coordinate index 7 is out of range"),
        ("f 0/1 2/2 3/3", "index 0"),
        ("f 1/1 2/2", "at least 3 corners"),
        ("f -9/1 2/2 3/3", "before the first"),
    ],
)
def test_malformed_obj_names_the_file_and_line(tmp_path, bad_line, message):
    text = OBJ_TEXT.splitlines()
    text.insert(12, bad_line)  # becomes line 13
    path = tmp_path / "broken.obj"
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(ValueError, match=message) as error:
        load_obj_template(path)
    assert f"{path}:13:" in str(error.value)


def test_obj_without_uvs_or_faces_or_file_is_refused(tmp_path):
    path = tmp_path / "no_uvs.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    with pytest.raises(ValueError, match="no faces"):
        load_obj_template(path)
    with pytest.raises(FileNotFoundError, match=r"missing\.obj"):
        load_obj_template(tmp_path / "missing.obj")


# --------------------------------------------------------------------------- pytorch3d


def reference_rasterize_meshes(meshes, image_size, **settings):
    """pytorch3d's documented ``rasterize_meshes`` for one face per pixel, written naively.

    Its conventions: screen +X left, +Y up; pixel (row 0, column 0) is the top-left one and
    pixel centres lie at NDC ``half - (2 k + 1) * half / S`` from the top/left edge (the
    shorter side spans [-1, 1]); a face covers a centre strictly inside it; the smallest z
    wins, ties to the lowest packed face index; empty pixels hold -1 everywhere.
    """
    assert settings["faces_per_pixel"] == 1 and settings["blur_radius"] == 0.0
    assert not settings["perspective_correct"] and not settings["cull_backfaces"]
    height, width = image_size
    verts = meshes.verts.double()
    faces = meshes.faces
    n_items, n_faces = faces.shape[:2]

    def centres(size, other):
        half = size / other if size > other else 1.0
        return half - (2 * torch.arange(size, dtype=torch.float64) + 1) * half / size

    py, px = torch.meshgrid(centres(height, width), centres(width, height), indexing="ij")
    pix_to_face = torch.full((n_items, height, width, 1), -1, dtype=torch.int64)
    zbuf = torch.full((n_items, height, width, 1), -1.0)
    bary = torch.full((n_items, height, width, 1, 3), -1.0)
    for n in range(n_items):
        best = torch.full((height, width), math.inf, dtype=torch.float64)
        for f in range(n_faces):
            (x0, y0, z0), (x1, y1, z1), (x2, y2, z2) = verts[n, faces[n, f]].tolist()
            area = (x2 - x0) * (y1 - y0) - (y2 - y0) * (x1 - x0)
            if abs(area) <= 1e-8:
                continue
            w0 = ((px - x1) * (y2 - y1) - (py - y1) * (x2 - x1)) / area
            w1 = ((px - x2) * (y0 - y2) - (py - y2) * (x0 - x2)) / area
            w2 = ((px - x0) * (y1 - y0) - (py - y0) * (x1 - x0)) / area
            depth = w0 * z0 + w1 * z1 + w2 * z2
            wins = (w0 > 0) & (w1 > 0) & (w2 > 0) & (depth >= 0) & (depth < best)
            best[wins] = depth[wins]
            pix_to_face[n, wins, 0] = n * n_faces + f
            zbuf[n, wins, 0] = depth[wins].float()
            bary[n, wins, 0] = torch.stack([w0, w1, w2], -1)[wins].float()
    return pix_to_face, zbuf, bary, torch.full_like(zbuf, -1.0)


@pytest.fixture
def stand_in_pytorch3d(monkeypatch):
    """A ``pytorch3d`` package whose rasterizer is :func:`reference_rasterize_meshes`."""

    class Meshes:
        def __init__(self, verts, faces):
            self.verts, self.faces = verts, faces

    modules = {
        "pytorch3d": types.ModuleType("pytorch3d"),
        "pytorch3d.renderer": types.ModuleType("pytorch3d.renderer"),
        "pytorch3d.renderer.mesh": types.ModuleType("pytorch3d.renderer.mesh"),
        "pytorch3d.structures": types.ModuleType("pytorch3d.structures"),
    }
    modules["pytorch3d.renderer.mesh"].rasterize_meshes = reference_rasterize_meshes
    modules["pytorch3d.structures"].Meshes = Meshes
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)


@pytest.mark.parametrize("size", [24, (18, 30), (30, 18)])
def test_pytorch3d_path_agrees_with_torch_path_via_reference(stand_in_pytorch3d, size):
    verts, faces, uvs = sphere(rings=6, columns=8)
    template = MeshTemplate(verts, faces, uvs, faces)
    batch = np.stack([verts, verts * [1.1, 0.9, 1.0] + [0.2, -0.1, 0.0]]).astype(np.float32)
    cams = np.array([[1.0, 0.0, 0.0], [0.9, 0.05, 0.1]], np.float32)
    light = np.repeat(UNIT_LIGHT, 2, axis=0)
    projected = orthographic_project(torch.tensor(batch), torch.tensor(cams))
    ours = rasterize(projected, faces, size, backend="torch")
    theirs = rasterize(projected, faces, size, backend="pytorch3d")
    assert torch.equal(ours.pix_to_face, theirs.pix_to_face)
    torch.testing.assert_close(ours.bary_coords, theirs.bary_coords, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.z, theirs.z, atol=1e-5, rtol=0)
    a = render(batch, cams, light, template, size, backend="torch")
    b = render(batch, cams, light, template, size, backend="pytorch3d")
    for image_a, image_b in zip(a, b, strict=True):
        assert (image_a.int() - image_b.int()).abs().max() <= 1


@pytest.mark.skipif(pytorch3d_available(), reason="pytorch3d is importable here")
def test_asking_for_missing_pytorch3d_says_so():
    with pytest.raises(ImportError, match="backend='torch'"):
        fragments_of(square(0.5), SQUARE_FACES, 8, backend="pytorch3d")


@pytest.mark.skipif(
    not pytorch3d_available(),
    reason="pytorch3d does not import here (no wheel for this Python/torch); the adapter is "
    "still checked against a naive reference in test_pytorch3d_path_agrees_with_torch_path",
)
def test_real_pytorch3d_agrees_with_torch_backend():
    # Tolerance: coverage may differ only where a pixel centre is within float rounding of
    # an edge (at most 0.1% of pixels); elsewhere images differ by at most 1 level.
    verts, faces, uvs = sphere(rings=40, columns=60)
    template = MeshTemplate(verts, faces, uvs, faces)
    generator = np.random.default_rng(0)
    batch = verts[None] + generator.normal(0, 0.01, (2, *verts.shape)).astype(np.float32)
    cams = np.array([[1.1, 0.05, -0.1], [0.9, -0.1, 0.05]], np.float32)
    light = np.repeat(UNIT_LIGHT, 2, axis=0)
    for size in (128, (96, 160)):
        a = render(batch, cams, light, template, size, backend="torch")
        b = render(batch, cams, light, template, size, backend="pytorch3d")
        same = a.render_mask == b.render_mask
        assert (~same).float().mean() <= 1e-3
        both = (a.render_mask > 0) & (b.render_mask > 0)
        for image_a, image_b in zip(a[:2], b[:2], strict=True):
            assert (image_a[both].int() - image_b[both].int()).abs().max() <= 1
