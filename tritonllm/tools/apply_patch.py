"""The ``apply_patch`` tool: edit files under one root directory with a patch.

The model sends a patch in the envelope format gpt-oss (and OpenAI's Codex
models) are trained on::

    *** Begin Patch
    *** Add File: path/to/new.txt
    +line one
    *** Update File: path/to/existing.py
    *** Move to: path/to/renamed.py
    @@ def some_context():
     unchanged context line
    -removed line
    +added line
    *** Delete File: path/to/old.txt
    *** End Patch

Applying is all-or-nothing: the whole patch is parsed, every path is checked
to stay inside the root, and every new file content is computed in memory
before the first byte is written.  Any problem raises :class:`PatchError` and
leaves the tree untouched.  Files are then written through a temporary file
and ``os.replace`` so a reader never sees a half-written file.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

BEGIN_PATCH = "*** Begin Patch"
END_PATCH = "*** End Patch"
ADD_FILE = "*** Add File: "
DELETE_FILE = "*** Delete File: "
UPDATE_FILE = "*** Update File: "
MOVE_TO = "*** Move to: "
END_OF_FILE = "*** End of File"

# "@@ -12,3 +12,4 @@" -- unified-diff line numbers, which this format lacks.
_UNIFIED_HEADER = re.compile(r"^-\d+(,\d+)? \+\d+(,\d+)? @@")

NEW_FILE_MODE = 0o644


class PatchError(ValueError):
    """The patch was refused; the message says which file and why."""


@dataclass
class Chunk:
    """One ``@@`` section of an Update: where to look and what to replace."""

    headers: list[str] = field(default_factory=list)  # "@@ <text>" anchors, in order
    old: list[str] = field(default_factory=list)  # context + removed lines
    new: list[str] = field(default_factory=list)  # context + added lines
    at_eof: bool = False  # ended by "*** End of File": old must end the file


@dataclass
class FileOp:
    """One file operation of a patch, as parsed (paths not yet checked)."""

    kind: str  # "add", "delete" or "update"
    path: str
    move_to: str | None = None
    added_lines: list[str] = field(default_factory=list)  # "add" only
    chunks: list[Chunk] = field(default_factory=list)  # "update" only


def parse_patch(text: str) -> list[FileOp]:
    """Parse patch text into file operations, or raise PatchError."""
    # Split on "\n" only: str.splitlines() would also split on form feeds etc.
    lines = [line.removesuffix("\r") for line in text.strip().split("\n")]
    if not lines or lines[0].strip() != BEGIN_PATCH:
        raise PatchError(f"malformed patch: the first line must be '{BEGIN_PATCH}'")
    if lines[-1].strip() != END_PATCH:
        raise PatchError(f"malformed patch: the last line must be '{END_PATCH}'")
    body = lines[1:-1]
    ops: list[FileOp] = []
    i = 0
    while i < len(body):
        line = body[i]
        lineno = i + 2  # 1-based, counting the Begin line
        if line.startswith(ADD_FILE):
            op = FileOp("add", line[len(ADD_FILE):].strip())
            i += 1
            while i < len(body) and not body[i].startswith("*** "):
                if not body[i].startswith("+"):
                    raise PatchError(
                        f"malformed patch: line {i + 2} in Add File '{op.path}' must start "
                        f"with '+' (every line of a new file is an added line): {body[i]!r}"
                    )
                op.added_lines.append(body[i][1:])
                i += 1
        elif line.startswith(DELETE_FILE):
            op = FileOp("delete", line[len(DELETE_FILE):].strip())
            i += 1
        elif line.startswith(UPDATE_FILE):
            op = FileOp("update", line[len(UPDATE_FILE):].strip())
            i += 1
            if i < len(body) and body[i].startswith(MOVE_TO):
                op.move_to = body[i][len(MOVE_TO):].strip()
                i += 1
            i = _parse_chunks(body, i, op)
        else:
            raise PatchError(
                f"malformed patch: line {lineno} is not a file operation: {line!r} "
                f"(expected '{ADD_FILE.strip()}', '{UPDATE_FILE.strip()}' or "
                f"'{DELETE_FILE.strip()}' and a path)"
            )
        if not op.path:
            raise PatchError(f"malformed patch: line {lineno} has an empty path")
        if op.move_to == "":
            raise PatchError(f"malformed patch: the Move to of '{op.path}' has an empty path")
        ops.append(op)
    if not ops:
        raise PatchError("malformed patch: it contains no file operations")
    return ops


def _parse_chunks(body: list[str], i: int, op: FileOp) -> int:
    """Parse the hunks of an Update starting at body[i]; return the next index."""
    chunk = Chunk()
    chunks = [chunk]
    while i < len(body) and not (body[i].startswith("*** ") and body[i] != END_OF_FILE):
        line = body[i]
        if line.startswith("@@"):
            if chunk.old or chunk.new:  # a new chunk starts; consecutive headers accumulate
                chunk = Chunk()
                chunks.append(chunk)
            header = line[2:].strip()
            if _UNIFIED_HEADER.match(header):
                raise PatchError(
                    f"malformed patch: line {i + 2} in Update File '{op.path}': line-number "
                    f"headers like '@@ {header}' are not supported; use '@@' alone or "
                    f"'@@ <a line of the file just above the change>'"
                )
            if header:
                chunk.headers.append(header)
        elif line == END_OF_FILE:
            chunk.at_eof = True
            chunk = Chunk()
            chunks.append(chunk)
        elif line == "" or line[0] == " ":  # an empty line is an empty context line
            chunk.old.append(line[1:])
            chunk.new.append(line[1:])
        elif line[0] == "-":
            chunk.old.append(line[1:])
        elif line[0] == "+":
            chunk.new.append(line[1:])
        else:
            raise PatchError(
                f"malformed patch: line {i + 2} in Update File '{op.path}' must start with "
                f"' ' (context), '-' (remove), '+' (add) or '@@': {line!r}"
            )
        i += 1
    for c in chunks:
        if c.headers and not (c.old or c.new):
            raise PatchError(
                f"malformed patch: Update File '{op.path}' has an '@@ {c.headers[-1]}' header "
                f"with no lines after it"
            )
    op.chunks = [c for c in chunks if c.old or c.new]
    if not op.chunks and op.move_to is None:
        raise PatchError(f"malformed patch: Update File '{op.path}' has no hunks")
    return i


def apply_chunks(lines: list[str], chunks: list[Chunk], path: str) -> list[str]:
    """Return ``lines`` with every chunk applied, or raise PatchError.

    Chunks are located in order, each after the previous one.  A chunk's
    ``@@ <text>`` headers are found first (compared without surrounding
    whitespace), then its context+removed lines: exactly, or failing that,
    ignoring trailing whitespace.  A chunk with no context or removed lines
    inserts right after its last header, or at the end of the file.
    """
    cursor = 0
    edits: list[tuple[int, int, list[str]]] = []  # (start, length of old, new lines)
    for n, chunk in enumerate(chunks, 1):
        for header in chunk.headers:
            found = next((k for k in range(cursor, len(lines)) if lines[k].strip() == header), None)
            if found is None:
                raise PatchError(
                    f"hunk {n} of Update File '{path}' does not match the file: context line "
                    f"'@@ {header}' not found from line {cursor + 1} on"
                )
            cursor = found + 1
        if not chunk.old:
            start = cursor if chunk.headers and not chunk.at_eof else len(lines)
        else:
            start = _find(lines, chunk.old, cursor, chunk.at_eof)
            if start is None:
                where = "at the end of the file" if chunk.at_eof else f"from line {cursor + 1} on"
                expected = "\n".join(chunk.old)
                raise PatchError(
                    f"hunk {n} of Update File '{path}' does not match the file: these "
                    f"context/removed lines were not found {where}:\n{expected}"
                )
        edits.append((start, len(chunk.old), chunk.new))
        cursor = start + len(chunk.old)
    result = list(lines)
    for start, length, new in reversed(edits):
        result[start:start + length] = new
    return result


def _find(lines: list[str], old: list[str], start: int, at_eof: bool) -> int | None:
    """Index where ``old`` occurs in ``lines`` at or after ``start``, or None."""
    candidates = [len(lines) - len(old)] if at_eof else range(start, len(lines) - len(old) + 1)
    for normalize in (str, str.rstrip):  # exact first, then ignoring trailing whitespace
        wanted = [normalize(line) for line in old]
        for k in candidates:
            if k >= start and [normalize(line) for line in lines[k:k + len(old)]] == wanted:
                return k
    return None


class ApplyPatchTool:
    """Function tool that applies patches to files under ``root``."""

    name = "apply_patch"
    description = (
        "Edit files by applying a patch. Paths are relative to the workspace root; absolute "
        "paths and paths leading outside it are refused. The patch is applied completely or "
        "not at all.\n"
        "Format:\n"
        "*** Begin Patch\n"
        "*** Add File: <path>        (new file; every following line starts with '+')\n"
        "*** Update File: <path>     (edit an existing file)\n"
        "*** Move to: <new path>     (optional, right after Update File: rename it)\n"
        "@@ <anchor line>            (starts a hunk; optional anchor: a whole line of the file "
        "above the hunk, e.g. a def or class line; '@@' alone is fine)\n"
        " <unchanged context line>   (leading space)\n"
        "-<line to remove>\n"
        "+<line to add>\n"
        "*** End of File             (optional: the hunk ends at the end of the file)\n"
        "*** Delete File: <path>\n"
        "*** End Patch\n"
        "Show about 3 lines of unchanged context above and below each change so the hunk "
        "can be located; context and '-' lines must match the file exactly. Do not use "
        "line numbers."
    )
    parameters = {
        "type": "object",
        "properties": {
            "input": {
                "type": "string",
                "description": "The whole patch, from '*** Begin Patch' to '*** End Patch'.",
            }
        },
        "required": ["input"],
    }

    def __init__(self, root: Path):
        self.root = Path(root).resolve(strict=True)
        if not self.root.is_dir():
            raise NotADirectoryError(f"apply_patch root {self.root} is not a directory")

    def call(self, args: str) -> str:
        """Chat-loop entry: ``args`` is the raw patch or JSON ``{"input": patch}``.

        Refusals come back as ``"error: ..."`` text for the model to read.
        """
        patch = args
        if args.lstrip().startswith("{"):
            try:
                decoded = json.loads(args)
            except json.JSONDecodeError:
                decoded = None
            if isinstance(decoded, dict) and isinstance(decoded.get("input"), str):
                patch = decoded["input"]
        try:
            return self.apply(patch)
        except PatchError as exc:
            logger.info("apply_patch refused: %s", exc)
            return f"error: {exc}"

    def apply(self, patch_text: str) -> str:
        """Apply ``patch_text`` and return a summary; raise PatchError on refusal."""
        ops = parse_patch(patch_text)
        writes: dict[Path, tuple[str, int]] = {}  # path to write -> (content, file mode)
        deletes: list[Path] = []
        summary: list[str] = []
        claimed: set[Path] = set()

        def claim(path: str) -> Path:
            entry = self._resolve(path)
            if entry.resolve() in claimed:
                raise PatchError(f"'{path}' appears more than once in the patch; combine its edits")
            claimed.add(entry.resolve())
            return entry

        for op in ops:
            entry = claim(op.path)
            if op.kind == "add":
                if entry.exists() or entry.is_symlink():
                    raise PatchError(f"cannot add '{op.path}': it already exists (use Update File)")
                writes[entry] = (_join(op.added_lines, "\n", True), NEW_FILE_MODE)
                summary.append(f"A {op.path}")
                continue
            original, mode = _read(entry, op.path, op.kind)
            if op.kind == "delete":
                deletes.append(entry)  # a symlink is removed itself, not its target
                summary.append(f"D {op.path}")
                continue
            crlf = "\n" in original and original.count("\r\n") == original.count("\n")
            newline = "\r\n" if crlf else "\n"
            lines = original.split(newline)
            trailing_newline = lines[-1] == ""
            if trailing_newline:
                lines.pop()
            lines = apply_chunks(lines, op.chunks, op.path)
            content = _join(lines, newline, trailing_newline)
            if op.move_to is None or self._resolve(op.move_to).resolve() == entry.resolve():
                writes[entry.resolve()] = (content, mode)  # through a symlink, keeping it
                summary.append(f"M {op.path}")
                continue
            dest = claim(op.move_to)
            if dest.exists() or dest.is_symlink():
                raise PatchError(
                    f"cannot move '{op.path}' to '{op.move_to}': the destination exists"
                )
            writes[dest] = (content, mode)
            deletes.append(entry)
            summary.append(f"M {op.path} -> {op.move_to}")

        _commit(writes, deletes)
        logger.info("apply_patch applied: %s", "; ".join(summary))
        return "Done!\n" + "\n".join(summary)

    def _resolve(self, path: str) -> Path:
        """Map a patch path to its directory entry inside the root, or raise PatchError.

        The returned path has every directory component resolved (so no
        symlinked directory can lead elsewhere); its last component may be a
        symlink, but only one that points inside the root.
        """
        if "\0" in path:
            raise PatchError(f"path {path!r} contains a NUL byte")
        if os.path.isabs(path):
            raise PatchError(f"path '{path}' is absolute; use a path relative to the root")
        lexical = Path(os.path.normpath(self.root / path))
        if lexical == self.root:
            raise PatchError(f"path '{path}' names the workspace root itself, not a file")
        if not lexical.is_relative_to(self.root):
            raise PatchError(f"path '{path}' escapes the workspace root with '..'")
        entry = lexical.parent.resolve() / lexical.name
        root = self.root
        if not (entry.parent.is_relative_to(root) and entry.resolve().is_relative_to(root)):
            raise PatchError(f"path '{path}' resolves outside the workspace root through a symlink")
        return entry


def _read(entry: Path, path: str, kind: str) -> tuple[str, int]:
    """Read an existing regular file as UTF-8 text; return (text, mode) or raise PatchError."""
    if not entry.exists():
        raise PatchError(f"cannot {kind} '{path}': the file does not exist")
    if not entry.is_file():
        raise PatchError(f"cannot {kind} '{path}': it is not a regular file")
    try:
        return entry.read_bytes().decode("utf-8"), entry.stat().st_mode & 0o7777
    except UnicodeDecodeError:
        raise PatchError(f"cannot {kind} '{path}': it is not UTF-8 text") from None
    except OSError as exc:
        raise PatchError(f"cannot {kind} '{path}': {exc.strerror}") from None


def _commit(writes: dict[Path, tuple[str, int]], deletes: list[Path]) -> None:
    """Write every new content atomically, then remove deleted/moved files.

    All temporary files are written first and only then renamed into place,
    so an I/O error (disk full, permissions) while staging leaves every
    original file untouched.
    """
    staged: list[tuple[str, Path]] = []
    try:
        for target, (content, mode) in writes.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            staged.append((tmp, target))
            with os.fdopen(fd, "wb") as f:
                f.write(content.encode("utf-8"))
            os.chmod(tmp, mode)
    except OSError as exc:
        for tmp, _ in staged:
            os.unlink(tmp)
        raise PatchError(f"could not write the patched files, nothing was changed: {exc}") from exc
    for tmp, target in staged:
        os.replace(tmp, target)
    for entry in deletes:
        entry.unlink()


def _join(lines: list[str], newline: str, trailing_newline: bool) -> str:
    """Join lines back into file text."""
    text = newline.join(lines)
    return text + newline if lines and trailing_newline else text
