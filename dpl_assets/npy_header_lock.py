"""numpy's ``.npy`` header parser serialized across threads (CPython 3.11's AST bug).

numpy 1.x reads every ``.npy`` header (``np.load``, ``.npz`` members, the header readers of
``numpy.lib.format``) with ``numpy.lib.format.safe_eval``, i.e. ``ast.literal_eval``.
CPython 3.11 converts the parsed tree to Python objects keeping its recursion depth in
interpreter-wide state, reset by each conversion that starts; when a thread is switched
out in the middle of one (a garbage collection running a finalizer that releases the GIL)
and another thread, at another stack depth, converts meanwhile, the first fails with
``SystemError: AST constructor recursion depth mismatch`` (python/cpython#106905). Steps
here load their ``.npy`` inputs in reader threads: seen in ``h5_dataset`` under load.
:func:`install` wraps numpy's ``safe_eval`` in one process-wide lock (a header is a few
dozen characters: the lock is held for microseconds).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

HEADER_LOCK = threading.Lock()


@functools.cache
def install() -> bool:
    """Serialize numpy's header evaluation (once per process). False when this numpy reads
    headers some other way (nothing to wrap: its own business then)."""
    import numpy.lib.format as npy_format

    parse: Callable[[str], Any] | None = getattr(npy_format, "safe_eval", None)
    if parse is None:
        return False

    @functools.wraps(parse)
    def locked(source: str) -> Any:
        with HEADER_LOCK:
            return parse(source)

    npy_format.safe_eval = locked  # type: ignore[attr-defined]
    return True
