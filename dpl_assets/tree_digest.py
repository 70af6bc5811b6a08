"""One digest of everything under the input roots, made by GNU ``find`` (no Python per file).

A rescan that finds the same tree as the last registration (every entry's type, inode,
size, modification time in ns and path, in each root) with the catalog unchanged since
then has nothing to add, change or remove: :meth:`dpl_assets.catalog.Catalog.register`
then answers from the catalog instead of walking a million files in Python. The digest
covers more than the catalog's fingerprints (size and mtime of each source file): every
entry under a root, hidden files and folders too, so a file created, removed, renamed or
rewritten in place (new size or new mtime) changes it; what it cannot see, a rewrite
keeping both size and mtime, the fingerprints do not see either.

``find`` runs with an argument list (never a shell), the root as one argument, records
NUL-terminated. The digest is unavailable (None: the caller walks as before) when
``find`` is missing or is not GNU find (no ``-printf``), exits with an error (an
unreadable folder), or meets a symbolic link (whose verdict depends on its target, which
may lie outside the roots; :mod:`dpl_assets.discovery`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess

from dpl_assets.discovery import InputRoots

FIND_FORMAT = "%y %i %s %T@ %P\\0"
"""Per entry: type (``f``, ``d``, ``l``, ...), inode, size in bytes, mtime (seconds with
nine-digit fraction), path relative to the root; NUL-terminated (names may hold newlines)."""

_CHUNK = 1 << 20


def find_executable() -> str | None:
    """The ``find`` used (None: not on PATH)."""
    return shutil.which("find")


def tree_digest(inputs: InputRoots) -> str | None:
    """A hex digest of ``inputs`` (roots, filters, link rule) and of every entry under each
    root as :data:`FIND_FORMAT` lists it, or None when no such digest can be made (see
    the module docstring). Equal digests: the same entries with the same inode, size and
    mtime, in the same listing order (a folder whose listing order changes only makes the
    digest differ: the caller then walks, which is always correct)."""
    find = find_executable()
    if find is None:
        return None
    digest = hashlib.blake2b(digest_size=20)
    digest.update(json.dumps(inputs.to_json(), sort_keys=True).encode())
    env = {**os.environ, "LC_ALL": "C"}  # the same number format whatever the user's locale
    roots = dict.fromkeys(str(root) for roots in inputs.roots.values() for root in roots)
    for root in roots:
        if not os.path.isabs(root):  # an argument starting with "-" would be an option
            return None
        digest.update(b"\0root\0" + os.fsencode(root) + b"\0")
        with subprocess.Popen(
            [find, root, "-printf", FIND_FORMAT],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            env=env,
        ) as process:
            assert process.stdout is not None
            link = False
            tail = b""  # the end of the last chunk: a record may straddle two
            while chunk := process.stdout.read(_CHUNK):
                digest.update(chunk)
                # each record starts right after a NUL (the first one is the root: a folder)
                if b"\0l " in tail + chunk:
                    link = True
                    break
                tail = chunk[-2:]
            if link:
                process.kill()
                process.wait()
                return None
            if process.wait() != 0:
                return None
    return digest.hexdigest()
