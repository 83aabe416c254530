"""The flowchart on a page: a thin wrapper over :mod:`engine.core.diagram`.

Returns ``None`` when the file cannot be drawn (no layout, unreadable);
templates then show the "sơ đồ chưa có" placeholder.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Iterable, Mapping, Sequence

from markupsafe import Markup

from engine.core import diagram

log = logging.getLogger(__name__)

__all__ = ["render", "step_overlay"]


def render(
    xml: bytes | None,
    *,
    process_id: str | None = None,
    states: Mapping[str, str] | None = None,
    titles: Mapping[str, str] | None = None,
    badges: Mapping[str, str] | None = None,
    links: Mapping[str, str] | None = None,
    heat: Mapping[str, float] | None = None,
    highlight: Iterable[str] = (),
) -> Markup | None:
    """The diagram of ``xml`` as inline SVG, or None when it cannot be drawn."""
    if not xml:
        return None
    try:
        overlay = None
        if states or titles or badges or links or heat:
            overlay = diagram.Overlay(states=dict(states or {}), badges=dict(badges or {}), heat=dict(heat or {}),
                                     titles=dict(titles or {}), links=dict(links or {}))
        svg = diagram.render_svg(xml, process_id=process_id, overlay=overlay, highlight=list(highlight))
    except Exception as err:  # DiagramError or anything the renderer trips on: show the placeholder
        if not isinstance(err, diagram.DiagramError):
            log.exception("diagram could not be drawn")
        return None
    return Markup(svg)


def step_overlay(steps: Sequence[Any], now: datetime) -> tuple[dict[str, str], dict[str, str]]:
    """States and titles per step id from a dossier's steps (oldest first): done, current, late."""
    states: dict[str, str] = {}
    titles: dict[str, str] = {}
    for step in steps:
        if step.state == "completed":
            state = "done"
        elif step.state in ("ready", "claimed"):
            state = "late" if step.due_at is not None and step.due_at < now else "current"
        else:
            continue
        states[step.step_id] = state
        label = {"done": "Đã xử lý", "current": "Đang xử lý", "late": "Quá hạn"}[state]
        titles[step.step_id] = f"{step.step_name}: {label}"
    return states, titles
