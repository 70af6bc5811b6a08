"""Load FLAME's pickled model files without chumpy and without running code from the file.

FLAME's ``generic_model.pkl`` is a Python 2 pickle whose arrays are partly ``chumpy.ch.Ch``
objects, and DECA/EMOCA's ``landmark_embedding.npy`` is a 0-d object array (a pickled dict,
some values torch tensors). A plain ``pickle.load`` would import chumpy (unmaintained, and
broken on current NumPy) and, worse, call any global the file names: a pickle is a program.

:class:`RestrictedUnpickler` resolves globals through an allow-list only:

- NumPy's array, dtype and scalar reconstruction (both ``numpy.core`` and ``numpy._core``
  spellings), which only turn bytes into arrays;
- ``chumpy.*`` classes map to :class:`ChumpyObject`, an inert stand-in whose
  ``__setstate__`` keeps the pickled state (a ``Ch`` keeps its array under ``x``); chumpy is
  never imported;
- ``scipy.sparse`` CSC/CSR matrices map to :class:`SparseMatrixState`, rebuilt afterwards
  as a validated ``scipy.sparse`` matrix (scipy's own class never sees the raw state);
- ``set``/``frozenset`` (chumpy pickles its ``_dirty_vars`` as a set), ``collections.
  OrderedDict`` (torch pickles empty backward hooks as one) and ``_codecs.encode`` limited to
  latin-1 (how Python 3 writes ``bytes`` at protocol 2);
- optionally (``allow_torch_tensors``) torch tensors, whose storage bytes are read with
  the face-3D code's one safe torch loader (:func:`dpl_assets.face3d.weights.safe_load_checkpoint`,
  ``torch.load(..., weights_only=True)``).

Any other global raises :class:`UnsafePickleError` naming ``module.name``, before anything
from the file is called. :func:`to_plain` then turns the stand-ins into NumPy arrays and
SciPy matrices.
"""

from __future__ import annotations

import io
import os
import pickle
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, ClassVar

import numpy as np
from numpy.lib import format as npy_format

__all__ = [
    "ChumpyObject",
    "PickleContentError",
    "RestrictedUnpickler",
    "SparseMatrixState",
    "UnsafePickleError",
    "load_npy_object",
    "load_pickle",
    "safe_loads",
    "to_plain",
]


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list; ``qualified_name`` is ``module.name``."""

    def __init__(self, qualified_name: str, reason: str = "not on the allow-list"):
        self.qualified_name = qualified_name
        super().__init__(f"refusing to load {qualified_name!r} from a pickle: {reason}")


class PickleContentError(ValueError):
    """The pickle loaded safely but holds something that cannot become a plain array."""


class _StateOnly:
    """Base of the inert stand-ins: built empty, then given the pickled ``state`` dict.

    NEWOBJ passes the class's ``__getnewargs__`` and a constructor call its arguments:
    both are ignored, nothing from the file is interpreted but the state dict.
    """

    state: dict[str, Any]

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        instance = super().__new__(cls)
        instance.state = {}
        return instance

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Arguments are ignored: the object is restored from its state only."""

    def pickled_class(self) -> str:
        """The module.name the file pickled this object as (for messages)."""
        raise NotImplementedError

    def __setstate__(self, state: Any) -> None:
        # Protocol 2 may hand (dict_state, slot_state); only the dict is used.
        if isinstance(state, tuple) and len(state) == 2:
            state = state[0]
        if not isinstance(state, dict):
            raise PickleContentError(
                f"{self.pickled_class()} state is a {type(state).__name__}, expected a dict"
            )
        self.state = dict(state)


class ChumpyObject(_StateOnly):
    """Inert stand-in for a pickled chumpy object; chumpy's own code never runs.

    ``chumpy_class`` is the pickled class (``"chumpy.ch.Ch"``); ``state`` its pickled
    ``__dict__``. A plain ``Ch`` stores its value as ``state["x"]``; other chumpy classes
    (``ch_ops``, ``reordering``) are lazy expressions over other terms and hold no array.
    """

    chumpy_class: ClassVar[str] = "chumpy.ch.Ch"

    def pickled_class(self) -> str:
        return self.chumpy_class

    def to_array(self) -> np.ndarray:
        """The stored array (``state["x"]``) as NumPy; a lazy expression raises."""
        value = self.state.get("x")
        if isinstance(value, ChumpyObject):
            return value.to_array()
        if isinstance(value, np.ndarray | np.generic | int | float | list):
            return np.asarray(value)
        terms = sorted(key for key in self.state if not key.startswith("_"))
        raise PickleContentError(
            f"{self.chumpy_class} is a lazy chumpy expression (terms {terms}) with no stored "
            "array; only chumpy could evaluate it"
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.chumpy_class} keys={sorted(self.state)}>"


