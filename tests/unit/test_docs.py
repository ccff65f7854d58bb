"""The documentation builds: `mkdocs build --strict` fails on a broken link or anchor, a page missing from the nav,
or an API reference (mkdocstrings) that does not render. `make test` installs the docs extra, so this runs in CI."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

needs_mkdocs = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings_handlers") is None,
    reason="the docs extra is not installed (pip install -e '.[docs]'; ./dev test installs it)",
)


def _build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=180,
    )  # fmt: skip


@needs_mkdocs
def test_docs_build_strict(tmp_path: Path) -> None:
    done = _build(REPO / "mkdocs.yml", tmp_path / "site")
    assert done.returncode == 0, done.stdout + done.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("nestling.task.Task.build_model", "nestling.core.options.config.Config", "nestling.core.ml.scoring.cv_score",
                 "nestling.commands.api.tune", "nestling.commands.api_keywords.plan_keywords"):  # fmt: skip
        assert f'id="{name}"' in api, name  # mkdocstrings rendered the public API
    assert (tmp_path / "site" / "report" / "index.html").is_file()


@needs_mkdocs
def test_docs_build_fails_on_a_broken_link(tmp_path: Path) -> None:
    """The check can fail: the same site with one dead link is refused."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for page in (REPO / "docs").glob("*.md"):
        (docs / page.name).write_text(page.read_text())
    (docs / "report.md").write_text((docs / "report.md").read_text() + "\nSee [nowhere](no-such-page.md).\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text((REPO / "mkdocs.yml").read_text().replace("docs_dir: docs", f"docs_dir: {docs}")
                      .replace("paths: [src]", f"paths: [{REPO / 'src'}]"))  # fmt: skip
    done = _build(config, tmp_path / "site")
    assert done.returncode != 0
    assert "no-such-page.md" in done.stdout + done.stderr
