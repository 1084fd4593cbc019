"""Tests for the apply_patch tool, on real files under pytest's tmp_path."""

import json
import os
from pathlib import Path

import pytest

from tritonllm.tools.apply_patch import ApplyPatchTool, PatchError


def snapshot(*dirs: Path) -> dict[str, bytes | str]:
    """Every entry under ``dirs``: file bytes, symlink targets, and directories."""
    tree: dict[str, bytes | str] = {}
    for top in dirs:
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                path = Path(dirpath, name)
                if path.is_symlink():
                    tree[str(path)] = "link -> " + os.readlink(path)
                elif path.is_dir():
                    tree[str(path)] = "dir"
                else:
                    tree[str(path)] = path.read_bytes()
    return tree


def patch(*body: str) -> str:
    return "\n".join(["*** Begin Patch", *body, "*** End Patch"]) + "\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A workspace with a few files, next to an 'outside' directory holding a secret."""
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "src" / "app.py").write_text(
        "import os\n"
        "\n"
        "def alpha():\n"
        "    return 1\n"
        "\n"
        "def beta():\n"
        "    return 2\n"
        "\n"
        "def gamma():\n"
        "    return 3\n"
    )
    (ws / "notes.txt").write_text("keep me\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret\n")
    return ws


@pytest.fixture
def tool(root: Path) -> ApplyPatchTool:
    return ApplyPatchTool(root)


# --- successful operations ---------------------------------------------------


def test_add_file_creates_parent_directories(tool, root):
    out = tool.apply(patch("*** Add File: docs/new/readme.md", "+# Title", "+", "+body"))
    assert out == "Done!\nA docs/new/readme.md"
    assert (root / "docs/new/readme.md").read_text() == "# Title\n\nbody\n"


def test_update_multiple_chunks_with_context_headers(tool, root):
    out = tool.apply(patch(
        "*** Update File: src/app.py",
        "@@ def alpha():",
        "-    return 1",
        "+    return 10",
        "@@ def gamma():",
        "-    return 3",
        "+    return 30",
        "+",
        "+def delta():",
        "+    return 4",
    ))
    assert out == "Done!\nM src/app.py"
    text = (root / "src/app.py").read_text()
    assert "    return 10\n" in text and "    return 2\n" in text
    assert text.endswith("def gamma():\n    return 30\n\ndef delta():\n    return 4\n")


def test_update_with_plain_context_and_end_of_file(tool, root):
    tool.apply(patch(
        "*** Update File: src/app.py",
        "@@",
        " def beta():",
        "-    return 2",
        "+    return 20",
        "@@",
        "     return 3",
        "+# end",
        "*** End of File",
    ))
    text = (root / "src/app.py").read_text()
    assert "def beta():\n    return 20\n" in text
    assert text.endswith("    return 3\n# end\n")


def test_update_preserves_crlf_and_file_mode(tool, root):
    script = root / "run.sh"
    script.write_bytes(b"#!/bin/sh\r\necho one\r\n")
    script.chmod(0o755)
    tool.apply(patch("*** Update File: run.sh", "@@", " #!/bin/sh", "-echo one", "+echo two"))
    assert script.read_bytes() == b"#!/bin/sh\r\necho two\r\n"
    assert script.stat().st_mode & 0o777 == 0o755


def test_delete_file(tool, root):
    assert tool.apply(patch("*** Delete File: notes.txt")) == "Done!\nD notes.txt"
    assert not (root / "notes.txt").exists()


def test_move_with_edit(tool, root):
    out = tool.apply(patch(
        "*** Update File: src/app.py",
        "*** Move to: lib/core.py",
        "@@",
        "-import os",
        "+import sys",
    ))
    assert out == "Done!\nM src/app.py -> lib/core.py"
    assert not (root / "src/app.py").exists()
    assert (root / "lib/core.py").read_text().startswith("import sys\n\ndef alpha():")


def test_several_operations_in_one_patch(tool, root):
    out = tool.apply(patch(
        "*** Add File: a.txt",
        "+a",
        "*** Update File: notes.txt",
        "-keep me",
        "+kept",
        "*** Delete File: src/app.py",
    ))
    assert out == "Done!\nA a.txt\nM notes.txt\nD src/app.py"
    assert (root / "a.txt").read_text() == "a\n"
    assert (root / "notes.txt").read_text() == "kept\n"
    assert not (root / "src/app.py").exists()


def test_symlink_inside_root_is_allowed(tool, root):
    (root / "alias.txt").symlink_to("notes.txt")
    tool.apply(patch("*** Update File: alias.txt", "-keep me", "+via link"))
    assert (root / "alias.txt").is_symlink()
    assert (root / "notes.txt").read_text() == "via link\n"


def test_call_accepts_raw_text_and_json(tool, root):
    assert tool.call(patch("*** Add File: x.txt", "+x")) == "Done!\nA x.txt"
    assert tool.call(json.dumps({"input": patch("*** Add File: y.txt", "+y")})) == "Done!\nA y.txt"
    assert (root / "y.txt").read_text() == "y\n"


