"""Video discovery: input roots -> source files -> stable, unique, file-name-safe video ids.

Inputs follow the seed's JSON: ``{"video": "/root/a", "wav": "/root/b"}``; a key may also
hold a list of roots, and an optional ``"filters": {"include": [...], "exclude": [...]}``
narrows which files count (globs on the path relative to its root, e.g. ``"speaker1/*"``).

Symbolic links: a file link whose target lies inside one of the input roots counts as the
file it names. A link whose target lies outside every root is refused, unless the inputs
say ``"follow_symlinks": true`` (then file links are followed anywhere, and folder links
are entered, each real folder once). A broken link, a link loop, a folder link that is not
entered: each is refused too. Refused files are never silent: :func:`scan_source_files`
returns them with a reason naming the file, the catalog keeps them and ``report.json``
lists them as rejected at discovery.

A video id is the file's path relative to its root, without the extension, with its parts
joined by ``_`` (the original tool's item names), cleaned of what is unsafe in a file name
or a Dagster partition key. Ids never depend on the order files are found in; when two
files would get one id, each gets a short hash of its relative path appended, so nothing
collides silently. Ids once registered are kept (see :mod:`dpl_assets.catalog`).
"""

from __future__ import annotations

import difflib
import errno
import fnmatch
import hashlib
import json
import operator
import os
import re
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from dpl_assets.datatypes import DATATYPES, get_datatype

_NAME = operator.attrgetter("name")

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
    follow_symlinks: bool = False

    @property
    def primary_key(self) -> str:
        """The datatype whose files define the set of videos: ``video`` when given."""
        return "video" if "video" in self.roots else next(iter(self.roots))

    def to_json(self) -> dict[str, object]:
        spec: dict[str, object] = {key: [str(r) for r in rs] for key, rs in self.roots.items()}
        if self.include or self.exclude:
            spec["filters"] = {"include": list(self.include), "exclude": list(self.exclude)}
        if self.follow_symlinks:
            spec["follow_symlinks"] = True
        return spec

    def inside_roots(self, path: str) -> bool:
        """Whether the real path ``path`` lies in one of the input roots (any datatype)."""
        return any(
            path == str(root) or path.startswith(str(root).rstrip(os.sep) + os.sep)
            for roots in self.roots.values()
            for root in roots
        )


