"""The FLAME head model: safe loading of the official files and a batched LBS layer.

FLAME (Li et al. 2017) deforms a template mesh (5023 vertices, 9976 triangles) with linear
identity and expression blend shapes, pose-corrective blend shapes and linear blend
skinning over 5 joints: 0 root ("global"), 1 neck, 2 jaw, 3 left eye, 4 right eye.

Files (license-restricted, not downloadable here; see https://flame.is.tue.mpg.de):

- ``generic_model.pkl`` (FLAME 2020): a Python 2 pickle with chumpy arrays, read through
  :mod:`dpl_assets.nodes.safe_pickle` (chumpy is never imported, no code from the file runs).
  Keys used: ``v_template`` (V, 3), ``shapedirs`` (V, 3, 400: 300 identity then 100
  expression components), ``posedirs`` (V, 3, 36), ``J_regressor`` (5, V) sparse,
  ``kintree_table`` (2, 5), ``weights`` (V, 5), ``f`` (F, 3).
- ``landmark_embedding.npy`` (shipped with DECA/EMOCA): a pickled dict; ``full_lmk_faces_idx``
  (1, 68) and ``full_lmk_bary_coords`` (1, 68, 3) place the 68 iBUG landmarks on triangles.

Conventions (those of FLAME and of DECA/EMOCA, which produce the parameters):

- Coordinates: FLAME's model frame, right-handed, in **metres**: +x towards the subject's
  left (image right for a frontal face), +y up, +z out of the face (towards a frontal
  camera). Checked on DECA's FLAME head template with the landmark embedding: the outer
  corner of the subject's right eye (landmark 36) has x < 0, the chin lies below the eyes,
  the nose tip has the largest z.
- Pose: rotation vectors (axis-angle, **radians**; direction = axis, norm = angle,
  right-hand rule), the same as SciPy's ``Rotation.from_rotvec``. ``pose`` (N, 6) =
  ``[global (3), jaw (3)]``; neck and eye rotations are zero, as in DECA and the original
  tool. The global rotation turns the whole head about the root joint (regressed from the
  shaped template), the jaw about joint 2; a joint's world rotation is its parent's world
  rotation times its own (``R_jaw_world = R_global @ R_neck @ R_jaw``).
- No translation or camera is applied: outputs stay in the model frame. DECA's
  orthographic camera ``cam = (s, tx, ty)`` maps a point to normalized image coordinates
  ``(s * (x + tx), -s * (y + ty))`` (y flipped: image rows grow downwards), and pixels are
  ``(u + 1) * size / 2``.
- For comparison with Euler-angle head poses:
  ``Rotation.from_rotvec(pose[:, :3]).as_euler("XYZ", degrees=True)`` gives rotations about
  the model's x (pitch), y (yaw) and z (roll) axes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse
import torch
from torch import nn

from dpl_assets.nodes.safe_pickle import (
    ChumpyObject,
    PickleContentError,
    UnsafePickleError,
    load_npy_object,
    load_pickle,
)

FLAME_NUM_VERTICES = 5023
FLAME_NUM_FACES = 9976
FLAME_NUM_JOINTS = 5  # root, neck, jaw, left eye, right eye
FLAME_JAW_JOINT = 2
FLAME_SHAPE_COMPONENTS = 300  # shapedirs[..., :300] identity, shapedirs[..., 300:] expression
NUM_LANDMARKS = 68
POSE_DIM = 6  # global axis-angle (3) + jaw axis-angle (3)

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

        Raises:
            FlameLoadError: missing keys (all named at once) or inconsistent shapes.
        """
        arrays = _require_keys(model, MODEL_KEYS, model_source)
        lmk = _require_keys(embedding, EMBEDDING_KEYS, embedding_source)

        def fail(message: str, source: str = model_source) -> FlameLoadError:
            return FlameLoadError(f"{source}: {message}; expected {_OFFICIAL_SOURCE}")

        v_template = _float_array(arrays, "v_template", model_source)
        if v_template.ndim != 2 or v_template.shape[1] != 3:
            raise fail(f"v_template has shape {v_template.shape}, expected (V, 3)")
        n_verts = v_template.shape[0]
        if num_vertices is not None and n_verts != num_vertices:
            raise fail(f"v_template has {n_verts} vertices, FLAME has {num_vertices}")
        n_joints = FLAME_NUM_JOINTS

        shapedirs = _float_array(arrays, "shapedirs", model_source)
        if shapedirs.ndim != 3 or shapedirs.shape[:2] != (n_verts, 3):
            raise fail(f"shapedirs has shape {shapedirs.shape}, expected ({n_verts}, 3, K)")
        posedirs = _float_array(arrays, "posedirs", model_source)
        if posedirs.shape != (n_verts, 3, 9 * (n_joints - 1)):
            raise fail(
                f"posedirs has shape {posedirs.shape}, expected ({n_verts}, 3, "
                f"{9 * (n_joints - 1)})"
            )
        weights = _float_array(arrays, "weights", model_source)
        if weights.shape != (n_verts, n_joints):
            raise fail(f"weights has shape {weights.shape}, expected ({n_verts}, {n_joints})")

        regressor = _sparse_regressor(arrays["J_regressor"], model_source)
        if regressor.shape != (n_joints, n_verts):
            raise fail(f"J_regressor has shape {regressor.shape}, expected ({n_joints}, {n_verts})")
        kintree = _int_array(arrays, "kintree_table", model_source)
        if kintree.shape != (2, n_joints):
            raise fail(f"kintree_table has shape {kintree.shape}, expected (2, {n_joints})")
        parents = kintree[0]
        # Parents must precede children so one forward pass composes the chain.
        if any(not 0 <= parents[j] < j for j in range(1, n_joints)):
            raise fail(f"kintree_table parents {parents.tolist()} are not a tree in joint order")
        faces = _int_array(arrays, "f", model_source)
        if faces.ndim != 2 or faces.shape[1] != 3:
            raise fail(f"f has shape {faces.shape}, expected (F, 3)")
        if num_vertices == FLAME_NUM_VERTICES and faces.shape[0] != FLAME_NUM_FACES:
            raise fail(f"f has {faces.shape[0]} faces, FLAME has {FLAME_NUM_FACES}")
        if faces.size and (faces.min() < 0 or faces.max() >= n_verts):
            raise fail(f"f indexes vertices outside [0, {n_verts})")

        lmk_faces = _int_array(lmk, "full_lmk_faces_idx", embedding_source)
        lmk_bary = _float_array(lmk, "full_lmk_bary_coords", embedding_source)
        # DECA stores them with a leading batch axis of 1.
        lmk_faces = lmk_faces.reshape(-1) if lmk_faces.ndim == 2 else lmk_faces
        lmk_bary = lmk_bary[0] if lmk_bary.ndim == 3 and lmk_bary.shape[0] == 1 else lmk_bary
        if lmk_faces.shape != (NUM_LANDMARKS,) or lmk_bary.shape != (NUM_LANDMARKS, 3):
            raise fail(
                f"full_lmk_faces_idx {lmk_faces.shape} and full_lmk_bary_coords "
                f"{lmk_bary.shape} must hold {NUM_LANDMARKS} landmarks (shapes (1, 68) and "
                "(1, 68, 3))",
                embedding_source,
            )
        if lmk_faces.min() < 0 or lmk_faces.max() >= faces.shape[0]:
            raise fail(
                f"full_lmk_faces_idx indexes faces outside [0, {faces.shape[0]}) of the model",
                embedding_source,
            )
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
    if scipy.sparse.issparse(value):
        matrix = scipy.sparse.csc_matrix(value, dtype=np.float64)
    else:
        matrix = scipy.sparse.csc_matrix(
            _float_array({"J_regressor": value}, "J_regressor", source)
        )
    if not np.isfinite(matrix.data).all():
        raise FlameLoadError(f"{source}: J_regressor contains NaN or infinite values")
    return matrix


