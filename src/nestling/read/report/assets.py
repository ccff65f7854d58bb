"""The Vega bundle inlined into every page (cached on disk per vl_convert version) and the PNG of each figure."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from nestling.core.tree import naming
from nestling.core.tree.atomic import write_atomic
from nestling.read.report.page import Figure

if TYPE_CHECKING:

    pass


def javascript_bundle() -> str:
    """Vega + Vega-Lite + vega-embed as one script. vl_convert bundles them in ~3 s, so the result is kept on disk
    per vl_convert version (a read-only home just bundles every time)."""
    import vl_convert

    version = getattr(vl_convert, "__version__", "unknown")
    path = naming.user_cache_dir() / f"vega-bundle-{version}.js"
    try:
        return path.read_text()
    except OSError:
        pass
    bundle: str = vl_convert.javascript_bundle()  # type: ignore[call-arg]  # default snippet: vegaEmbed on window
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, bundle)
    except OSError as exc:
        print(f"nestling: could not cache the Vega bundle in {path}: {exc}", file=sys.stderr)
    return bundle


def write_if_changed(path: Path, data: bytes) -> None:
    """The report of an unchanged tree is the same bytes; leaving the files alone keeps a second collect or a
    resume with nothing to do from touching the tree."""
    try:
        if path.read_bytes() == data:
            return
    except OSError:
        pass
    write_atomic(path, data)


def write_pngs(target: Path, figs: list[Figure]) -> list[Path]:
    """One PNG per figure, rendered by vl_convert (no browser); PNGs of figures no longer on the page are removed."""
    written = []
    for fig in figs:
        import vl_convert

        path = naming.report_figure(target, fig.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_if_changed(path, vl_convert.vegalite_to_png(fig.spec, scale=1.5))
        written.append(path)
    folder = naming.report_figures_dir(target)
    if folder.is_dir():
        for stale in set(folder.glob("*.png")) - set(written):
            stale.unlink(missing_ok=True)
    return written