def test_call_reports_refusal_as_text(tool):
    out = tool.call(patch("*** Delete File: nope.txt"))
    assert out.startswith("error: ") and "nope.txt" in out and "does not exist" in out


# --- refusals: the message names the problem, and no file changes ------------

REFUSALS = {
    "parent traversal": (
        patch("*** Add File: ../x.txt", "+x"), ["../x.txt", "escapes the workspace root"]),
    "nested traversal": (
        patch("*** Update File: src/../../outside/secret.txt", "-top secret", "+owned"),
        ["outside/secret.txt", "escapes the workspace root"]),
    "absolute path": (
        patch("*** Delete File: /etc/hostname"), ["/etc/hostname", "absolute"]),
    "move outside": (
        patch("*** Update File: notes.txt", "*** Move to: ../moved.txt", "-keep me", "+x"),
        ["../moved.txt", "escapes"]),
    "non-matching hunk": (
        patch("*** Update File: src/app.py", "@@", " def beta():", "-    return 99", "+    return"),
        ["src/app.py", "does not match", "return 99"]),
    "missing context header": (
        patch("*** Update File: src/app.py", "@@ def omega():", "-    return 3", "+    return 0"),
        ["src/app.py", "def omega():", "not found"]),
    "line-number header": (
        patch("*** Update File: src/app.py", "@@ -3,2 +3,2 @@", "-    return 1", "+    return 0"),
        ["src/app.py", "line-number"]),
    "missing begin": (
        "*** Add File: a.txt\n+a\n*** End Patch\n", ["*** Begin Patch"]),
    "missing end": (
        "*** Begin Patch\n*** Add File: a.txt\n+a\n", ["*** End Patch"]),
    "bad hunk line prefix": (
        patch("*** Update File: notes.txt", "@@", "*keep me", "+x"), ["notes.txt", "'*keep me'"]),
    "bad add line prefix": (
        patch("*** Add File: a.txt", "+ok", "not added"), ["a.txt", "must start with '+'"]),
    "unknown operation": (
        patch("*** Rename File: notes.txt"), ["Rename File", "not a file operation"]),
    "update without hunks": (
        patch("*** Update File: notes.txt"), ["notes.txt", "no hunks"]),
    "add existing": (
        patch("*** Add File: notes.txt", "+x"), ["notes.txt", "already exists"]),
    "update missing": (
        patch("*** Update File: ghost.py", "-a", "+b"), ["ghost.py", "does not exist"]),
    "delete missing": (
        patch("*** Delete File: ghost.txt"), ["ghost.txt", "does not exist"]),
    "delete directory": (
        patch("*** Delete File: src"), ["src", "not a regular file"]),
    "move onto existing": (
        patch("*** Update File: src/app.py", "*** Move to: notes.txt", "-import os", "+import re"),
        ["notes.txt", "destination exists"]),
    "same file twice": (
        patch("*** Delete File: notes.txt", "*** Delete File: ./notes.txt"),
        ["notes.txt", "more than once"]),
}


@pytest.mark.parametrize("name", REFUSALS)
def test_refusal_leaves_every_file_untouched(tool, root, name):
    bad, expected = REFUSALS[name]
    # A valid operation first: it must not be applied either.
    text = bad.replace("*** Begin Patch\n", "*** Begin Patch\n*** Add File: first.txt\n+1\n", 1)
    before = snapshot(root.parent)
    with pytest.raises(PatchError) as info:
        tool.apply(text)
    assert snapshot(root.parent) == before
    for fragment in expected:
        assert fragment in str(info.value)


@pytest.mark.parametrize("target", ["file", "directory"])
def test_symlink_escape_is_refused(tool, root, target):
    outside = root.parent / "outside"
    if target == "file":
        (root / "link.txt").symlink_to(outside / "secret.txt")
        path = "link.txt"
    else:
        (root / "linkdir").symlink_to(outside)
        path = "linkdir/secret.txt"
    attempts = [
        patch(f"*** Update File: {path}", "-top secret", "+owned"),
        patch(f"*** Delete File: {path}"),
        patch("*** Update File: notes.txt", f"*** Move to: {path}", "-keep me", "+x"),
    ]
    if target == "directory":
        attempts.append(patch("*** Add File: linkdir/new.txt", "+planted"))
    before = snapshot(root.parent)
    for attempt in attempts:
        with pytest.raises(PatchError, match="resolves outside the workspace root through a sym"):
            tool.apply(attempt)
        assert snapshot(root.parent) == before


def test_symlinked_directory_cannot_reach_back_through_outside_link(tool, root):
    """A directory link leading outside is refused even if the file there links back inside."""
    outside = root.parent / "outside"
    (outside / "back.txt").symlink_to(root / "notes.txt")
    (root / "linkdir").symlink_to(outside)
    before = snapshot(root.parent)
    with pytest.raises(PatchError, match="through a symlink"):
        tool.apply(patch("*** Delete File: linkdir/back.txt"))
    assert snapshot(root.parent) == before


def test_root_must_exist(tmp_path):
    with pytest.raises(FileNotFoundError):
        ApplyPatchTool(tmp_path / "missing")