def axis_angle_to_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula: rotation vectors (..., 3) in radians -> rotation matrices (..., 3, 3).

    ``R = I + sinc(θ) K + ½ sinc²(θ/2) K²`` with ``K`` the cross-product matrix of the
    (unnormalized) vector and θ its norm. Written with sinc so that θ = 0 gives exactly I and
    finite gradients (DECA instead nudges the vector by 1e-8, which is not exact at zero).
    """
    theta = torch.linalg.vector_norm(rotvec, dim=-1)[..., None, None]
    x, y, z = rotvec.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1)
    skew = skew.reshape(*rotvec.shape[:-1], 3, 3)
    a = torch.sinc(theta / torch.pi)  # sin(θ)/θ
    b = 0.5 * torch.sinc(theta / (2 * torch.pi)) ** 2  # (1 - cos θ)/θ², without cancellation
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device)
    return eye + a * skew + b * (skew @ skew)


class FlameOutput(NamedTuple):
    """FLAME layer outputs, model frame, metres."""

    verts: torch.Tensor  # (N, V, 3)
    landmarks3d: torch.Tensor  # (N, 68, 3)


class FlameLayer(nn.Module):
    """Batched FLAME: (shape, exp, pose) -> posed vertices and the 68 3D landmarks.

    Args:
        model: the loaded :class:`FlameModel`.
        n_shape: identity coefficients used (the first ``n_shape`` of 300; DECA/EMOCA: 100).
        n_exp: expression coefficients used (the first ``n_exp`` of 100; DECA/EMOCA: 50).
        dtype: computation and output dtype (float32 like the original).

    Every array is a buffer, so ``layer.to(device)`` moves the model; inputs are moved to
    the layer's device and dtype. See the module docstring for axes, units and angles.
    """

    v_template: torch.Tensor
    shapedirs: torch.Tensor
    posedirs: torch.Tensor
    joint_template: torch.Tensor
    joint_shapedirs: torch.Tensor
    lbs_weights: torch.Tensor
    weight_sum_excess: torch.Tensor
    faces: torch.Tensor
    lmk_vertex_idx: torch.Tensor
    lmk_bary_coords: torch.Tensor

    def __init__(
        self,
        model: FlameModel,
        n_shape: int = 100,
        n_exp: int = 50,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        n_components = model.shapedirs.shape[2]
        n_exp_available = n_components - FLAME_SHAPE_COMPONENTS
        if not 0 <= n_shape <= FLAME_SHAPE_COMPONENTS:
            raise ValueError(f"n_shape must be in [0, {FLAME_SHAPE_COMPONENTS}], got {n_shape}")
        if not 0 <= n_exp <= n_exp_available:
            raise ValueError(
                f"n_exp must be in [0, {max(n_exp_available, 0)}] for a model with "
                f"{n_components} blend shapes, got {n_exp}"
            )
        self.n_shape = n_shape
        self.n_exp = n_exp
        self.dtype = dtype
        n_verts = model.num_vertices
        start = FLAME_SHAPE_COMPONENTS
        dirs = np.concatenate(
            [model.shapedirs[:, :, :n_shape], model.shapedirs[:, :, start : start + n_exp]], axis=2
        )  # (V, 3, K)
        n_pose = model.posedirs.shape[2]

        def buffer(name: str, array: np.ndarray, buffer_dtype: torch.dtype = dtype) -> None:
            self.register_buffer(
                name, torch.as_tensor(np.ascontiguousarray(array), dtype=buffer_dtype)
            )

        buffer("v_template", model.v_template)
        # Flattened (K, V*3) and (P, V*3) so blend shapes are one matmul per batch.
        buffer("shapedirs", dirs.reshape(n_verts * 3, -1).T)
        buffer("posedirs", model.posedirs.reshape(n_verts * 3, n_pose).T)
        # Joints are linear in the shaped template, so regress them from the template and
        # blend shapes once here (float64) instead of from every shaped mesh.
        regressor = model.J_regressor
        buffer("joint_template", regressor @ model.v_template)  # (J, 3)
        n_joints = regressor.shape[0]
        joint_dirs = np.asarray(regressor @ dirs.reshape(n_verts, -1)).reshape(n_joints, 3, -1)
        buffer("joint_shapedirs", joint_dirs.reshape(n_joints * 3, -1).T)  # (K, J*3)
        buffer("lbs_weights", model.weights)
        buffer("weight_sum_excess", model.weights.sum(axis=1, keepdims=True) - 1.0)  # (V, 1)
        buffer("faces", model.faces, torch.long)
        buffer("lmk_vertex_idx", model.faces[model.lmk_faces_idx], torch.long)  # (L, 3)
        buffer("lmk_bary_coords", model.lmk_bary_coords)
        self.parents: list[int] = model.parents.tolist()

    def forward(self, shape: torch.Tensor, exp: torch.Tensor, pose: torch.Tensor) -> FlameOutput:
        """Pose a batch of heads.

        Args:
            shape: (N, n_shape) identity coefficients.
            exp: (N, n_exp) expression coefficients.
            pose: (N, 6) axis-angle radians, ``[global (3), jaw (3)]``.

        Returns:
            ``FlameOutput(verts (N, V, 3), landmarks3d (N, 68, 3))`` in metres, model frame.
        """
        n = shape.shape[0] if shape.ndim == 2 else -1
        expected = {
            "shape": (shape, self.n_shape),
            "exp": (exp, self.n_exp),
            "pose": (pose, POSE_DIM),
        }
        for name, (tensor, width) in expected.items():
            if tensor.ndim != 2 or tensor.shape != (n, width):
                raise ValueError(
                    f"{name} must have shape (N, {width}) with the same N as shape, "
                    f"got {tuple(tensor.shape)}"
                )
        device = self.v_template.device
        betas = torch.cat([shape, exp], dim=1).to(device=device, dtype=self.dtype)
        pose = pose.to(device=device, dtype=self.dtype)

        n_verts = self.v_template.shape[0]
        v_shaped = self.v_template + (betas @ self.shapedirs).view(n, n_verts, 3)
        joints = self.joint_template + (betas @ self.joint_shapedirs).view(n, -1, 3)

        # Full per-joint pose: global, neck (0), jaw, eyes (0, 0).
        zeros = pose.new_zeros(n, 3)
        rotvecs = torch.stack([pose[:, :3], zeros, pose[:, 3:], zeros, zeros], dim=1)
        local = axis_angle_to_matrix(rotvecs)  # (N, J, 3, 3)
        eye = torch.eye(3, dtype=self.dtype, device=device)
        pose_feature = (local[:, 1:] - eye).reshape(n, -1)  # (N, 36), non-root joints only
        v_posed = v_shaped + (pose_feature @ self.posedirs).view(n, n_verts, 3)

        rotations, translations = self._world_transforms(local, joints)
        # Classic LBS Σ_j w_j (R_j v + t_j), rewritten as
        # v + (Σ_j w_j - 1) v + Σ_j w_j ((R_j - I) v + t_j): the same numbers, but the rest
        # pose gives exactly v (FLAME's weights sum to 1, so the middle term is ~1e-16 v).
        n_joints = rotations.shape[1]
        blended = (self.lbs_weights @ (rotations - eye).reshape(n, n_joints, 9)).view(
            n, n_verts, 3, 3
        )
        verts = (
            v_posed
            + self.weight_sum_excess * v_posed
            + (blended @ v_posed.unsqueeze(-1)).squeeze(-1)
            + self.lbs_weights @ translations
        )
        corners = verts[:, self.lmk_vertex_idx]  # (N, L, 3 corners, 3 coords)
        landmarks = torch.einsum("nlkc,lk->nlc", corners, self.lmk_bary_coords)
        return FlameOutput(verts=verts, landmarks3d=landmarks)

    def _world_transforms(
        self, local: torch.Tensor, joints: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """World rotations (N, J, 3, 3) and translations (N, J, 3) with x -> R_j x + t_j.

        A joint rotates about its rest position J_j: t_j = P_j - R_j J_j, with P_j its posed
        position. Since P_j = R_parent J_j + t_parent, t_j = t_parent + (R_parent - R_j) J_j
        (root: t_0 = (I - R_0) J_0): differences of rotations, so zero for the rest pose.
        """
        eye = torch.eye(3, dtype=local.dtype, device=local.device)
        rotations: list[torch.Tensor] = []
        translations: list[torch.Tensor] = []
        for j, parent in enumerate(self.parents):
            rest = joints[:, j].unsqueeze(-1)  # (N, 3, 1)
            if parent < 0:
                rotation = local[:, j]
                translation = ((eye - rotation) @ rest).squeeze(-1)
            else:
                rotation = rotations[parent] @ local[:, j]
                offset = ((rotations[parent] - rotation) @ rest).squeeze(-1)
                translation = translations[parent] + offset
            rotations.append(rotation)
            translations.append(translation)
        return torch.stack(rotations, dim=1), torch.stack(translations, dim=1)

    @torch.inference_mode()
    def forward_numpy(
        self, shape: np.ndarray, exp: np.ndarray, pose: np.ndarray, batch_size: int = 64
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`forward` over NumPy arrays in batches of ``batch_size`` frames.

        Returns float32 ``verts`` (N, V, 3) and ``landmarks3d`` (N, 68, 3), on the CPU.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(shape)
        n_verts = self.v_template.shape[0]
        verts = np.empty((n, n_verts, 3), np.float32)
        landmarks = np.empty((n, NUM_LANDMARKS, 3), np.float32)
        for start in range(0, n, batch_size):
            window = slice(start, start + batch_size)
            out = self(
                torch.from_numpy(np.asarray(shape[window])),
                torch.from_numpy(np.asarray(exp[window])),
                torch.from_numpy(np.asarray(pose[window])),
            )
            verts[window] = out.verts.float().cpu().numpy()
            landmarks[window] = out.landmarks3d.float().cpu().numpy()
        return verts, landmarks
