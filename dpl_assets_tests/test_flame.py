"""FLAME: the safe pickle loader and the LBS layer, on small stand-in model files.

No official FLAME file exists here, so the tests write FLAME-format files themselves: a
Python 2 style protocol-2 pickle whose arrays are chumpy-like ``Ch`` objects (defined under
the module name ``chumpy.ch`` only while writing, with chumpy's pickled state layout) and a
DECA-style landmark embedding ``.npy``. The mesh is small (30 vertices, 5 joints). LBS is
checked against independent NumPy/SciPy math written here.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import pickletools
import struct
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse
import torch
from scipy.spatial.transform import Rotation

from dpl_assets.face3d.flame import (
    FLAME_SHAPE_COMPONENTS,
    NUM_LANDMARKS,
    FlameLoadError,
    FlameModel,
)
from dpl_assets.face3d.flame_layer import FlameLayer, axis_angle_to_matrix
from dpl_assets.face3d.safe_pickle import (
    ChumpyObject,
    UnsafePickleError,
    load_npy_object,
    load_pickle,
    safe_loads,
)

N_VERTS = 30
N_JOINTS = 5
N_COMPONENTS = 400  # FLAME 2020: 300 identity + 100 expression
N_SHAPE, N_EXP = 100, 50
JAW = 2


# --- stand-in chumpy, mirroring chumpy's pickle layout --------------------------------------


@contextlib.contextmanager
def fake_chumpy():
    """Make ``chumpy.ch.Ch`` and ``chumpy.reordering.Select`` picklable by name, then vanish.

    Real chumpy objects define no ``__reduce__``: protocol 2 writes ``NEWOBJ(cls, ())`` and
    ``BUILD(__getstate__())``, where the state is ``__dict__`` minus ``_parents`` and
    ``_cache`` (weak dictionaries), i.e. ``x`` plus bookkeeping such as the ``_dirty_vars``
    set. A ``Select`` (like other chumpy operators) holds terms, not an array.
    """
    assert "chumpy" not in sys.modules  # the real chumpy must play no part

    class Ch:
        def __init__(self, x: Any):
            self.__dict__.update(
                _dirty_vars={"x"},
                _itr=None,
                _parents={},
                _cache={"r": None, "drs": {}},
                _depends_on_deps={},
                _make_dense=False,
                _make_sparse=False,
                x=np.asarray(x, np.float64),
            )

        def __getstate__(self) -> dict[str, Any]:
            state = dict(self.__dict__)
            del state["_parents"], state["_cache"]
            return state

    class Select(Ch):
        def __init__(self, a: Any, idxs: Any):
            super().__init__(0.0)
            del self.__dict__["x"]
            self.__dict__.update(a=a, idxs=np.asarray(idxs))

    modules = {
        name: types.ModuleType(name) for name in ("chumpy", "chumpy.ch", "chumpy.reordering")
    }
    for cls, module in ((Ch, "chumpy.ch"), (Select, "chumpy.reordering")):
        cls.__module__ = module
        cls.__qualname__ = cls.__name__
        setattr(modules[module], cls.__name__, cls)
    sys.modules.update(modules)
    try:
        yield types.SimpleNamespace(Ch=Ch, Select=Select)
    finally:
        for name in modules:
            sys.modules.pop(name, None)


_PurePythonPickler: Any = pickle._Pickler  # the pure-Python pickler, to override its writers


class Py2StylePickler(_PurePythonPickler):
    """Writes ``str`` and ``bytes`` as Python 2 ``str`` (BINSTRING), like FLAME's own file.

    Python 3 would write ``bytes`` at protocol 2 as ``_codecs.encode(...)`` calls; Python 2
    wrote raw strings, which only ``encoding="latin1"`` turns back into array bytes.
    """

    dispatch: dict[type, Any] = _PurePythonPickler.dispatch.copy()

    def save_py2_str(self, obj: str | bytes) -> None:
        data = obj if isinstance(obj, bytes) else obj.encode("latin-1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def py2_pickle(obj: Any) -> bytes:
    buffer = io.BytesIO()
    Py2StylePickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


# --- a small FLAME-format model -----------------------------------------------------------


def make_arrays(seed: int = 0) -> dict[str, Any]:
    """Random FLAME-format arrays on a 5 x 6 grid mesh (30 vertices, 40 triangles)."""
    rng = np.random.default_rng(seed)
    gx, gy = np.meshgrid(np.linspace(-0.08, 0.08, 6), np.linspace(-0.1, 0.1, 5))
    v_template = np.stack([gx.ravel(), gy.ravel(), 0.05 * rng.standard_normal(N_VERTS)], axis=1)
    faces = []
    for row in range(4):
        for col in range(5):
            a = row * 6 + col
            faces += [(a, a + 1, a + 6), (a + 1, a + 7, a + 6)]
    weights = rng.dirichlet(np.ones(N_JOINTS), size=N_VERTS)
    no_jaw = np.arange(N_VERTS) < 15  # the upper half of the grid has no jaw weight
    weights[no_jaw, JAW] = 0.0
    weights /= weights.sum(axis=1, keepdims=True)
    posedirs = 0.01 * rng.standard_normal((N_VERTS, 3, 36))
    # The jaw's pose correctives (columns 9:18) act only where the jaw skins.
    posedirs[no_jaw, :, 9:18] = 0.0
    regressor = np.zeros((N_JOINTS, N_VERTS))
    for joint in range(N_JOINTS):
        support = rng.choice(N_VERTS, size=4, replace=False)
        regressor[joint, support] = rng.dirichlet(np.ones(4))
    return {
        "v_template": v_template,
        "shapedirs": 0.01 * rng.standard_normal((N_VERTS, 3, N_COMPONENTS)),
        "posedirs": posedirs,
        "J_regressor": scipy.sparse.csc_matrix(regressor),
        "kintree_table": np.array([[2**32 - 1, 0, 1, 1, 1], [0, 1, 2, 3, 4]], np.int64),
        "weights": weights,
        "f": np.array(faces, np.uint32),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def make_embedding(seed: int = 1) -> dict[str, Any]:
    """DECA's layout: numpy static/full entries, torch tensors for the dynamic ones."""
    rng = np.random.default_rng(seed)
    return {
        "static_lmk_faces_idx": rng.integers(0, 40, 51),
        "static_lmk_bary_coords": rng.dirichlet(np.ones(3), 51),
        "dynamic_lmk_faces_idx": torch.from_numpy(rng.integers(0, 40, (79, 17))),
        "dynamic_lmk_bary_coords": torch.rand(79, 17, 3),
        "full_lmk_faces_idx": rng.integers(0, 40, (1, NUM_LANDMARKS)),
        "full_lmk_bary_coords": rng.dirichlet(np.ones(3), (1, NUM_LANDMARKS)).astype(np.float32),
    }


