"""Modules the heavy libraries import at their top only for helpers this project never
calls, loaded when first used instead.

mediapipe's ``solutions`` package imports ``drawing_utils``, which imports
``matplotlib.pyplot`` for one plotting helper (``plot_landmarks``): pyplot, its backend
machinery and font manager cost ~0.16 s of CPU per process (of mediapipe's ~0.3 s), in
``dpl run`` and in each of its workers. Inside :func:`deferred` (around the heavy imports
of :func:`dpl_assets.collector.import_modules`) the modules of :data:`DEFERRED` are made
by the standard library's :class:`importlib.util.LazyLoader`: the module object is there at
once, and its code runs at the first access to any of its attributes (``plt.figure``, or
a later ``import matplotlib.pyplot``, which reads its ``__spec__``), in the thread making
that access. A module imported before, or outside the block, is an ordinary one.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Iterable, Iterator, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

DEFERRED: tuple[str, ...] = ("matplotlib.pyplot",)
"""Imported by libraries at their top, used by none of this project's code paths."""


class _DeferringFinder(importlib.abc.MetaPathFinder):
    """Finds the modules of ``names`` as the path finder does, with a lazy loader."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(names)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in self.names:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None  # not an ordinary module file: the usual import decides
        spec.loader = importlib.util.LazyLoader(spec.loader)
        return spec


@contextlib.contextmanager
def deferred(names: Iterable[str] = DEFERRED) -> Iterator[None]:
    """Modules of ``names`` first imported inside the block (by any thread) load lazily."""
    finder = _DeferringFinder(names)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
