"""Charts for the supervisors' pages: SVG drawn on the server by pygal, with no script.

pygal embeds a small script for tooltips; the pages run no script at all
(Content-Security-Policy ``script-src 'none'``), so it is removed and the
values are shown as labels instead.
"""

from __future__ import annotations

from typing import Sequence

import pygal
from lxml import etree
from markupsafe import Markup
from pygal.style import Style

__all__ = ["bars", "line"]

_STYLE = Style(
    background="transparent",
    plot_background="transparent",
    foreground="#1f2933",
    foreground_strong="#1f2933",
    foreground_subtle="#52606d",
    colors=("#0b5394", "#c0392b", "#e69138", "#38761d", "#674ea7"),
    font_family="Arial, 'Liberation Sans', sans-serif",
    label_font_size=12,
    major_label_font_size=12,
    legend_font_size=13,
    value_font_size=11,
    title_font_size=15,
)


def _svg(chart: pygal.graph.graph.Graph) -> Markup:
    root = etree.fromstring(chart.render(is_unicode=True).encode())
    for script in root.iter("{http://www.w3.org/2000/svg}script"):
        script.getparent().remove(script)
    root.set("role", "img")
    root.set("class", (root.get("class") or "") + " bieu-do")
    return Markup(etree.tostring(root, encoding="unicode"))


def _config(title: str, labels: Sequence[str], height: int) -> dict[str, object]:
    return {
        "title": title,
        "x_labels": list(labels),
        "style": _STYLE,
        "js": [],
        "disable_xml_declaration": True,
        "width": 760,
        "height": height,
        "explicit_size": False,
        "print_values": True,
        "legend_at_bottom": True,
        "x_label_rotation": 20 if len(labels) > 6 else 0,
        "truncate_label": 28,
        "no_data_text": "Chưa có số liệu",
    }


def line(title: str, labels: Sequence[str], series: dict[str, Sequence[float | None]], percent: bool = False) -> Markup:
    """A line chart (e.g. the on-time rate month by month)."""
    chart = pygal.Line(**_config(title, labels, 320), range=(0, 100) if percent else None,
                       value_formatter=(lambda v: f"{v:.0f} %") if percent else (lambda v: f"{v:g}"))
    for name, values in series.items():
        chart.add(name, list(values))
    return _svg(chart)


def bars(title: str, labels: Sequence[str], series: dict[str, Sequence[float]], stacked: bool = True) -> Markup:
    """Bars per category (e.g. load per agency: in time and overdue)."""
    kind = pygal.StackedBar if stacked else pygal.Bar
    chart = kind(**_config(title, labels, 360), value_formatter=lambda v: f"{v:g}")
    for name, values in series.items():
        chart.add(name, list(values))
    return _svg(chart)
