"""The FLAME head model's files: safe loading and validation into :class:`FlameModel`.

FLAME (Li et al. 2017, "Learning a model of facial shape and expression from 4D scans")
deforms a template mesh (5023 vertices, 9976 triangles) with linear identity and expression
blend shapes, pose-corrective blend shapes and linear blend skinning over 5 joints: 0 root
("global"), 1 neck, 2 jaw, 3 left eye, 4 right eye. :mod:`dpl_assets.face3d.flame_layer`
poses it.

Files (license-restricted, not downloadable here; see https://flame.is.tue.mpg.de):

- ``generic_model.pkl`` (FLAME 2020): a Python 2 pickle with chumpy arrays, read through
  :mod:`dpl_assets.face3d.safe_pickle` (chumpy is never imported, no code from the file runs).
  Keys used: ``v_template`` (V, 3), ``shapedirs`` (V, 3, 400: 300 identity then 100
  expression components), ``posedirs`` (V, 3, 36), ``J_regressor`` (5, V) sparse,
  ``kintree_table`` (2, 5), ``weights`` (V, 5), ``f`` (F, 3).
- ``landmark_embedding.npy`` (shipped with DECA/EMOCA): a pickled dict; ``full_lmk_faces_idx``
  (1, 68) and ``full_lmk_bary_coords`` (1, 68, 3) place the 68 iBUG landmarks on triangles.

Lengths are in metres, in FLAME's model frame (see :mod:`dpl_assets.face3d.flame_layer`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dpl_assets.face3d.safe_pickle import (
    ChumpyObject,
    PickleContentError,
    UnsafePickleError,
    load_npy_object,
    load_pickle,
)

FLAME_NUM_VERTICES = 5023
FLAME_NUM_FACES = 9976
FLAME_NUM_JOINTS = 5  # root, neck, jaw, left eye, right eye
FLAME_SHAPE_COMPONENTS = 300  # shapedirs[..., :300] identity, shapedirs[..., 300:] expression
NUM_LANDMARKS = 68

MODEL_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights", "f")
EMBEDDING_KEYS = ("full_lmk_faces_idx", "full_lmk_bary_coords")
_OFFICIAL_SOURCE = (
    "FLAME 2020 generic_model.pkl from https://flame.is.tue.mpg.de (free registration) and "
    "landmark_embedding.npy from DECA's or EMOCA's data folder"
)


class FlameLoadError(RuntimeError):
    """A FLAME model or landmark-embedding file is missing, unsafe or not the expected kind."""


@dataclass(frozen=True, eq=False)
class FlameModel:
    """The FLAME arrays needed to pose a head and place its 68 landmarks.

    V vertices, F faces, J = 5 joints, K blend-shape components, L = 68 landmarks; lengths in
    metres. Build with :meth:`load` (files) or :meth:`from_mappings` (already-read dicts),
    which validate every shape.

    Attributes:
        v_template: (V, 3) float64, the mean head.
        shapedirs: (V, 3, K) float64; components ``[:300]`` identity, ``[300:]`` expression.
        posedirs: (V, 3, 9 * (J - 1)) float64, pose-corrective offsets per ``(R - I)`` entry
            of the non-root joints (joint-major, then row-major 3x3).
        J_regressor: (J, V) ``scipy.sparse.csc_matrix``, joints from vertices.
        kintree_table: (2, J) int64; row 0 the parent of each joint (root's is ignored).
        weights: (V, J) float64 skinning weights (rows sum to 1 in FLAME).
        faces: (F, 3) int64 vertex indices (the file's ``f``).
        lmk_faces_idx: (L,) int64 face of each landmark.
        lmk_bary_coords: (L, 3) float64 barycentric weights of each landmark on its face.
    """

    v_template: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: Any  # scipy.sparse.csc_matrix (J, V)
    kintree_table: np.ndarray
    weights: np.ndarray
    faces: np.ndarray
    lmk_faces_idx: np.ndarray
    lmk_bary_coords: np.ndarray

    @property
    def num_vertices(self) -> int:
        """V, the template's vertex count (5023 for FLAME)."""
        return int(self.v_template.shape[0])

    @property
    def parents(self) -> np.ndarray:
        """(J,) int64 parent joint of each joint, -1 for the root."""
        parents = self.kintree_table[0].astype(np.int64)
        parents[0] = -1  # FLAME stores 2**32 - 1 there
        return parents

    @classmethod
    def load(
        cls,
        model_path: str | os.PathLike[str],
        landmark_embedding_path: str | os.PathLike[str],
        *,
        num_vertices: int | None = FLAME_NUM_VERTICES,
    ) -> FlameModel:
        """Read and validate ``generic_model.pkl`` and ``landmark_embedding.npy``.

        Args:
            num_vertices: required vertex count (5023 for FLAME); None accepts any consistent
                mesh (for small test models).

        Raises:
            FlameLoadError: a file is missing, is not a pickle/.npy, references code outside
                the safe loader's allow-list, lacks keys (named) or has wrong shapes.
        """
        model = _read_file(model_path, "FLAME model", load_pickle)
        embedding = _read_file(landmark_embedding_path, "landmark embedding", load_npy_object)
        return cls.from_mappings(
            model,
            embedding,
            num_vertices=num_vertices,
            model_source=os.fspath(model_path),
            embedding_source=os.fspath(landmark_embedding_path),
        )

    @classmethod
    def from_mappings(
        cls,
        model: Any,
        embedding: Any,
        *,
        num_vertices: int | None = FLAME_NUM_VERTICES,
        model_source: str = "FLAME model",
        embedding_source: str = "landmark embedding",
    ) -> FlameModel:
        """Validate already-read dicts (values: arrays or safe_pickle stand-ins).

        ``model`` holds :data:`MODEL_KEYS`, ``embedding`` :data:`EMBEDDING_KEYS` (see the
        module docstring for their shapes); ``num_vertices`` as in :meth:`load`; the
        sources name the dicts in messages.

        Raises:
            FlameLoadError: missing keys (all named at once) or inconsistent shapes.
        """
        arrays = _require_keys(model, MODEL_KEYS, model_source)
        lmk = _require_keys(embedding, EMBEDDING_KEYS, embedding_source)
        v_template, shapedirs, posedirs, weights = _blend_arrays(arrays, num_vertices, model_source)
        n_verts = v_template.shape[0]
        regressor, kintree = _skeleton(arrays, n_verts, model_source)
        faces = _faces(arrays, n_verts, num_vertices, model_source)
        lmk_faces, lmk_bary = _landmark_embedding(lmk, faces.shape[0], embedding_source)
        return cls(
            v_template=v_template,
            shapedirs=shapedirs,
            posedirs=posedirs,
            J_regressor=regressor,
            kintree_table=kintree,
            weights=weights,
            faces=faces,
            lmk_faces_idx=lmk_faces,
            lmk_bary_coords=lmk_bary,
        )


def _invalid(source: str, message: str) -> FlameLoadError:
    return FlameLoadError(f"{source}: {message}; expected {_OFFICIAL_SOURCE}")


def _blend_arrays(
    arrays: Mapping[str, Any], num_vertices: int | None, source: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``v_template`` (V, 3), ``shapedirs`` (V, 3, K), ``posedirs`` (V, 3, 36) and skinning
    ``weights`` (V, J), float64, shapes checked against each other."""
    v_template = _float_array(arrays, "v_template", source)
    if v_template.ndim != 2 or v_template.shape[1] != 3:
        raise _invalid(source, f"v_template has shape {v_template.shape}, expected (V, 3)")
    n_verts = v_template.shape[0]
    if num_vertices is not None and n_verts != num_vertices:
        raise _invalid(source, f"v_template has {n_verts} vertices, FLAME has {num_vertices}")
    n_joints = FLAME_NUM_JOINTS
    shapedirs = _float_array(arrays, "shapedirs", source)
    if shapedirs.ndim != 3 or shapedirs.shape[:2] != (n_verts, 3):
        raise _invalid(source, f"shapedirs has shape {shapedirs.shape}, expected ({n_verts}, 3, K)")
    posedirs = _float_array(arrays, "posedirs", source)
    if posedirs.shape != (n_verts, 3, 9 * (n_joints - 1)):
        raise _invalid(
            source,
            f"posedirs has shape {posedirs.shape}, expected ({n_verts}, 3, {9 * (n_joints - 1)})",
        )
    weights = _float_array(arrays, "weights", source)
    if weights.shape != (n_verts, n_joints):
        raise _invalid(
            source, f"weights has shape {weights.shape}, expected ({n_verts}, {n_joints})"
        )
    return v_template, shapedirs, posedirs, weights


def _skeleton(arrays: Mapping[str, Any], n_verts: int, source: str) -> tuple[Any, np.ndarray]:
    """``J_regressor`` (J, V) sparse and ``kintree_table`` (2, J), parents before children."""
    n_joints = FLAME_NUM_JOINTS
    regressor = _sparse_regressor(arrays["J_regressor"], source)
    if regressor.shape != (n_joints, n_verts):
        raise _invalid(
            source, f"J_regressor has shape {regressor.shape}, expected ({n_joints}, {n_verts})"
        )
    kintree = _int_array(arrays, "kintree_table", source)
    if kintree.shape != (2, n_joints):
        raise _invalid(source, f"kintree_table has shape {kintree.shape}, expected (2, {n_joints})")
    parents = kintree[0]
    # Parents must precede children so one forward pass composes the chain.
    if any(not 0 <= parents[j] < j for j in range(1, n_joints)):
        raise _invalid(
            source, f"kintree_table parents {parents.tolist()} are not a tree in joint order"
        )
    return regressor, kintree


def _faces(
    arrays: Mapping[str, Any], n_verts: int, num_vertices: int | None, source: str
) -> np.ndarray:
    """``f`` (F, 3) int64 vertex indices within ``[0, n_verts)``."""
    faces = _int_array(arrays, "f", source)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise _invalid(source, f"f has shape {faces.shape}, expected (F, 3)")
    if num_vertices == FLAME_NUM_VERTICES and faces.shape[0] != FLAME_NUM_FACES:
        raise _invalid(source, f"f has {faces.shape[0]} faces, FLAME has {FLAME_NUM_FACES}")
    if faces.size and (faces.min() < 0 or faces.max() >= n_verts):
        raise _invalid(source, f"f indexes vertices outside [0, {n_verts})")
    return faces


def _landmark_embedding(
    lmk: Mapping[str, Any], n_faces: int, source: str
) -> tuple[np.ndarray, np.ndarray]:
    """Landmark faces (68,) int64 and barycentric coordinates (68, 3) float64."""
    lmk_faces = _int_array(lmk, "full_lmk_faces_idx", source)
    lmk_bary = _float_array(lmk, "full_lmk_bary_coords", source)
    # DECA stores them with a leading batch axis of 1.
    lmk_faces = lmk_faces.reshape(-1) if lmk_faces.ndim == 2 else lmk_faces
    lmk_bary = lmk_bary[0] if lmk_bary.ndim == 3 and lmk_bary.shape[0] == 1 else lmk_bary
    if lmk_faces.shape != (NUM_LANDMARKS,) or lmk_bary.shape != (NUM_LANDMARKS, 3):
        raise _invalid(
            source,
            f"full_lmk_faces_idx {lmk_faces.shape} and full_lmk_bary_coords "
            f"{lmk_bary.shape} must hold {NUM_LANDMARKS} landmarks (shapes (1, 68) and "
            "(1, 68, 3))",
        )
    if lmk_faces.min() < 0 or lmk_faces.max() >= n_faces:
        raise _invalid(
            source, f"full_lmk_faces_idx indexes faces outside [0, {n_faces}) of the model"
        )
    return lmk_faces, lmk_bary


def _read_file(path: str | os.PathLike[str], what: str, reader: Any) -> Any:
    if not Path(path).is_file():
        raise FlameLoadError(
            f"{what} file not found: {os.fspath(path)}; expected {_OFFICIAL_SOURCE}"
        )
    try:
        return reader(path)
    except UnsafePickleError as error:
        raise FlameLoadError(
            f"{what} file {os.fspath(path)} was refused by the safe loader: it references "
            f"{error.qualified_name}, which a FLAME file never needs (nothing was executed)"
        ) from error
    except Exception as error:
        # Whatever a malformed file makes the parser raise (UnpicklingError, EOFError,
        # ValueError incl. PickleContentError, KeyError, ...) means "not the expected file".
        kind = "a .npy object file" if reader is load_npy_object else "a pickle"
        raise FlameLoadError(
            f"{what} file {os.fspath(path)} is not {kind} of the expected kind "
            f"({type(error).__name__}: {error}); expected {_OFFICIAL_SOURCE}"
        ) from error


def _require_keys(mapping: Any, keys: tuple[str, ...], source: str) -> Mapping[str, Any]:
    if not isinstance(mapping, Mapping):
        raise FlameLoadError(
            f"{source}: holds a {type(mapping).__name__}, expected a dict with keys {list(keys)}"
        )
    missing = [key for key in keys if key not in mapping]
    if missing:
        raise FlameLoadError(
            f"{source}: missing keys {missing} (has {sorted(map(str, mapping))}); "
            f"expected {_OFFICIAL_SOURCE}"
        )
    return mapping


def _as_numpy(mapping: Mapping[str, Any], key: str, source: str) -> np.ndarray:
    import scipy.sparse  # here, as in _sparse_regressor: scipy loads in ~0.3 s

    value = mapping[key]
    try:
        if isinstance(value, ChumpyObject):
            return value.to_array()
        if scipy.sparse.issparse(value):
            return np.asarray(value.toarray())
        array = np.asarray(value)
    except PickleContentError as error:
        raise FlameLoadError(f"{source}: {key}: {error}") from error
    if array.dtype == object:
        raise FlameLoadError(f"{source}: {key} is not a numeric array ({type(value).__name__})")
    return array


def _float_array(mapping: Mapping[str, Any], key: str, source: str) -> np.ndarray:
    array = _as_numpy(mapping, key, source)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise FlameLoadError(f"{source}: {key} has dtype {array.dtype}, expected numbers")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise FlameLoadError(f"{source}: {key} contains NaN or infinite values")
    return array


def _int_array(mapping: Mapping[str, Any], key: str, source: str) -> np.ndarray:
    array = _as_numpy(mapping, key, source)
    if not np.issubdtype(array.dtype, np.integer):
        raise FlameLoadError(f"{source}: {key} has dtype {array.dtype}, expected integers")
    return array.astype(np.int64)


def _sparse_regressor(value: Any, source: str) -> Any:
    import scipy.sparse  # here: loading it with the module cost every process ~0.3 s

    if scipy.sparse.issparse(value):
        matrix = scipy.sparse.csc_matrix(value, dtype=np.float64)
    else:
        matrix = scipy.sparse.csc_matrix(
            _float_array({"J_regressor": value}, "J_regressor", source)
        )
    if not np.isfinite(matrix.data).all():
        raise FlameLoadError(f"{source}: J_regressor contains NaN or infinite values")
    return matrix
