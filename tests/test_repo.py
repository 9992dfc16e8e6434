"""The repository stands alone: no file points to notes outside it."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

# Built from pieces so that this file does not match itself.
OUTSIDE = re.compile(
    "|".join(
        [
            re.escape("shared" + "/reference"),  # development notes kept next to the checkout
            re.escape(".." + "/shared"),
            "reference" + r"(/[\w-]+\.md)? ?§",  # a section of those notes, e.g. "§2" after the word
        ]
    )
)


def _repo_files() -> list[str]:
    """Tracked files plus new files git would add (not ignored), as paths relative to the root."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    return [p for p in out.decode().split("\0") if p]


def test_no_file_points_outside_the_repository():
    # Users have only this repository: facts live in docs/, the plugin READMEs and the code, with their
    # upstream sources, never in notes beside the checkout. CI needs nothing outside it (.ci/ included).
    found = []
    for rel in _repo_files():
        path = ROOT / rel
        if not path.is_file():
            continue  # deleted in the working tree, not yet in the index
        text = path.read_bytes()
        if b"\0" in text[:8192]:
            continue  # binary
        for lineno, line in enumerate(text.decode(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                found.append(f"{rel}:{lineno}: {line.strip()[:100]}")
    assert not found, "files point outside the repository:\n" + "\n".join(found)