def parse_inputs(
    spec: Mapping[str, object], base_dir: Path | None = None, *, base_name: str = ""
) -> InputRoots:
    """Validate a seed-style inputs mapping; relative roots resolve against ``base_dir``
    (default: the current folder), which errors call ``base_name``."""
    if not isinstance(spec, Mapping) or not spec:
        raise InputsError("inputs must be a JSON object mapping datatype keys to root folders")
    base = (base_dir or Path.cwd()).resolve()
    base_name = base_name or ("the current folder" if base_dir is None else "the base folder")
    roots: dict[str, tuple[Path, ...]] = {}
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    follow_symlinks = False
    for key, value in spec.items():
        if key == "filters":
            include, exclude = _parse_filters(value)
            continue
        if key == "follow_symlinks":
            if not isinstance(value, bool):
                raise InputsError('"follow_symlinks" must be true or false')
            follow_symlinks = value
            continue
        if key not in DATATYPES:
            raise InputsError(
                f"unknown datatype {key!r} in inputs{did_you_mean(key, DATATYPES)}; "
                f"valid keys: {', '.join(sorted(DATATYPES))}"
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
            given = Path(raw).expanduser()
            root = (base / given).resolve()
            if not root.is_dir():
                what = "is a file" if root.exists() else "does not exist"
                rule = (
                    ""
                    if given.is_absolute()
                    else f"; a relative root is relative to {base_name}, {base}"
                )
                raise InputsError(
                    f"inputs[{key!r}]: {raw!r} is not an existing folder ({root} {what}{rule})"
                )
            resolved.append(root)
        roots[key] = tuple(resolved)
    if not roots:
        raise InputsError("inputs name no root folder")
    return InputRoots(
        roots=roots, include=include, exclude=exclude, follow_symlinks=follow_symlinks
    )


def load_inputs_file(path: Path) -> InputRoots:
    """Read and validate an inputs JSON file; relative roots are relative to the file."""
    try:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise InputsError(f"cannot read inputs file {str(path)!r}: {error}") from error
    return parse_inputs(
        spec, base_dir=Path(path).resolve().parent, base_name="the inputs file's folder"
    )


def did_you_mean(word: str, valid: Iterable[str]) -> str:
    """``" (did you mean 'X'?)"`` for the closest valid name (any case), else ``""``."""
    by_lower = {name.lower(): name for name in valid}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""


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


@dataclass(frozen=True)
class RefusedFile:
    """A file (or folder link) under a root that discovery did not take, and why."""

    datatype: str
    root: Path
    path: Path
    relative_posix: str
    reason: str

    @property
    def stem(self) -> str:
        """The relative path without the datatype's extension (a folder link: as is)."""
        datatype = get_datatype(self.datatype)
        name = self.relative_posix
        return datatype.strip_extension(name) if datatype.matches(name) else name


def find_source_files(inputs: InputRoots, datatype: str) -> list[SourceFile]:
    """Every file of ``datatype`` under its roots (see :func:`scan_source_files`)."""
    return scan_source_files(inputs, datatype)[0]


def scan_source_files(
    inputs: InputRoots, datatype: str
) -> tuple[list[SourceFile], list[RefusedFile]]:
    """Every file of ``datatype`` under its roots, filtered, in a stable (sorted) order, and
    the files refused (symbolic links, see the module docstring), each with a reason.

    Hidden files and folders (a leading dot) are skipped: they are editor, OS or our own
    bookkeeping files.
    """
    found, refused = walk_source_files(inputs, datatype)
    return [SourceFile(datatype, root, Path(path), rel) for root, path, rel in found], refused


FoundFile = tuple[Path, str, str]
"""A file :func:`walk_source_files` found: ``(root, path, path relative to root)``; the
path is the string ``str(SourceFile.path)`` would be, the relative one "/"-separated."""


def walk_source_files(
    inputs: InputRoots, datatype: str, stats: dict[str, tuple[int, int]] | None = None
) -> tuple[list[FoundFile], list[RefusedFile]]:
    """:func:`scan_source_files` without building a :class:`SourceFile` per file (what a
    rescan of a million known files cannot afford). With ``stats``, also records
    ``path -> (size, mtime_ns)`` of each regular file found (not of links), as
    :func:`os.stat` gives it, from the scan's own stat of the file."""
    extensions = tuple(get_datatype(datatype).extensions)
    include, exclude = inputs.include, inputs.exclude
    filtered = bool(include or exclude)
    found: list[FoundFile] = []
    refused: list[RefusedFile] = []
    for root in inputs.roots.get(datatype, ()):
        top = str(root)
        # DirEntry.path is os.path.join(folder, name): the string of its Path too, except
        # under a root such as "." that Path would shorten (then the Path decides)
        exact = str(Path(top, "x")) == os.path.join(top, "x")
        entered = {os.path.realpath(root)}  # real folders walked (folder links: each once)
        stack: list[tuple[str, str]] = [(top, "")]  # (folder, relative prefix)
        while stack:
            folder, prefix = stack.pop()
            try:
                with os.scandir(folder) as listing:
                    entries = sorted(listing, key=_NAME)
            except OSError:
                continue  # unreadable folder: as os.walk did
            subfolders: list[tuple[str, str]] = []
            for entry in entries:
                name = entry.name
                if name[0] == ".":
                    continue
                if not entry.is_symlink():
                    if entry.is_dir(follow_symlinks=False):
                        subfolders.append((entry.path, prefix + name + "/"))
                        continue
                    if not name.lower().endswith(extensions):
                        continue
                    relative = prefix + name
                    if filtered and not passes_filters(relative, include, exclude):
                        continue
                    path = entry.path if exact else str(Path(entry.path))
                    found.append((root, path, relative))
                    if stats is not None:
                        try:
                            stat = entry.stat()
                        except OSError:
                            continue  # gone already: the catalog's own stat will tell
                        stats[path] = (stat.st_size, stat.st_mtime_ns)
                    continue
                relative = prefix + name
                verdict = _symlink_verdict(inputs, entry.path, entered)
                if verdict == "folder":
                    entered.add(os.path.realpath(entry.path))
                    subfolders.append((entry.path, relative + "/"))
                    continue
                is_folder = verdict.startswith("folder:")
                if not is_folder and not name.lower().endswith(extensions):
                    continue  # a link that would not be a file of this datatype anyway
                if filtered and not passes_filters(relative, include, exclude):
                    continue
                if verdict == "file":
                    found.append((root, entry.path if exact else str(Path(entry.path)), relative))
                else:
                    reason = f"{entry.path}: {verdict.removeprefix('folder:')}"
                    refused.append(RefusedFile(datatype, root, Path(entry.path), relative, reason))
            stack.extend(reversed(subfolders))
    return found, refused


def _symlink_verdict(inputs: InputRoots, path: str, entered: set[str]) -> str:
    """``file`` / ``folder`` (take it), or a refusal reason (``folder:`` first for a folder
    link, which is reported whatever its name)."""
    try:
        os.stat(path)  # follows the link
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "symbolic link loop (it never reaches a file)"
        return f"broken symbolic link (its target {os.readlink(path)!r} does not exist)"
    target = os.path.realpath(path)
    inside = inputs.inside_roots(target)
    how = '(set "follow_symlinks": true in the inputs to follow it)'
    if os.path.isdir(path):
        if not inputs.follow_symlinks:
            return f"folder:symbolic link to the folder {target}, not entered {how}"
        if target in entered or any(target.startswith(seen + os.sep) for seen in entered):
            return f"folder:symbolic link to {target}, a folder scanned already (a loop?)"
        return "folder"
    if not os.path.isfile(path):
        return f"symbolic link to {target}, which is not a regular file"
    if inside or inputs.follow_symlinks:
        return "file"
    return f"symbolic link to {target}, outside the input roots, not followed {how}"


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
    return assign_new_ids([f for f in files if str(f.path) not in registered_paths], taken)


def assign_new_ids(fresh: Iterable[SourceFile], taken: Container[str]) -> IdAssignment:
    """:func:`assign_ids` of files known to be unregistered; ``taken``: the registered ids."""
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