def write_model(path: Path, arrays: dict[str, Any], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """Write ``arrays`` as FLAME does: shapedirs and v_template as chumpy ``Ch``, ``J`` lazy."""
    with fake_chumpy() as ch:
        content = {key: value for key, value in arrays.items() if key not in drop}
        for key in ("v_template", "shapedirs"):
            if key in content:
                content[key] = ch.Ch(content[key])
        content["J"] = ch.Select(ch.Ch(arrays["v_template"]), [0, 1, 2])
        path.write_bytes(py2_pickle(content))
    return content


def write_embedding(path: Path, embedding: dict[str, Any]) -> None:
    holder = np.empty((), dtype=object)
    holder[()] = embedding
    np.save(path, holder, allow_pickle=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> types.SimpleNamespace:
    root = tmp_path_factory.mktemp("flame")
    arrays, embedding = make_arrays(), make_embedding()
    write_model(root / "generic_model.pkl", arrays)
    write_embedding(root / "landmark_embedding.npy", embedding)
    return types.SimpleNamespace(
        model=root / "generic_model.pkl",
        embedding=root / "landmark_embedding.npy",
        arrays=arrays,
        lmk=embedding,
    )


@pytest.fixture(scope="module")
def model(files: types.SimpleNamespace) -> FlameModel:
    return FlameModel.load(files.model, files.embedding, num_vertices=None)


@pytest.fixture(scope="module")
def layer(model: FlameModel) -> FlameLayer:
    return FlameLayer(model, n_shape=N_SHAPE, n_exp=N_EXP)


# --- safe loading ---------------------------------------------------------------------------


def test_stand_in_pickle_has_python2_layout(files: types.SimpleNamespace) -> None:
    """The written file looks like FLAME's: py2 strings, chumpy globals, a set, NEWOBJ."""
    ops = list(pickletools.genops(files.model.read_bytes()))
    names = {op.name for op, _, _ in ops}
    strings = {arg for op, arg, _ in ops if op.name in {"GLOBAL", "SHORT_BINSTRING"}}
    assert {"NEWOBJ", "BUILD", "BINSTRING", "SHORT_BINSTRING"} <= names
    assert not names & {"BINUNICODE", "SHORT_BINUNICODE"}
    assert {"chumpy.ch Ch", "chumpy.reordering Select", "__builtin__ set"} <= strings
    assert "scipy.sparse._csc csc_matrix" in strings
    assert "chumpy" not in sys.modules


def test_flame_pickle_loads_through_safe_loader(
    files: types.SimpleNamespace, model: FlameModel
) -> None:
    loaded = load_pickle(files.model)
    assert "chumpy" not in sys.modules
    for key in ("v_template", "shapedirs", "posedirs", "kintree_table", "weights", "f"):
        assert isinstance(loaded[key], np.ndarray), key
        np.testing.assert_array_equal(loaded[key], files.arrays[key])
    assert loaded["f"].dtype == np.uint32
    assert scipy.sparse.issparse(loaded["J_regressor"])
    np.testing.assert_array_equal(
        loaded["J_regressor"].toarray(), files.arrays["J_regressor"].toarray()
    )
    assert loaded["bs_style"] == "lbs"
    # A lazy chumpy expression stays an inert stand-in: not needed, and no chumpy to run it.
    assert isinstance(loaded["J"], ChumpyObject)
    assert loaded["J"].chumpy_class == "chumpy.reordering.Select"

    np.testing.assert_array_equal(model.v_template, files.arrays["v_template"])
    np.testing.assert_array_equal(model.faces, files.arrays["f"])
    np.testing.assert_array_equal(model.parents, [-1, 0, 1, 1, 1])
    np.testing.assert_array_equal(model.lmk_faces_idx, files.lmk["full_lmk_faces_idx"][0])
    np.testing.assert_allclose(model.lmk_bary_coords, files.lmk["full_lmk_bary_coords"][0])


@pytest.mark.parametrize("protocol", [0, 1, 2, 4, 5])
def test_python3_pickles_of_chumpy_objects_load(protocol: int) -> None:
    """Re-saved files (Python 3, any protocol) load as well."""
    x = np.arange(12.0).reshape(4, 3)
    regressor = scipy.sparse.random(5, 7, density=0.4, format="csr", random_state=0)
    with fake_chumpy() as ch:
        data = pickle.dumps({"v": ch.Ch(x), "r": regressor, "s": np.float32(2.5)}, protocol)
    loaded = load_pickle_bytes(data)
    np.testing.assert_array_equal(loaded["v"], x)
    assert loaded["r"].format == "csr"
    np.testing.assert_array_equal(loaded["r"].toarray(), regressor.toarray())
    assert loaded["s"] == np.float32(2.5)


def load_pickle_bytes(data: bytes) -> Any:
    from dpl_assets.face3d.safe_pickle import to_plain

    return to_plain(safe_loads(data))


class SystemPayload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> Any:
        return (os.system, (f"touch {self.marker}",))


class EvalPayload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> Any:
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


class GetattrPayload:
    def __reduce__(self) -> Any:
        return (getattr, ("text", "__class__"))  # the first step of most gadget chains


@pytest.mark.parametrize(
    ("payload", "name"),
    [
        (SystemPayload, f"{os.system.__module__}.system"),
        (EvalPayload, "builtins.eval"),
        (lambda marker: GetattrPayload(), "builtins.getattr"),
    ],
)
@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_code_executing_payloads_are_refused(
    tmp_path: Path, payload: Any, name: str, protocol: int
) -> None:
    marker = tmp_path / "pwned"
    data = pickle.dumps({"v_template": np.zeros((3, 3)), "bs_style": payload(marker)}, protocol)
    with pytest.raises(UnsafePickleError) as caught:
        safe_loads(data)
    # Python 2 spellings (protocol < 3) name `__builtin__`; both are refused.
    assert caught.value.qualified_name.replace("__builtin__", "builtins") == name
    assert not marker.exists()

    # Hidden inside a model file: a FlameLoadError that names the global.
    model_path = tmp_path / "generic_model.pkl"
    model_path.write_bytes(data)
    with pytest.raises(FlameLoadError, match=name.rsplit(".", 1)[1]) as caught_load:
        FlameModel.load(model_path, tmp_path / "unused.npy")
    assert isinstance(caught_load.value.__cause__, UnsafePickleError)
    assert not marker.exists()
    if name != "builtins.getattr":
        pickle.loads(data)  # control: a plain unpickler does run the payload
        assert marker.exists()


def test_payload_in_landmark_embedding_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    embedding = make_embedding()
    embedding["static_lmk_faces_idx"] = SystemPayload(marker)
    write_embedding(tmp_path / "lmk.npy", embedding)
    with pytest.raises(UnsafePickleError, match="system"):
        load_npy_object(tmp_path / "lmk.npy")
    assert not marker.exists()


def test_other_globals_and_misuse_are_refused() -> None:
    crafted = {
        "subprocess.Popen": b"\x80\x02csubprocess\nPopen\n]\x85R.",
        "builtins.__import__": b"\x80\x02c__builtin__\n__import__\nU\x02os\x85R.",
        # an allowed builder used on a non-ndarray subtype
        "numpy.core.multiarray._reconstruct": (
            b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncchumpy.ch\nCh\nK\x00\x85U\x01b\x87R."
        ),
        "_codecs.encode": (
            b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x04\x00\x00\x00zlib\x86R."
        ),
    }
    for name, data in crafted.items():
        with pytest.raises(UnsafePickleError) as caught:
            safe_loads(data)
        assert caught.value.qualified_name in {name, name.replace("builtins", "__builtin__")}


def test_landmark_embedding_loads_without_allow_pickle(files: types.SimpleNamespace) -> None:
    loaded = load_npy_object(files.embedding)
    assert set(loaded) == set(files.lmk)
    for key, value in files.lmk.items():
        assert isinstance(loaded[key], np.ndarray), key  # torch tensors come back as NumPy
        np.testing.assert_array_equal(loaded[key], np.asarray(value))


def test_missing_file_not_a_pickle_and_missing_keys_are_named(
    tmp_path: Path, files: types.SimpleNamespace
) -> None:
    with pytest.raises(FlameLoadError, match="not found"):
        FlameModel.load(tmp_path / "nope.pkl", files.embedding)
    text = tmp_path / "generic_model.pkl"
    text.write_text("this is a README, not a model\n")
    with pytest.raises(FlameLoadError, match="is not a pickle"):
        FlameModel.load(text, files.embedding)
    (tmp_path / "empty.pkl").write_bytes(b"")
    with pytest.raises(FlameLoadError, match="is not a pickle"):
        FlameModel.load(tmp_path / "empty.pkl", files.embedding)
    with pytest.raises(FlameLoadError, match=r"not a \.npy"):
        FlameModel.load(files.model, text)

    partial = tmp_path / "partial.pkl"
    write_model(partial, files.arrays, drop=("posedirs", "f"))
    with pytest.raises(FlameLoadError, match=r"missing keys \['posedirs', 'f'\]"):
        FlameModel.load(partial, files.embedding, num_vertices=None)
    lmk = dict(files.lmk)
    del lmk["full_lmk_bary_coords"]
    write_embedding(tmp_path / "lmk.npy", lmk)
    with pytest.raises(FlameLoadError, match=r"missing keys \['full_lmk_bary_coords'\]"):
        FlameModel.load(files.model, tmp_path / "lmk.npy", num_vertices=None)


def test_wrong_shapes_and_lazy_arrays_are_named(
    tmp_path: Path, files: types.SimpleNamespace
) -> None:
    # The official vertex count is required by default.
    with pytest.raises(FlameLoadError, match="30 vertices, FLAME has 5023"):
        FlameModel.load(files.model, files.embedding)
    bad = dict(files.arrays, posedirs=np.zeros((N_VERTS, 3, 20)))
    write_model(tmp_path / "bad.pkl", bad)
    with pytest.raises(FlameLoadError, match=r"posedirs has shape \(30, 3, 20\)"):
        FlameModel.load(tmp_path / "bad.pkl", files.embedding, num_vertices=None)
    with fake_chumpy() as ch:
        lazy = dict(files.arrays, weights=ch.Select(ch.Ch(files.arrays["weights"]), [0]))
        (tmp_path / "lazy.pkl").write_bytes(py2_pickle(lazy))
    with pytest.raises(FlameLoadError, match=r"weights: chumpy\.reordering\.Select is a lazy"):
        FlameModel.load(tmp_path / "lazy.pkl", files.embedding, num_vertices=None)


# --- the layer against independent math -----------------------------------------------------


def reference_flame(
    arrays: dict[str, Any],
    lmk: dict[str, Any],
    shape: np.ndarray,
    exp: np.ndarray,
    pose: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Textbook LBS in float64 with 4x4 joint transforms, one frame."""
    dirs = arrays["shapedirs"]
    start = FLAME_SHAPE_COMPONENTS
    v_shaped = (
        arrays["v_template"]
        + dirs[:, :, : len(shape)] @ shape
        + dirs[:, :, start : start + len(exp)] @ exp
    )
    joints = arrays["J_regressor"].toarray() @ v_shaped
    rotvecs = np.stack([pose[:3], np.zeros(3), pose[3:], np.zeros(3), np.zeros(3)])
    local = Rotation.from_rotvec(rotvecs).as_matrix()
    v_posed = v_shaped + arrays["posedirs"] @ (local[1:] - np.eye(3)).ravel()
    parents = [-1, 0, 1, 1, 1]
    world: list[np.ndarray] = []
    for j, parent in enumerate(parents):
        transform = np.eye(4)
        transform[:3, :3] = local[j]
        transform[:3, 3] = joints[j] - (joints[parent] if parent >= 0 else 0)
        world.append(transform if parent < 0 else world[parent] @ transform)
    skinning = []
    for j in range(N_JOINTS):
        to_rest = np.eye(4)
        to_rest[:3, 3] = -joints[j]
        skinning.append(world[j] @ to_rest)
    blended = np.einsum("vj,jab->vab", arrays["weights"], np.stack(skinning))
    homogeneous = np.concatenate([v_posed, np.ones((N_VERTS, 1))], axis=1)
    verts = np.einsum("vab,vb->va", blended, homogeneous)[:, :3]
    corners = verts[arrays["f"][lmk["full_lmk_faces_idx"][0]]]
    landmarks = np.einsum("lkc,lk->lc", corners, lmk["full_lmk_bary_coords"][0])
    return verts, landmarks


def run(layer: FlameLayer, shape: Any, exp: Any, pose: Any) -> tuple[np.ndarray, np.ndarray]:
    out = layer(*(torch.as_tensor(np.asarray(a), dtype=torch.float32) for a in (shape, exp, pose)))
    assert out.verts.dtype == torch.float32 and out.landmarks3d.dtype == torch.float32
    return out.verts.numpy().astype(np.float64), out.landmarks3d.numpy().astype(np.float64)


def zeros(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros((n, N_SHAPE)), np.zeros((n, N_EXP)), np.zeros((n, 6))


def test_zero_pose_and_coefficients_give_the_template_exactly(
    layer: FlameLayer, files: types.SimpleNamespace
) -> None:
    verts, _ = run(layer, *zeros(3))
    template = files.arrays["v_template"].astype(np.float32).astype(np.float64)
    for frame in verts:
        np.testing.assert_array_equal(frame, template)


def test_shape_and_expression_coefficients_add_their_blend_shapes(
    layer: FlameLayer, files: types.SimpleNamespace
) -> None:
    rng = np.random.default_rng(2)
    shape, exp, pose = zeros(2)
    shape[:] = rng.standard_normal((2, N_SHAPE))
    verts, _ = run(layer, shape, exp, pose)
    dirs = files.arrays["shapedirs"]
    for frame, beta in zip(verts, shape, strict=True):
        expected = files.arrays["v_template"] + dirs[..., :N_SHAPE] @ beta
        np.testing.assert_allclose(frame, expected, atol=2e-6)
    # Expression coefficients index the components after the 300 identity ones.
    shape[:] = 0
    exp[:] = rng.standard_normal((2, N_EXP))
    verts, _ = run(layer, shape, exp, pose)
    for frame, psi in zip(verts, exp, strict=True):
        expected = files.arrays["v_template"] + dirs[..., 300 : 300 + N_EXP] @ psi
        np.testing.assert_allclose(frame, expected, atol=2e-6)


def test_global_rotation_is_rigid_about_the_root_joint(
    layer: FlameLayer, files: types.SimpleNamespace
) -> None:
    rng = np.random.default_rng(3)
    shape, exp, pose = zeros(4)
    shape[:] = rng.standard_normal((4, N_SHAPE))
    pose[:, :3] = rng.uniform(-1.2, 1.2, (4, 3))
    verts, _ = run(layer, shape, exp, pose)
    for frame, beta, rotvec in zip(verts, shape, pose[:, :3], strict=True):
        v_shaped = files.arrays["v_template"] + files.arrays["shapedirs"][..., :N_SHAPE] @ beta
        root = files.arrays["J_regressor"].toarray()[0] @ v_shaped
        expected = Rotation.from_rotvec(rotvec).apply(v_shaped - root) + root
        np.testing.assert_allclose(frame, expected, atol=2e-6)


def test_jaw_rotation_moves_only_jaw_weighted_vertices(
    layer: FlameLayer, files: types.SimpleNamespace
) -> None:
    shape, exp, pose = zeros(1)
    rest, _ = run(layer, shape, exp, pose)
    pose[0, 3:] = [0.35, 0.05, -0.02]  # mouth opening, mostly about x
    opened, _ = run(layer, shape, exp, pose)
    jaw_weighted = files.arrays["weights"][:, JAW] > 0
    assert jaw_weighted.sum() == 15
    np.testing.assert_array_equal(opened[0, ~jaw_weighted], rest[0, ~jaw_weighted])
    moved = np.linalg.norm(opened[0] - rest[0], axis=1)
    assert (moved[jaw_weighted] > 1e-4).all()


def test_layer_matches_textbook_lbs_and_barycentric_landmarks(
    layer: FlameLayer, files: types.SimpleNamespace
) -> None:
    rng = np.random.default_rng(4)
    n = 5
    shape = rng.standard_normal((n, N_SHAPE))
    exp = rng.standard_normal((n, N_EXP))
    pose = rng.uniform(-0.6, 0.6, (n, 6))
    verts, landmarks = run(layer, shape, exp, pose)
    assert verts.shape == (n, N_VERTS, 3) and landmarks.shape == (n, NUM_LANDMARKS, 3)
    faces, lmk = files.arrays["f"], files.lmk
    for i in range(n):
        expected_verts, expected_landmarks = reference_flame(
            files.arrays, lmk, shape[i], exp[i], pose[i]
        )
        np.testing.assert_allclose(verts[i], expected_verts, atol=5e-6)
        np.testing.assert_allclose(landmarks[i], expected_landmarks, atol=5e-6)
        # And landmarks are exactly the barycentric mix of the layer's own vertices.
        corners = verts[i][faces[lmk["full_lmk_faces_idx"][0]]]
        mixed = np.einsum("lkc,lk->lc", corners, lmk["full_lmk_bary_coords"][0])
        np.testing.assert_allclose(landmarks[i], mixed, atol=1e-6)


def test_forward_numpy_batches_and_float64(model: FlameModel, layer: FlameLayer) -> None:
    rng = np.random.default_rng(5)
    shape = rng.standard_normal((7, N_SHAPE)).astype(np.float32)
    exp = rng.standard_normal((7, N_EXP)).astype(np.float32)
    pose = rng.uniform(-0.5, 0.5, (7, 6)).astype(np.float32)
    verts, landmarks = layer.forward_numpy(shape, exp, pose, batch_size=3)
    assert verts.dtype == np.float32 and verts.shape == (7, N_VERTS, 3)
    whole, whole_landmarks = run(layer, shape, exp, pose)
    np.testing.assert_allclose(verts, whole, atol=1e-6)
    np.testing.assert_allclose(landmarks, whole_landmarks, atol=1e-6)
    precise = FlameLayer(model, N_SHAPE, N_EXP, dtype=torch.float64)
    out = precise(*(torch.from_numpy(a.astype(np.float64)) for a in (shape, exp, pose)))
    assert out.verts.dtype == torch.float64
    np.testing.assert_allclose(out.verts.numpy(), whole, atol=5e-6)


def test_inputs_are_checked(layer: FlameLayer, model: FlameModel) -> None:
    shape, exp, pose = (torch.zeros(2, w) for w in (N_SHAPE, N_EXP, 6))
    with pytest.raises(ValueError, match=r"exp must have shape \(N, 50\)"):
        layer(shape, torch.zeros(2, 100), pose)
    with pytest.raises(ValueError, match=r"pose must have shape \(N, 6\)"):
        layer(shape, exp, torch.zeros(3, 6))
    with pytest.raises(ValueError, match="n_exp must be in"):
        FlameLayer(model, n_shape=100, n_exp=101)


def test_rodrigues_matches_scipy_and_is_exact_at_zero() -> None:
    rng = np.random.default_rng(6)
    rotvecs = np.concatenate(
        [rng.uniform(-3, 3, (50, 3)), 1e-7 * rng.standard_normal((5, 3)), np.zeros((1, 3))]
    )
    matrices = axis_angle_to_matrix(torch.from_numpy(rotvecs)).numpy()
    np.testing.assert_allclose(matrices, Rotation.from_rotvec(rotvecs).as_matrix(), atol=1e-12)
    np.testing.assert_array_equal(matrices[-1], np.eye(3))
    zero = torch.zeros(1, 3, requires_grad=True)
    axis_angle_to_matrix(zero).sum().backward()
    assert zero.grad is not None and torch.isfinite(zero.grad).all()


def test_unnormalized_weights_follow_classic_lbs(files: types.SimpleNamespace) -> None:
    """Weights not summing to 1 (not FLAME's, but possible) still give Σ_j w_j (R_j v + t_j)."""
    arrays = dict(files.arrays)
    arrays["weights"] = arrays["weights"] * np.linspace(0.8, 1.2, N_VERTS)[:, None]
    layer = FlameLayer(FlameModel.from_mappings(arrays, files.lmk, num_vertices=None))
    rng = np.random.default_rng(7)
    shape, exp, pose = (
        rng.standard_normal(N_SHAPE),
        rng.standard_normal(N_EXP),
        rng.uniform(-1, 1, 6),
    )
    verts, landmarks = run(layer, shape[None], exp[None], pose[None])
    expected_verts, expected_landmarks = reference_flame(arrays, files.lmk, shape, exp, pose)
    np.testing.assert_allclose(verts[0], expected_verts, atol=5e-6)
    np.testing.assert_allclose(landmarks[0], expected_landmarks, atol=5e-6)


class ObjectArrayFromBytes:
    """Builds an object array whose 'pointers' are raw bytes (reading it crashes numpy)."""

    def __reduce__(self):
        return (np.ndarray, ((1,), np.dtype("O"), b"AAAAAAAA"))


def test_object_arrays_from_raw_bytes_and_views_outside_storage_are_refused() -> None:
    from dpl_assets.face3d.safe_pickle import _rebuild_tensor, safe_loads

    with pytest.raises(UnsafePickleError, match="object dtype"):
        safe_loads(pickle.dumps(ObjectArrayFromBytes(), protocol=2))
    storage = torch.zeros(4).untyped_storage()
    typed = torch.storage.TypedStorage(wrap_storage=storage, dtype=torch.float32, _internal=True)
    with pytest.raises(UnsafePickleError, match="outside its storage"):
        _rebuild_tensor(typed, 0, (1000,), (1,))
    assert _rebuild_tensor(typed, 1, (3,), (1,)).shape == (3,)  # inside: fine