class SparseMatrixState(_StateOnly):
    """Pickled state of a ``scipy.sparse`` CSC/CSR matrix, rebuilt by :meth:`to_scipy`."""

    sparse_format: ClassVar[str] = "csc"
    scipy_class: ClassVar[str] = "scipy.sparse.csc_matrix"

    def pickled_class(self) -> str:
        return self.scipy_class

    def to_scipy(self) -> Any:
        """A new ``scipy.sparse.csc_matrix``/``csr_matrix``, fully format-checked."""
        import scipy.sparse

        arrays = {}
        for key in ("data", "indices", "indptr"):
            value = self.state.get(key)
            if not isinstance(value, np.ndarray):
                raise PickleContentError(f"{self.scipy_class} state has no array {key!r}")
            arrays[key] = value
        # Old SciPy (the Python 2 era of FLAME's file) kept the shape in `_shape`.
        shape = self.state.get("_shape", self.state.get("shape"))
        if not (
            isinstance(shape, tuple)
            and len(shape) == 2
            and all(isinstance(n, int | np.integer) and n >= 0 for n in shape)
        ):
            raise PickleContentError(f"{self.scipy_class} state has no valid shape: {shape!r}")
        build = scipy.sparse.csc_matrix if self.sparse_format == "csc" else scipy.sparse.csr_matrix
        try:
            matrix = build(
                (arrays["data"], arrays["indices"], arrays["indptr"]),
                shape=(int(shape[0]), int(shape[1])),
            )
            # Out-of-range indices would otherwise surface later as wrong numbers or crashes.
            matrix.check_format(full_check=True)
        except (ValueError, TypeError) as error:
            raise PickleContentError(
                f"{self.scipy_class} state is inconsistent: {error}"
            ) from error
        return matrix


