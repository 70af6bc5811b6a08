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

The finder is put in front of ``sys.meta_path`` once, by rebinding the list (an import
going on in another thread keeps iterating the list it started with; inserting into and
removing from the live list could make it skip a finder), and is switched on and off by a
count of the blocks open. Python before 3.12.3/3.13 (gh-114763) does not lock a lazy
module's loading: two threads making the first access at the same moment may see it half
loaded. Nothing here uses pyplot; pyplot itself is not thread-safe either.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import itertools
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

DEFERRED: tuple[str, ...] = ("matplotlib.pyplot",)
"""Imported by libraries at their top, used by none of this project's code paths."""


class _DeferringFinder(importlib.abc.MetaPathFinder):
    """Finds the modules named by the open :func:`deferred` blocks as the path finder
    does, with a lazy loader; finds nothing while no block is open."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[int, frozenset[str]] = {}  # one entry per open block
        self._tokens = itertools.count()

    def open(self, names: Iterable[str]) -> int:
        with self._lock:
            token = next(self._tokens)
            self._open[token] = frozenset(names)
        return token

    def close(self, token: int) -> None:
        with self._lock:
            self._open.pop(token, None)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        with self._lock:
            wanted = any(fullname in names for names in self._open.values())
        if not wanted:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None  # not an ordinary module file: the usual import decides
        spec.loader = importlib.util.LazyLoader(spec.loader)
        return spec


_finder = _DeferringFinder()
_install_lock = threading.Lock()


def _installed() -> _DeferringFinder:
    """The one finder, in front of ``sys.meta_path`` (put there once, by rebinding)."""
    with _install_lock:
        if not any(finder is _finder for finder in sys.meta_path):
            sys.meta_path = [_finder, *sys.meta_path]
    return _finder


@contextlib.contextmanager
def deferred(names: Iterable[str] = DEFERRED) -> Iterator[None]:
    """Modules of ``names`` first imported inside the block (by any thread) load lazily."""
    finder = _installed()
    token = finder.open(names)
    try:
        yield
    finally:
        finder.close(token)
