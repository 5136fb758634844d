"""The HTML pieces every comparison report is built from: the page, a figure section, the
warning box. Each text is escaped; images are embedded as base64 PNG, so a report references
nothing outside itself."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from typing import Any

from hyperbayes.inference.workflow.compare import message_items

__all__ = ["page", "section", "warning_box"]


def section(key: str, title: str, images: Sequence[bytes], *, intro: str = "",
            note: str | None = None) -> str:
    """A ``<section id=key>`` with a title, an introduction, a note (in red: why a figure is
    missing) and the PNG images embedded."""
    body = f"<p>{html.escape(intro)}</p>"
    if note:
        body += f'<p class="note">{html.escape(note)}</p>'
    for png in images:
        b64 = base64.b64encode(png).decode("ascii")
        body += f'<img alt="{html.escape(title)}" src="data:image/png;base64,{b64}"/>'
    return f'<section id="{html.escape(key)}"><h2>{html.escape(title)}</h2>{body}</section>'


def warning_box(summary: Mapping[str, Any]) -> str:
    """Every method's failure message and warnings in one box (or a green 'no diagnostic
    failed')."""
    items = message_items(summary.get("table", []))
    if not items:
        return '<div class="ok">No diagnostic failed.</div>'
    return '<div class="warn"><h2>Warnings</h2><ul>' + "".join(f"<li>{i}</li>" for i in items) + "</ul></div>"


def page(body: str) -> str:
    """The whole HTML document around ``body``, with the report's style sheet."""
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child,td:nth-child(2){text-align:left}tr.failed{background:#fdd}"
        "tr.degenerate,tr.warnings{background:#fff4d6}tr.disagrees{background:#ffdcb8}"
        "td{white-space:nowrap}td.oracle{white-space:normal;min-width:12em}.oracle{text-align:left}"
        ".warn{background:#fff4d6;border:2px solid #e0a000;padding:0.5em 1em}"
        ".ok{background:#e6f6e6;padding:0.5em 1em}.note{color:#a00}.small{font-size:85%;color:#555}"
        "img{max-width:100%;display:block;margin:0.5em 0}"
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>hyperbayes report</title>'
        f"<style>{style}</style></head><body>{body}</body></html>\n"
    )