_NDARRAY_TOKENS: set[int] = set()  # ids of the checked ndarray stand-ins handed out


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """NumPy's reconstruction helpers, taken from NumPy itself (no import by name)."""
    reconstruct: Any = np.zeros(1).__reduce__()[0]
    scalar: Any = np.float64(0).__reduce__()[0]
    frombuffer: Any = np.zeros(1).__reduce_ex__(5)[0]  # protocol-5 pickles of arrays

    def checked_ndarray(*args: Any, **kwargs: Any) -> Any:
        # Called directly, ndarray(shape, dtype, buffer) would read raw bytes as object
        # pointers: refuse object dtypes before anything is built.
        dtype = np.dtype(args[1] if len(args) > 1 else kwargs.get("dtype", float))
        if dtype.hasobject:
            raise UnsafePickleError("numpy.ndarray", "object dtype from a raw buffer")
        return np.ndarray(*args, **kwargs)

    checked_ndarray.__name__ = "ndarray"
    _NDARRAY_TOKENS.add(id(checked_ndarray))

    def checked_reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
        # Only plain ndarrays: a subclass would run its own __array_finalize__ etc.
        if subtype is not np.ndarray and id(subtype) not in _NDARRAY_TOKENS:
            raise UnsafePickleError("numpy.core.multiarray._reconstruct", "subtype not ndarray")
        return reconstruct(np.ndarray, shape, dtype)

    table: dict[tuple[str, str], Any] = {("numpy", "ndarray"): checked_ndarray}
    table[("numpy", "dtype")] = np.dtype
    for core in ("numpy.core", "numpy._core"):
        table[(f"{core}.multiarray", "_reconstruct")] = checked_reconstruct
        table[(f"{core}.multiarray", "scalar")] = scalar
        table[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return table


def _latin1_encode(text: Any, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as Python 3 uses it for ``bytes`` at protocol < 3, and nothing else."""
    if not isinstance(text, str) or encoding.lower().replace("_", "-") not in {
        "latin1",
        "latin-1",
        "iso-8859-1",
    }:
        raise UnsafePickleError("_codecs.encode", f"only latin-1 text is allowed, got {encoding!r}")
    return text.encode("latin-1")


def _load_storage_bytes(data: Any) -> Any:
    """A torch storage from the bytes torch pickles it as, via the face-3D code's one safe
    torch loader (:func:`dpl_assets.face3d.weights.safe_load_checkpoint`)."""
    import torch

    from dpl_assets.face3d.weights import safe_load_checkpoint

    if not isinstance(data, bytes):
        raise UnsafePickleError("torch.storage._load_from_bytes", "argument is not bytes")
    # torch's own implementation uses weights_only=False, i.e. an unrestricted nested pickle.
    storage = safe_load_checkpoint(io.BytesIO(data), label="a torch storage inside a pickle")
    if not isinstance(storage, torch.storage.TypedStorage):
        raise UnsafePickleError("torch.storage._load_from_bytes", "bytes are not a storage")
    return storage


def _rebuild_tensor(
    storage: Any,
    offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> Any:
    """``torch._utils._rebuild_tensor_v2`` limited to a storage view without hooks."""
    import torch

    if not isinstance(storage, torch.storage.TypedStorage):
        raise UnsafePickleError("torch._utils._rebuild_tensor_v2", "storage is not a storage")
    if backward_hooks or metadata:
        raise UnsafePickleError("torch._utils._rebuild_tensor_v2", "hooks or metadata present")
    size, stride, offset = tuple(int(v) for v in size), tuple(int(v) for v in stride), int(offset)
    if len(size) != len(stride) or offset < 0 or min((*size, *stride), default=0) < 0:
        raise UnsafePickleError("torch._utils._rebuild_tensor_v2", "bad size, stride or offset")
    # set_ would grow the storage to fit: the view must lie inside it (no uninitialised
    # memory, no huge allocations from a small file).
    last = (
        offset + sum((n - 1) * st for n, st in zip(size, stride, strict=True)) if all(size) else -1
    )
    # elements of the storage (TypedStorage.size() warns that TypedStorage is deprecated)
    if last >= storage._untyped_storage.nbytes() // storage.dtype.itemsize:
        raise UnsafePickleError("torch._utils._rebuild_tensor_v2", "view outside its storage")
    tensor = torch.empty((0,), dtype=storage.dtype)
    tensor.set_(storage._untyped_storage, offset, size, stride)
    return tensor


def _set_like(kind: type) -> Callable[..., Any]:
    def build(items: Any = ()) -> Any:
        if not isinstance(items, list | tuple | set | frozenset):
            raise UnsafePickleError(f"builtins.{kind.__name__}", "argument is not a sequence")
        return kind(items)

    return build


_CHUMPY_MODULES = frozenset(
    {"chumpy", "chumpy.ch", "chumpy.ch_ops", "chumpy.reordering", "chumpy.linalg", "chumpy.logic"}
)
_SPARSE_CLASSES = {
    f"{module}.{fmt}_{kind}": fmt
    for fmt in ("csc", "csr")
    for kind in ("matrix", "array")
    for module in ("scipy.sparse", f"scipy.sparse.{fmt}", f"scipy.sparse._{fmt}")
}
_TORCH_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves globals only from an allow-list (see the module docstring).

    Args:
        file: binary file positioned at the pickle.
        allow_torch_tensors: also rebuild torch tensors (DECA's landmark embedding has some).

    Python 2 pickles need ``encoding="latin1"`` (the default here): their ``str`` objects hold
    raw bytes, e.g. array data, which NumPy re-encodes from latin-1.
    """

    def __init__(
        self, file: IO[bytes], *, allow_torch_tensors: bool = False, encoding: str = "latin1"
    ):
        super().__init__(file, encoding=encoding)
        self._allowed: dict[tuple[str, str], Any] = _numpy_globals()
        for builtins_name in ("builtins", "__builtin__"):  # Python 2 spelling
            self._allowed[(builtins_name, "set")] = _set_like(set)
            self._allowed[(builtins_name, "frozenset")] = _set_like(frozenset)
            # Only as the `base` argument of copyreg._reconstructor (protocol 0/1 objects).
            self._allowed[(builtins_name, "object")] = object
        self._allowed[("collections", "OrderedDict")] = OrderedDict
        self._allowed[("_codecs", "encode")] = _latin1_encode
        for copyreg_name in ("copyreg", "copy_reg"):
            self._allowed[(copyreg_name, "_reconstructor")] = self._reconstructor
        if allow_torch_tensors:
            self._allowed.update(_TORCH_GLOBALS)
        self._standins: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        qualified = f"{module}.{name}"
        found = self._allowed.get((module, name))
        if found is not None:
            return found
        if module in _CHUMPY_MODULES and name.isidentifier() and not name.startswith("_"):
            return self._standin(qualified, ChumpyObject, {"chumpy_class": qualified})
        fmt = _SPARSE_CLASSES.get(qualified)
        if fmt is not None:
            attributes = {"sparse_format": fmt, "scipy_class": qualified}
            return self._standin(qualified, SparseMatrixState, attributes)
        raise UnsafePickleError(qualified)

    def _standin(self, qualified: str, base: type, attributes: dict[str, str]) -> type:
        # One subclass per pickled class, so NEWOBJ (which passes only the class) keeps the name.
        if qualified not in self._standins:
            name = qualified.rsplit(".", 1)[-1]
            self._standins[qualified] = type(name, (base,), {**attributes, "__module__": __name__})
        return self._standins[qualified]

    def _reconstructor(self, cls: Any, base: Any, state: Any) -> Any:
        """``copyreg._reconstructor`` (protocol 0/1 objects), for our stand-ins only."""
        if not (
            isinstance(cls, type)
            and cls in self._standins.values()
            and base is object
            and state is None
        ):
            raise UnsafePickleError("copyreg._reconstructor", f"not allowed for {cls!r}")
        return object.__new__(cls)


def safe_loads(data: bytes, *, allow_torch_tensors: bool = False) -> Any:
    """Unpickle ``data`` restrictedly; stand-ins are kept (see :func:`to_plain`)."""
    return RestrictedUnpickler(io.BytesIO(data), allow_torch_tensors=allow_torch_tensors).load()


def to_plain(obj: Any) -> Any:
    """Replace stand-ins inside ``obj`` (dicts, lists, tuples) by NumPy/SciPy objects.

    ``ChumpyObject`` with a stored array -> ``np.ndarray`` (lazy expressions are left as they
    are: callers that need them get a clear error from :meth:`ChumpyObject.to_array`);
    ``SparseMatrixState`` -> ``scipy.sparse`` matrix; torch tensors -> ``np.ndarray``.
    """
    seen: dict[int, Any] = {}

    def convert(value: Any) -> Any:
        key = id(value)
        if key in seen:  # pickles may share (or cycle through) objects
            return seen[key]
        if isinstance(value, ChumpyObject):
            try:
                result: Any = value.to_array()
            except PickleContentError:
                result = value
        elif isinstance(value, SparseMatrixState):
            result = value.to_scipy()
        elif isinstance(value, dict):
            result = type(value)() if isinstance(value, OrderedDict) else {}
            seen[key] = result
            for item_key, item in value.items():
                result[item_key] = convert(item)
            return result
        elif isinstance(value, list):
            result = []
            seen[key] = result
            result.extend(convert(item) for item in value)
            return result
        elif isinstance(value, tuple):
            result = tuple(convert(item) for item in value)
        elif type(value).__module__ == "torch" and type(value).__name__ == "Tensor":
            result = value.detach().cpu().numpy()
        elif isinstance(value, np.ndarray) and value.dtype == object:
            result = np.empty(value.shape, dtype=object)
            seen[key] = result
            for index, item in np.ndenumerate(value):
                result[index] = convert(item)
            return result
        else:
            result = value
        seen[key] = result
        return result

    return convert(obj)


def load_pickle(path: str | os.PathLike[str], *, allow_torch_tensors: bool = False) -> Any:
    """Read a pickle file restrictedly and return it with stand-ins converted (:func:`to_plain`).

    Raises:
        UnsafePickleError: the file names a global outside the allow-list (nothing it names
            was called).
        pickle.UnpicklingError, EOFError, ValueError: the file is not a valid pickle.
    """
    with open(path, "rb") as file:
        raw = RestrictedUnpickler(file, allow_torch_tensors=allow_torch_tensors).load()
    return to_plain(raw)


def load_npy_object(path: str | os.PathLike[str]) -> Any:
    """Read a ``.npy`` holding an object array without ``allow_pickle`` (e.g. DECA's
    ``landmark_embedding.npy``: a 0-d object array holding a dict).

    The header is parsed with ``numpy.lib.format``; the pickled array after it goes through
    :class:`RestrictedUnpickler` (torch tensors allowed, converted to NumPy). Returns the held
    object for a 0-d array, else the array; non-object arrays are read with
    ``np.load(allow_pickle=False)``.

    Raises:
        ValueError: not a ``.npy`` file, or its header does not match its content.
        UnsafePickleError: the pickled content names a global outside the allow-list.
    """
    with open(path, "rb") as file:
        version = npy_format.read_magic(file)
        if version == (1, 0):
            shape, _fortran, dtype = npy_format.read_array_header_1_0(file)
        elif version in {(2, 0), (3, 0)}:
            # 3.0 differs from 2.0 only by a UTF-8 header; object headers are ASCII.
            shape, _fortran, dtype = npy_format.read_array_header_2_0(file)
        else:
            raise ValueError(f"{os.fspath(path)}: unsupported .npy version {version}")
        if not dtype.hasobject:
            return np.load(Path(path), allow_pickle=False)
        array = RestrictedUnpickler(file, allow_torch_tensors=True).load()
    if not isinstance(array, np.ndarray) or array.shape != tuple(shape):
        raise ValueError(
            f"{os.fspath(path)}: header promises an object array of shape {shape}, "
            f"the content is {type(array).__name__} {getattr(array, 'shape', '')}"
        )
    plain = to_plain(array)
    return plain[()] if plain.shape == () else plain
