"""Video discovery: input roots -> source files -> stable, unique, file-name-safe video ids.

Inputs follow the seed's JSON: ``{"video": "/root/a", "wav": "/root/b"}``; a key may also
hold a list of roots, and an optional ``"filters": {"include": [...], "exclude": [...]}``
narrows which files count (globs on the path relative to its root, e.g. ``"speaker1/*"``).

A video id is the file's path relative to its root, without the extension, with its parts
joined by ``_`` (the original tool's item names), cleaned of what is unsafe in a file name
or a Dagster partition key. Ids never depend on the order files are found in; when two
files would get one id, each gets a short hash of its relative path appended, so nothing
collides silently. Ids once registered are kept (see :mod:`dpl_assets.catalog`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from dpl_assets.datatypes import DATATYPES, get_datatype

MAX_ID_BYTES = 150
"""Ids leave room for an extension and a temp suffix under the usual 255-byte name limit."""

# Dagster refuses these in partition keys; "," "[" "]" "|" confuse its range/multi syntax;
# path separators and control characters are unsafe in file names.
_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f/\\,\[\]|]")


class InputsError(ValueError):
    """The inputs specification is invalid; the message says what to fix."""


@dataclass(frozen=True)
class InputRoots:
    """Validated inputs: datatype key -> root folders, plus path filters."""

    roots: Mapping[str, tuple[Path, ...]]
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @property
    def primary_key(self) -> str:
        """The datatype whose files define the set of videos: ``video`` when given."""
        return "video" if "video" in self.roots else next(iter(self.roots))

    def to_json(self) -> dict[str, object]:
        spec: dict[str, object] = {key: [str(r) for r in rs] for key, rs in self.roots.items()}
        if self.include or self.exclude:
            spec["filters"] = {"include": list(self.include), "exclude": list(self.exclude)}
        return spec


def parse_inputs(spec: Mapping[str, object], base_dir: Path | None = None) -> InputRoots:
    """Validate a seed-style inputs mapping; relative roots resolve against ``base_dir``."""
    if not isinstance(spec, Mapping) or not spec:
        raise InputsError("inputs must be a JSON object mapping datatype keys to root folders")
    base = base_dir or Path.cwd()
    roots: dict[str, tuple[Path, ...]] = {}
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    for key, value in spec.items():
        if key == "filters":
            include, exclude = _parse_filters(value)
            continue
        if key not in DATATYPES:
            raise InputsError(
                f"unknown datatype {key!r} in inputs; valid keys: {', '.join(sorted(DATATYPES))}"
            )
        values = [value] if isinstance(value, str) else value
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(v, str) for v in values)
        ):
            raise InputsError(f"inputs[{key!r}] must be a folder path or a list of folder paths")
        resolved = []
        for raw in values:
            root = (base / Path(raw).expanduser()).resolve()
            if not root.is_dir():
                raise InputsError(f"inputs[{key!r}]: {raw!r} is not an existing folder")
            resolved.append(root)
        roots[key] = tuple(resolved)
    if not roots:
        raise InputsError("inputs name no root folder")
    return InputRoots(roots=roots, include=include, exclude=exclude)


def load_inputs_file(path: Path) -> InputRoots:
    """Read and validate an inputs JSON file; relative roots are relative to the file."""
    try:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise InputsError(f"cannot read inputs file {str(path)!r}: {error}") from error
    return parse_inputs(spec, base_dir=Path(path).resolve().parent)


def _parse_filters(value: object) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if not isinstance(value, Mapping) or set(value) - {"include", "exclude"}:
        raise InputsError('"filters" must be {"include": [globs], "exclude": [globs]}')
    lists = []
    for name in ("include", "exclude"):
        globs = value.get(name, [])
        if not isinstance(globs, list) or not all(isinstance(g, str) for g in globs):
            raise InputsError(f'"filters.{name}" must be a list of glob strings')
        lists.append(tuple(globs))
    return lists[0], lists[1]


@dataclass(frozen=True)
class SourceFile:
    """One user file of one datatype, found under one of that datatype's roots."""

    datatype: str
    root: Path
    path: Path
    relative_posix: str = ""  # path relative to root, "/"-separated (computed if empty)

    @property
    def relative(self) -> PurePosixPath:
        return PurePosixPath(self.relative_posix or self.path.relative_to(self.root).as_posix())

    @property
    def stem(self) -> str:
        """Relative path without the datatype's extension: what matches files across roots."""
        return get_datatype(self.datatype).strip_extension(self.relative.as_posix())


