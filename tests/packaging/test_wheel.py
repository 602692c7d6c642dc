"""The wheel carries the built front end, and the installed widget loads it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build a wheel from a clean copy of the tracked sources (no prebuilt bundle)."""
    src = tmp_path_factory.mktemp("src")
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for rel in files:
        if not (ROOT / rel).is_file():
            continue
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    assert not (src / "chatwidget" / "static" / "widget.js").exists()
    # Reuse the installed JS toolchain rather than downloading it again.
    (src / "js" / "node_modules").symlink_to(ROOT / "js" / "node_modules")
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)],
        cwd=src,
        check=True,
        capture_output=True,
        text=True,
    )
    (whl,) = out.glob("chatwidget-*.whl")
    return whl


def test_wheel_contains_bundle(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "chatwidget/static/widget.js" in names
    assert "chatwidget/static/widget.css" in names
    js = zipfile.ZipFile(wheel).read("chatwidget/static/widget.js").decode()
    assert "render" in js
    assert len(js) > 10_000


def test_installed_widget_esm_loads(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    code = (
        "import chatwidget, chatwidget.widget as w;"
        "esm = str(w.ChatWidget._esm); css = str(w.ChatWidget._css);"
        "print(chatwidget.__file__); print(len(esm), len(css));"
        "assert 'render' in esm and len(esm) > 10000 and len(css) > 100"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,  # not the checkout: "python -c" puts the cwd first on sys.path
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith(str(target))
