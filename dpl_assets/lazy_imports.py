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
import sys
import threading
from collections.abc import Iterator, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

DEFERRED: frozenset[str] = frozenset({"matplotlib.pyplot"})
"""Imported by libraries at their top, used by none of this project's code paths."""


class _DeferringFinder(importlib.abc.MetaPathFinder):
    """Finds the modules of :data:`DEFERRED` as the path finder does, with a lazy loader,
    while a :func:`deferred` block is open; finds nothing otherwise."""

    open_blocks = 0  # changed under _lock only

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if not self.open_blocks or fullname not in DEFERRED:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None  # not an ordinary module file: the usual import decides
        spec.loader = importlib.util.LazyLoader(spec.loader)
        return spec


_finder = _DeferringFinder()
_lock = threading.Lock()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Modules of :data:`DEFERRED` first imported inside the block (by any thread) load
    lazily. The finder goes in front of ``sys.meta_path`` at the first block, by rebinding
    the list (see the module)."""
    with _lock:
        if not any(finder is _finder for finder in sys.meta_path):
            sys.meta_path = [_finder, *sys.meta_path]
        _finder.open_blocks += 1
    try:
        yield
    finally:
        with _lock:
            _finder.open_blocks -= 1