def passes_filters(relative: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """Whether a root-relative posix path is selected by the include/exclude globs."""
    if include and not any(fnmatch.fnmatchcase(relative, glob) for glob in include):
        return False
    return not any(fnmatch.fnmatchcase(relative, glob) for glob in exclude)


def find_source_files(inputs: InputRoots, datatype: str) -> list[SourceFile]:
    """Every file of ``datatype`` under its roots, filtered, in a stable (sorted) order.

    Hidden files and folders (a leading dot) are skipped: they are editor, OS or our own
    bookkeeping files. Symlinked folders are not followed, so no cycle or escape is possible.
    """
    dt = get_datatype(datatype)
    found: list[SourceFile] = []
    for root in inputs.roots.get(datatype, ()):
        for folder, subfolders, files in os.walk(root):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            # Relative names by string operations: pathlib per file costs seconds at 100k.
            prefix = Path(folder).relative_to(root).as_posix()
            for name in sorted(files):
                if name.startswith(".") or not dt.matches(name):
                    continue
                relative = name if prefix == "." else f"{prefix}/{name}"
                if passes_filters(relative, inputs.include, inputs.exclude):
                    path = Path(os.path.join(folder, name))
                    found.append(SourceFile(datatype, root, path, relative))
    return found


def readable_id(stem: str) -> str:
    """The id a root-relative stem gets when nothing collides with it.

    >>> readable_id("speaker 1/take$(1)")
    'speaker 1_take$(1)'
    """
    text = "_".join(PurePosixPath(stem).parts)
    text = _UNSAFE_CHARS.sub("_", text).replace("...", "_")
    if text.startswith(".") or text.startswith("-") or not text:
        text = "_" + text
    return _truncate_utf8(text, MAX_ID_BYTES)


def hashed_id(source: SourceFile) -> str:
    """A collision-free id: the readable id plus a hash of the file's full path.

    The hash covers the extension, so ``x.mp4`` and ``x.mov`` side by side differ.
    """
    digest = hashlib.sha1(str(source.path).encode(), usedforsecurity=False).hexdigest()[:8]
    return f"{_truncate_utf8(readable_id(source.stem), MAX_ID_BYTES - 9)}-{digest}"


def _truncate_utf8(text: str, max_bytes: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


@dataclass
class IdAssignment:
    """Result of :func:`assign_ids`: new ids and the files that needed a hashed id."""

    new: dict[str, SourceFile] = field(default_factory=dict)
    disambiguated: list[SourceFile] = field(default_factory=list)


def assign_ids(files: Iterable[SourceFile], taken: Mapping[str, str]) -> IdAssignment:
    """Give each file not yet registered a unique id.

    ``taken`` maps already registered ids to their source paths; a file whose path is
    registered keeps its id and is left out of the result. Files whose readable ids collide
    with each other or with a taken id all get hashed ids, independent of discovery order.
    """
    registered_paths = set(taken.values())
    fresh = [f for f in files if str(f.path) not in registered_paths]
    groups: dict[str, list[SourceFile]] = {}
    for source in fresh:
        groups.setdefault(readable_id(source.stem), []).append(source)
    result = IdAssignment()
    for candidate, members in groups.items():
        if len(members) == 1 and candidate not in taken:
            result.new[candidate] = members[0]
            continue
        for source in members:
            video_id = hashed_id(source)
            if video_id in taken or video_id in result.new:
                raise InputsError(f"cannot give {str(source.path)!r} a unique id")
            result.new[video_id] = source
            result.disambiguated.append(source)
    return result
