"""A report page: its sections and figures, rendered as one self-contained HTML document.

The page must open from disk on an air-gapped login node: no CDN, no server. Vega, Vega-Lite and vega-embed are
inlined once (assets.py); the figures are Vega-Lite specs (figures.py) with their data inlined."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nestling import __version__
from nestling.core.tree import naming

if TYPE_CHECKING:

    pass


@dataclass(frozen=True)
class Figure:
    key: str  # DOM id and PNG file stem
    title: str
    spec: dict[str, Any]
    note: str = ""


@dataclass
class Section:
    title: str
    body: str = ""  # HTML: tables, text
    figures: list[Figure] = field(default_factory=list)


@dataclass
class Page:
    title: str
    subtitle: str
    sections: list[Section]
    as_of: str = ""  # ", as of <the last result>": not the time of writing, so an unchanged tree gives the same page
    provenance: str = ""  # the header's line on the code (commit, uncommitted changes, snapshot) and differing runs

    @property
    def figures(self) -> list[Figure]:
        return [f for s in self.sections for f in s.figures]


def _script_json(obj: Any) -> str:
    """JSON inside a <script>: `<` escaped so that no value can close the tag."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1280px;padding:0 24px 48px;
color:#222}
h1{font-size:24px;margin:24px 0 4px}h2{font-size:19px;margin:32px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:16px 0 6px}.sub{color:#555;margin:0 0 12px}.note{color:#666;font-size:12px}
nav a{margin-right:14px}.scroll{overflow-x:auto;max-height:640px;overflow-y:auto}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{padding:3px 9px;border-bottom:1px solid #eee;
text-align:left;white-space:nowrap}thead th{position:sticky;top:0;background:#f6f6f6}td.num{text-align:right;
font-variant-numeric:tabular-nums}tr.state-failed td,tr.state-missing td{color:#999}.error-text{white-space:pre-wrap;
font-family:ui-monospace,monospace;font-size:12px;color:#a11}figure{margin:12px 0}figcaption{color:#555;
font-size:12px}#report-errors:empty{display:none}#report-errors{background:#fee;border:1px solid #c00;padding:8px}
"""
ERROR_HOOK = """
window.reportError=function(m){var e=document.getElementById('report-errors');if(e){var d=document.createElement('div');
d.textContent=String(m);e.appendChild(d);}};
window.addEventListener('error',function(ev){reportError(ev.message||ev);});
window.addEventListener('unhandledrejection',function(ev){reportError(ev.reason);});
"""
EMBED = """
(function(){var specs=JSON.parse(document.getElementById('report-specs').textContent);
Object.keys(specs).forEach(function(id){
vegaEmbed('#fig-'+id,specs[id],{renderer:'svg',actions:{export:true,source:false,compiled:false,editor:false}})
.then(function(){document.getElementById('fig-'+id).setAttribute('data-rendered','1');})
.catch(function(err){console.error(err);reportError(id+': '+err);});});})();
"""


def render(page: Page, bundle: str, pngs: bool = True) -> str:
    """The page: CSS, the error hook, the Vega bundle, the sections, then the specs and the embed script.

    `pngs`: the figures are also written as PNG files (`nestling report`), so the page links them; otherwise each
    figure's menu still exports it as PNG or SVG."""
    toc = "".join(f'<a href="#s{i}">{html.escape(s.title)}</a>' for i, s in enumerate(page.sections))
    files = f"; the figures are also in {naming.REPORT_FIGURES}/ as PNG" if pngs else (
        f"; each figure's menu saves it as PNG or SVG (nestling report writes them all to {naming.REPORT_FIGURES}/)"
    )
    parts = [
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>{html.escape(page.title)}</title><style>{CSS}</style>",
        f"<script>{ERROR_HOOK}</script><script>{bundle}</script></head><body>",
        f"<h1>{html.escape(page.title)}</h1><p class=\"sub\">{html.escape(page.subtitle)}</p>",
        f'<p class="sub" id="provenance">{html.escape(page.provenance)}</p>' if page.provenance else "",
        f'<p class="note">nestling {__version__} report{page.as_of}{html.escape(files)}.</p>',
        '<div id="report-errors"></div>',
        f"<nav>{toc}</nav>",
    ]
    for i, section in enumerate(page.sections):
        parts.append(f'<section id="s{i}"><h2>{html.escape(section.title)}</h2>{section.body}')
        for fig in section.figures:
            link = f' (<a href="{naming.REPORT_FIGURES}/{fig.key}.png">PNG</a>)' if pngs else ""
            parts.append(f'<figure><div class="figure" id="fig-{fig.key}"></div><figcaption>'
                         f'{html.escape(fig.title)}{link}{" " + html.escape(fig.note) if fig.note else ""}'
                         "</figcaption></figure>")  # fmt: skip
        parts.append("</section>")
    specs = {fig.key: fig.spec for fig in page.figures}
    parts.append(f'<script type="application/json" id="report-specs">{_script_json(specs)}</script>')
    parts.append(f"<script>{EMBED}</script></body></html>\n")
    return "".join(parts)
