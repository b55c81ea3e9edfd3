"""dicom3tools' validators as test helpers: `dciodvfy` (one file against its IOD) and `dcentvfy`
(the files of one study agree). A missing binary skips the test locally and fails it under CI
(`$CI` set), where `.ci/run` installs dicom3tools."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found: install dicom3tools (Debian/Ubuntu: apt-get install dicom3tools)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def _errors(command: list[str]) -> list[str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    lines = (done.stdout + done.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]


def iod_errors(path) -> list[str]:
    """`Error` lines `dciodvfy` prints for one file (warnings are not errors)."""
    return _errors([_tool("dciodvfy"), str(path)])


def entity_errors(paths) -> list[str]:
    """`Error` lines `dcentvfy` prints for files meant to share patients and studies."""
    return _errors([_tool("dcentvfy"), *map(str, paths)])


def assert_conformant(paths) -> None:
    """Every file passes dciodvfy with no errors, and together they pass dcentvfy."""
    paths = [Path(p) for p in paths]
    found = {p.name: iod_errors(p) for p in paths}
    assert not any(found.values()), {name: errors for name, errors in found.items() if errors}
    assert entity_errors(paths) == []
