"""Server-side drawing of BPMN diagrams: BPMN DI → a standalone SVG string.

:func:`render_svg` draws what a file's BPMN DI (``bpmndi:BPMNDiagram``) lays
out, in the look of bpmn.io: pools and lanes, activities with their type and
loop markers, events with their triggers, gateways, data, annotations, groups
and every kind of flow, with the element names as labels. The file is
untrusted: it is read by :func:`engine.core.bpmn.parse_xml` (no entities, no
DTD, no network, size limit) and every piece of text or URL written into the
SVG is escaped.

Each drawn element is a ``<g>`` carrying ``data-element-id`` (the BPMN id),
``data-type`` (the BPMN element, e.g. ``userTask``) and classes such as
``bpmn-element bpmn-task``, ``bpmn-event``, ``bpmn-gateway``, ``bpmn-flow``,
``bpmn-lane``, ``bpmn-participant`` so that pages can style and link them. An
:class:`Overlay` adds per-element states (``done``, ``current``, ``late``,
``waiting``), small badges, a heat colouring, tooltips and links; ``highlight``
outlines elements in magenta.

Example::

    svg = render_svg(data, overlay=Overlay(states={"tiep_nhan": "done"}, badges={"tham_dinh": "12 hồ sơ"}))
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .bpmn import BPMN_NS, BPMNDI_NS, Problem, parse_xml

__all__ = ["STATES", "DiagramError", "Overlay", "render_svg"]

DC_NS = "http://www.omg.org/spec/DD/20100524/DC"
DI_NS = "http://www.omg.org/spec/DD/20100524/DI"

#: The progress states an overlay can give an element.
STATES = ("done", "current", "late", "waiting")

_SHAPE = f"{{{BPMNDI_NS}}}BPMNShape"
_EDGE = f"{{{BPMNDI_NS}}}BPMNEdge"
_LABEL = f"{{{BPMNDI_NS}}}BPMNLabel"
_PLANE = f"{{{BPMNDI_NS}}}BPMNPlane"
_DIAGRAM = f"{{{BPMNDI_NS}}}BPMNDiagram"
_BOUNDS = f"{{{DC_NS}}}Bounds"
_WAYPOINT = f"{{{DI_NS}}}waypoint"

INK = "#22242a"
FONT_FAMILY = "Arial, 'Liberation Sans', Helvetica, sans-serif"
MARGIN = 20.0
TASK_FONT = 12.0
LABEL_FONT = 11.0
LINE_HEIGHT = 1.2


class DiagramError(ValueError):
    """The file cannot be drawn; the message says why, in Vietnamese.

    ``problems`` holds the :class:`engine.core.bpmn.Problem` list when the file
    could not even be read as BPMN XML.
    """

    def __init__(self, message: str, problems: Iterable[Problem] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


def _safe_link(url: str) -> str | None:
    """``url`` if it is relative or http(s), else None (``javascript:``, ``data:``…)."""
    if not isinstance(url, str):
        return None
    # Browsers ignore ASCII whitespace and control characters inside a scheme.
    squeezed = "".join(ch for ch in url if ord(ch) > 0x20 and ord(ch) != 0x7F)
    if not squeezed or squeezed.startswith("\\"):
        return None
    try:
        scheme = urlsplit(squeezed).scheme.lower()
    except ValueError:
        return None
    if scheme not in ("", "http", "https"):
        return None
    if scheme == "" and ":" in squeezed.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]:
        return None
    return url.strip()


@dataclass(frozen=True)
class Overlay:
    """What a page paints over a diagram, by BPMN element id.

    * ``states``: ``done`` (green), ``current`` (blue, thick), ``late`` (red) or
      ``waiting`` (amber); also written as ``data-state``;
    * ``badges``: a short text in a rounded badge at the top-right corner
      (``"12 hồ sơ"``, ``"3,4 ngày"``);
    * ``heat``: 0..1, a fill from pale yellow (0) to deep red (1);
    * ``titles``: a tooltip (SVG ``<title>``);
    * ``links``: a URL the element links to; only relative or http(s) URLs.

    Bad values raise :class:`ValueError` here, where the overlay is built.
    """

    states: Mapping[str, str] = field(default_factory=dict)
    badges: Mapping[str, str] = field(default_factory=dict)
    heat: Mapping[str, float] = field(default_factory=dict)
    titles: Mapping[str, str] = field(default_factory=dict)
    links: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for element_id, state in self.states.items():
            if state not in STATES:
                raise ValueError(f"Trạng thái “{state}” của phần tử “{element_id}” không hợp lệ; chỉ dùng: {', '.join(STATES)}.")
        for element_id, value in self.heat.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"Mức nhiệt của phần tử “{element_id}” phải là số từ 0 đến 1, không phải {value!r}.")
        for element_id, url in self.links.items():
            if _safe_link(url) is None:
                raise ValueError(f"Liên kết của phần tử “{element_id}” bị từ chối: chỉ cho phép đường dẫn tương đối hoặc http(s).")


# --------------------------------------------------------------------------- text

_INVALID_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _esc(text: Any) -> str:
    """Text safe inside SVG element content and double- or single-quoted attributes."""
    text = _INVALID_XML.sub("", str(text))
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;").replace("'", "&#39;")
    )


#: Advance widths of Arial / Liberation Sans, in thousandths of an em.
_WIDTHS: dict[str, int] = {}
for _chars, _width in (
    ("'", 191),
    ("ijl|", 222),
    ("ftI ,.:;!/\\[]", 278),
    ("r-()`{}", 333),
    ('"', 355),
    ("*", 389),
    ("^", 469),
    ("Jcksvxyz", 500),
    ("abdeghnopqu0123456789#$_?L–đ", 556),
    ("+=<>~", 584),
    ("FTZ", 611),
    ("ABEKPSVXY&", 667),
    ("CDHNRUwĐ", 722),
    ("GOQ", 778),
    ("mM", 833),
    ("%", 889),
    ("W", 944),
    ("—…", 1000),
    ("@", 1015),
):
    for _ch in _chars:
        _WIDTHS[_ch] = _width


def _char_width(ch: str) -> int:
    width = _WIDTHS.get(ch)
    if width is not None:
        return width
    if unicodedata.combining(ch):
        return 0
    base = unicodedata.normalize("NFD", ch)[0]
    width = _WIDTHS.get(base)
    if width is not None:
        return width
    return 1000 if unicodedata.east_asian_width(ch) in ("W", "F") else 556


def _measure(text: str, size: float) -> float:
    return sum(_char_width(ch) for ch in text) * size / 1000.0


def _break_word(word: str, width: float, size: float) -> list[str]:
    pieces, current = [], ""
    for ch in word:
        if current and _measure(current + ch, size) > width:
            pieces.append(current)
            current = ch
        else:
            current += ch
    if current:
        pieces.append(current)
    return pieces


def _wrap(text: str, width: float, size: float, *, break_words: bool = True) -> list[str]:
    """Lines of ``text`` no wider than ``width`` (explicit line breaks kept)."""
    lines: list[str] = []
    width = max(width, size)
    for paragraph in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        words = paragraph.split()
        if not words:
            if lines:
                lines.append("")
            continue
        current = ""
        for word in words:
            candidate = f"{current} {word}" if current else word
            if _measure(candidate, size) <= width:
                current = candidate
                continue
            if current:
                lines.append(current)
            if break_words and _measure(word, size) > width:
                *head, current = _break_word(word, width, size)
                lines.extend(head)
            else:
                current = word
        lines.append(current)
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _fit_label(name: str, label: _Box) -> list[str]:
    """Lines of an external label laid out by a modeller in ``label``.

    The modeller measured the text with its own font: its box tells the width
    and, through its height, how many lines it drew; wrap to match both.
    """
    width = max(label.w + 2, 20.0)
    lines = _wrap(name, width, LABEL_FONT, break_words=False)
    expected = max(1, round(label.h / (LABEL_FONT * LINE_HEIGHT)))
    if len(lines) > expected:
        wider = _wrap(name, width * 1.15, LABEL_FONT, break_words=False)
        if len(wider) <= expected:
            lines = wider
    elif len(lines) < expected:
        low, high = 0.0, width  # the narrowest width that still gives at most ``expected`` lines
        for _ in range(8):
            middle = (low + high) / 2
            if len(_wrap(name, middle, LABEL_FONT, break_words=False)) <= expected:
                high = middle
            else:
                low = middle
        lines = _wrap(name, high, LABEL_FONT, break_words=False)
    return lines


def _n(value: float) -> str:
    """A coordinate, compactly."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Box:
    x: float
    y: float
    w: float
    h: float

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2


def _float(value: str | None) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and abs(number) < 1e7 else None


def _bounds(element: Any) -> _Box | None:
    if element is None:
        return None
    bounds = element.find(_BOUNDS)
    if bounds is None:
        return None
    x, y, w, h = (_float(bounds.get(k)) for k in ("x", "y", "width", "height"))
    if x is None or y is None or w is None or h is None or w < 0 or h < 0:
        return None
    return _Box(x, y, w, h)


def _unit(p: tuple[float, float], q: tuple[float, float]) -> tuple[float, float] | None:
    dx, dy = q[0] - p[0], q[1] - p[1]
    length = math.hypot(dx, dy)
    return (dx / length, dy / length) if length > 1e-6 else None


def _points(points: Iterable[tuple[float, float]]) -> str:
    return " ".join(f"{_n(x)},{_n(y)}" for x, y in points)


def _cross(cx: float, cy: float, arm: float, half: float, angle: float = 0.0) -> list[tuple[float, float]]:
    """Outline of a plus sign (arms ``arm`` long, ``2*half`` thick) turned by ``angle`` degrees."""
    a, h = arm, half
    raw = [(-h, -a), (h, -a), (h, -h), (a, -h), (a, h), (h, h), (h, a), (-h, a), (-h, h), (-a, h), (-a, -h), (-h, -h)]
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in raw]


def _regular(cx: float, cy: float, r: float, sides: int, start: float = -90.0) -> list[tuple[float, float]]:
    return [
        (cx + r * math.cos(math.radians(start + 360.0 * k / sides)), cy + r * math.sin(math.radians(start + 360.0 * k / sides)))
        for k in range(sides)
    ]


# Marker drawings: (kind, geometry, css class, stroke width). Kinds: "poly"
# (closed polygon), "line" (open polyline), "circle" ((cx, cy, r)).
_Prim = tuple[str, Any, str, float]


def _event_marker(kind: str, throw: bool) -> list[_Prim]:
    """The trigger symbol of an event, in a 36 × 36 box."""
    fill = "bpmn-ink" if throw else "bpmn-paper"
    if kind == "message":
        envelope = [(8.5, 11.5), (27.5, 11.5), (27.5, 24.5), (8.5, 24.5)]
        flap = [(8.5, 11.5), (18, 19), (27.5, 11.5)]
        return [("poly", envelope, fill, 1.5), ("line", flap, "bpmn-knockout" if throw else "bpmn-stroke", 1.5)]
    if kind == "timer":
        prims: list[_Prim] = [("circle", (18, 18, 10.5), "bpmn-paper", 1.5)]
        for k in range(12):
            angle = math.radians(30 * k)
            inner = 7.5 if k % 3 == 0 else 8.8
            prims.append(
                ("line", [(18 + inner * math.sin(angle), 18 - inner * math.cos(angle)), (18 + 10.5 * math.sin(angle), 18 - 10.5 * math.cos(angle))], "bpmn-stroke", 1)
            )
        prims.append(("line", [(18, 11), (18, 18), (23.5, 15.5)], "bpmn-stroke", 1.5))
        return prims
    if kind == "signal":
        return [("poly", [(18, 8.5), (27, 24.5), (9, 24.5)], fill, 1.5)]
    if kind == "error":
        return [("poly", [(10, 26.5), (14, 11), (20.5, 19.5), (26, 9.5), (22, 25.5), (15.5, 17)], fill, 1.5)]
    if kind == "escalation":
        return [("poly", [(18, 8.5), (25.5, 27), (18, 19.5), (10.5, 27)], fill, 1.5)]
    if kind == "conditional":
        prims = [("poly", [(11.5, 9.5), (24.5, 9.5), (24.5, 26.5), (11.5, 26.5)], "bpmn-paper", 1.5)]
        prims += [("line", [(14, y), (22, y)], "bpmn-stroke", 1) for y in (13, 16.5, 20, 23.5)]
        return prims
    if kind == "link":
        return [("poly", [(9, 15), (19, 15), (19, 10.5), (27.5, 18), (19, 25.5), (19, 21), (9, 21)], fill, 1.5)]
    if kind == "compensate":
        return [
            ("poly", [(8, 18), (17.5, 11.5), (17.5, 24.5)], fill, 1.5),
            ("poly", [(17.5, 18), (27, 11.5), (27, 24.5)], fill, 1.5),
        ]
    if kind == "terminate":
        return [("circle", (18, 18, 11), "bpmn-ink", 0)]
    if kind == "cancel":
        return [("poly", _cross(18, 18, 10.5, 2.6, 45), fill, 1.5)]
    if kind == "multiple":
        return [("poly", _regular(18, 18.8, 10.5, 5), fill, 1.5)]
    if kind == "parallelMultiple":
        return [("poly", _cross(18, 18, 10.5, 3), "bpmn-paper", 1.5)]
    return []


def _gateway_marker(kind: str, sem: Any, shape: Any) -> list[_Prim]:
    """The symbol inside a gateway diamond, in a 50 × 50 box."""
    if kind == "exclusiveGateway":
        # bpmn.io draws the X only when the DI says isMarkerVisible="true".
        return [("poly", _cross(25, 25, 11.5, 2.6, 45), "bpmn-ink", 0)] if shape.get("isMarkerVisible") == "true" else []
    if kind == "parallelGateway":
        return [("poly", _cross(25, 25, 13, 2.6), "bpmn-ink", 0)]
    if kind == "inclusiveGateway":
        return [("circle", (25, 25, 11.5), "bpmn-stroke", 2.5)]
    if kind == "complexGateway":
        return [("poly", _cross(25, 25, 13, 1.8), "bpmn-ink", 0), ("poly", _cross(25, 25, 12, 1.8, 45), "bpmn-ink", 0)]
    if kind == "eventBasedGateway":
        prims: list[_Prim] = [("circle", (25, 25, 13), "bpmn-stroke", 1)]
        if sem.get("instantiate") != "true":
            prims.append(("circle", (25, 25, 10.5), "bpmn-stroke", 1))
        if sem.get("eventGatewayType") == "Parallel":
            prims.append(("poly", _cross(25, 25, 7.5, 2.2), "bpmn-stroke", 1.5))
        else:
            prims.append(("poly", _regular(25, 25.6, 7, 5), "bpmn-stroke", 1.5))
        return prims
    return []


def _loop_marker() -> tuple[str, str]:
    cx, cy, r = 7.0, 7.5, 5.0
    start = (cx + r * math.cos(math.radians(-50)), cy + r * math.sin(math.radians(-50)))
    end = (cx + r * math.cos(math.radians(-130)), cy + r * math.sin(math.radians(-130)))
    tangent = (-math.sin(math.radians(-130)), math.cos(math.radians(-130)))
    normal = (-tangent[1], tangent[0])
    back = (end[0] - 3.5 * tangent[0], end[1] - 3.5 * tangent[1])
    arc = f"M{_n(start[0])} {_n(start[1])}A{_n(r)} {_n(r)} 0 1 1 {_n(end[0])} {_n(end[1])}"
    head = (
        f"M{_n(back[0] + 3 * normal[0])} {_n(back[1] + 3 * normal[1])}L{_n(end[0])} {_n(end[1])}"
        f"L{_n(back[0] - 3 * normal[0])} {_n(back[1] - 3 * normal[1])}"
    )
    return arc, head


_LOOP_ARC, _LOOP_HEAD = _loop_marker()

#: Task type icons, drawn at the task's top-left corner (origin x+5, y+5).
_TASK_ICONS: dict[str, list[tuple[str, str, float]]] = {
    "user": [
        ("M2.5 17.5C2.5 12.2 5.2 10 10 10S17.5 12.2 17.5 17.5Z", "bpmn-paper", 1.2),
        ("M6.5 17.5V14.5M13.5 17.5V14.5", "bpmn-stroke", 1),
        ("M10 2.2a3.6 3.6 0 1 0 0.01 0Z", "bpmn-paper", 1.2),
        ("M6.5 5.2C8 6.4 11.5 6.4 13.4 4.6", "bpmn-stroke", 1),
    ],
    "manual": [
        (
            "M2 9.5L6.5 5.5H16.5C17.6 5.5 17.6 7.5 16.5 7.5H11M17.5 7.5C18.6 7.5 18.6 10 17.5 10H11M17 10"
            "C18.1 10 18.1 12.5 17 12.5H11M15.5 12.5C16.6 12.5 16.6 15 15.5 15H6.5C3.8 15 2 13.5 2 11.5Z",
            "bpmn-paper",
            1.1,
        )
    ],
    "send": [
        ("M2 4.5H18.5V16H2Z", "bpmn-ink", 0),
        ("M2 4.5L10.25 11L18.5 4.5", "bpmn-knockout", 1.2),
    ],
    "receive": [
        ("M2 4.5H18.5V16H2Z", "bpmn-paper", 1.2),
        ("M2 4.5L10.25 11L18.5 4.5", "bpmn-stroke", 1.2),
    ],
    "script": [
        ("M5.5 2H16C13 5.5 13 8 16 11S19 16.5 16 20H5.5C8.5 16.5 8.5 14 5.5 11S2.5 5.5 5.5 2Z", "bpmn-paper", 1.2),
        ("M6.5 6H12.5M8.5 9.5H14.5M8 13H14M7.8 16.5H13.5", "bpmn-stroke", 1),
    ],
    "businessRule": [
        ("M2 4H18.5V17H2Z", "bpmn-paper", 1.2),
        ("M2 4H18.5V8H2Z", "bpmn-ink", 0),
        ("M2 12.5H18.5M7.5 8V17", "bpmn-stroke", 1),
    ],
}


def _gear_path() -> str:
    points = []
    teeth = 8
    for k in range(teeth * 4):
        angle = 2 * math.pi * k / (teeth * 4) - math.pi / 2
        radius = 8.0 if (k % 4) in (1, 2) else 6.0
        points.append((10 + radius * math.cos(angle), 10 + radius * math.sin(angle)))
    outline = "M" + "L".join(f"{_n(x)} {_n(y)}" for x, y in points) + "Z"
    return outline + "M10 7a3 3 0 1 0 0.01 0Z"


_TASK_ICONS["service"] = [(_gear_path(), "bpmn-paper", 1.1)]

_TASK_KINDS = {
    "task": None,
    "userTask": "user",
    "manualTask": "manual",
    "serviceTask": "service",
    "scriptTask": "script",
    "sendTask": "send",
    "receiveTask": "receive",
    "businessRuleTask": "businessRule",
}
_GLOBAL_TASKS = {
    "globalTask": None,
    "globalUserTask": "user",
    "globalManualTask": "manual",
    "globalScriptTask": "script",
    "globalBusinessRuleTask": "businessRule",
}
_SUBPROCESSES = {"subProcess", "transaction", "adHocSubProcess"}
_EVENTS = {"startEvent", "endEvent", "intermediateCatchEvent", "intermediateThrowEvent", "boundaryEvent", "implicitThrowEvent"}
_GATEWAYS = {"exclusiveGateway", "parallelGateway", "inclusiveGateway", "complexGateway", "eventBasedGateway"}
_DATA_OBJECTS = {"dataObjectReference", "dataObject", "dataInput", "dataOutput"}
_DATA_STORES = {"dataStoreReference", "dataStore"}
_EVENT_DEFINITIONS = {
    "messageEventDefinition": "message",
    "timerEventDefinition": "timer",
    "signalEventDefinition": "signal",
    "errorEventDefinition": "error",
    "escalationEventDefinition": "escalation",
    "conditionalEventDefinition": "conditional",
    "linkEventDefinition": "link",
    "compensateEventDefinition": "compensate",
    "terminateEventDefinition": "terminate",
    "cancelEventDefinition": "cancel",
}

_STYLE = (
    ".bpmn-diagram text{font-family:" + FONT_FAMILY + ";fill:" + INK + "}"
    ".bpmn-diagram .bpmn-body,.bpmn-diagram .bpmn-inner{fill:#fff;stroke:" + INK + "}"
    ".bpmn-diagram .bpmn-lane>.bpmn-body,.bpmn-diagram .bpmn-group>.bpmn-body{fill:none}"
    ".bpmn-diagram .bpmn-annotation>.bpmn-body{fill:transparent;stroke:none}"
    ".bpmn-diagram .bpmn-line{fill:none;stroke:" + INK + ";stroke-linejoin:round}"
    ".bpmn-diagram .bpmn-ink{fill:" + INK + ";stroke:" + INK + "}"
    ".bpmn-diagram .bpmn-paper{fill:#fff;stroke:" + INK + "}"
    ".bpmn-diagram .bpmn-stroke{fill:none;stroke:" + INK + "}"
    ".bpmn-diagram .bpmn-knockout{fill:none;stroke:#fff}"
    ".bpmn-diagram a{cursor:pointer}"
    ".bpmn-diagram a:hover .bpmn-body{stroke-width:3px}"
    ".bpmn-diagram .state-done>.bpmn-body{fill:#e3f4e4;stroke:#2e7d32}"
    ".bpmn-diagram .state-current>.bpmn-body{fill:#e1eefc;stroke:#1565c0;stroke-width:4px}"
    ".bpmn-diagram .state-late>.bpmn-body{fill:#fde6e4;stroke:#c62828;stroke-width:3px}"
    ".bpmn-diagram .state-waiting>.bpmn-body{fill:#fff3d4;stroke:#d08b00;stroke-width:3px}"
    ".bpmn-diagram .bpmn-element>.bpmn-line{fill:none}"
    ".bpmn-diagram .state-done>.bpmn-line,.bpmn-diagram .state-done>.bpmn-arrow{stroke:#2e7d32}"
    ".bpmn-diagram .state-current>.bpmn-line,.bpmn-diagram .state-current>.bpmn-arrow{stroke:#1565c0;stroke-width:3px}"
    ".bpmn-diagram .state-late>.bpmn-line,.bpmn-diagram .state-late>.bpmn-arrow{stroke:#c62828}"
    ".bpmn-diagram .state-waiting>.bpmn-line,.bpmn-diagram .state-waiting>.bpmn-arrow{stroke:#d08b00}"
    ".bpmn-diagram .state-done>.bpmn-arrow.bpmn-ink{fill:#2e7d32}"
    ".bpmn-diagram .state-current>.bpmn-arrow.bpmn-ink{fill:#1565c0}"
    ".bpmn-diagram .state-late>.bpmn-arrow.bpmn-ink{fill:#c62828}"
    ".bpmn-diagram .state-waiting>.bpmn-arrow.bpmn-ink{fill:#d08b00}"
    ".bpmn-diagram .bpmn-highlight-outline{fill:none;stroke:#d500a0;stroke-width:5px;stroke-opacity:.85}"
    ".bpmn-diagram .bpmn-badge rect{fill:#37474f;stroke:#fff;stroke-width:1px}"
    ".bpmn-diagram .bpmn-badge text{fill:#fff;font-size:11px;font-weight:bold}"
    ".bpmn-diagram .bpmn-label-inverse{fill:#fff}"
)

_HEAT_STOPS = ((0.0, (255, 255, 204)), (0.5, (253, 141, 60)), (1.0, (177, 0, 38)))


def _heat_colour(value: float) -> str:
    value = min(1.0, max(0.0, float(value)))
    for (v0, c0), (v1, c1) in zip(_HEAT_STOPS, _HEAT_STOPS[1:]):
        if value <= v1:
            t = (value - v0) / (v1 - v0)
            r, g, b = (round(a + (b_ - a) * t) for a, b_ in zip(c0, c1))
            return f"#{r:02x}{g:02x}{b:02x}"
    return "#b10026"


def _local(element: Any) -> str:
    tag = element.tag
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


# --------------------------------------------------------------------------- rendering


class _Renderer:
    def __init__(self, root: Any, overlay: Overlay, highlight: set[str]) -> None:
        self.root = root
        self.overlay = overlay
        self.highlight = highlight
        self.by_id: dict[str, Any] = {}
        for element in root.iter(f"{{{BPMN_NS}}}*"):
            element_id = element.get("id")
            if element_id and element_id not in self.by_id:
                self.by_id[element_id] = element
        self.defaults = {el.get("default") for el in self.by_id.values() if el.get("default")}
        self.min_x = self.min_y = math.inf
        self.max_x = self.max_y = -math.inf
        self.top: list[str] = []

    # ---- extents
    def grow(self, x0: float, y0: float, x1: float, y1: float) -> None:
        self.min_x, self.min_y = min(self.min_x, x0, x1), min(self.min_y, y0, y1)
        self.max_x, self.max_y = max(self.max_x, x0, x1), max(self.max_y, y0, y1)

    # ---- diagram selection
    def pick_plane(self, process_id: str | None) -> Any:
        planes = [p for d in self.root.iter(_DIAGRAM) for p in d.findall(_PLANE)]
        drawn = [p for p in planes if p.find(_SHAPE) is not None or p.find(_EDGE) is not None]
        if not drawn:
            raise DiagramError(
                "Tệp BPMN không có phần bố cục sơ đồ (BPMN DI: bpmndi:BPMNDiagram với các BPMNShape/BPMNEdge) nên không vẽ được; "
                "hãy mở và lưu lại tệp bằng một trình vẽ BPMN như Camunda Modeler hoặc bpmn.io."
            )
        if process_id is None:
            for plane in drawn:
                element = self.by_id.get(plane.get("bpmnElement") or "")
                if element is None or _local(element) in ("process", "collaboration"):
                    return plane
            return drawn[0]
        for plane in drawn:
            if self._plane_shows(plane, process_id):
                return plane
        raise DiagramError(f"Tệp BPMN không có sơ đồ nào vẽ quy trình “{process_id}”.")

    def _plane_shows(self, plane: Any, process_id: str) -> bool:
        if plane.get("bpmnElement") == process_id:
            element = self.by_id.get(process_id)
            return element is None or _local(element) == "process"
        element = self.by_id.get(plane.get("bpmnElement") or "")
        if element is not None and _local(element) == "collaboration":
            if any(p.get("processRef") == process_id for p in element.iter(f"{{{BPMN_NS}}}participant")):
                return True
        for shape in plane.findall(_SHAPE):
            target = self.by_id.get(shape.get("bpmnElement") or "")
            if target is not None and _local(target) == "participant" and target.get("processRef") == process_id:
                return True
        return False

    # ---- element groups
    def wrap(self, element_id: str, local: str, classes: str, inner: list[str]) -> str:
        overlay = self.overlay
        attrs = [f'class="bpmn-element {classes}{self._state_class(element_id)}"', f'data-element-id="{_esc(element_id)}"']
        if local:
            attrs.append(f'data-type="{_esc(local)}"')
        state = overlay.states.get(element_id)
        if state in STATES:
            attrs.append(f'data-state="{state}"')
        if element_id in overlay.heat:
            attrs.append(f'data-heat="{_n(min(1.0, max(0.0, float(overlay.heat[element_id]))))}"')
        title = overlay.titles.get(element_id)
        head = f"<title>{_esc(title)}</title>" if title else ""
        markup = f"<g {' '.join(attrs)}>{head}{''.join(inner)}</g>"
        link = overlay.links.get(element_id)
        safe = _safe_link(link) if link is not None else None
        if safe is not None:
            markup = f'<a href="{_esc(safe)}">{markup}</a>'
        return markup

    def _state_class(self, element_id: str) -> str:
        state = self.overlay.states.get(element_id)
        classes = f" state-{state}" if state in STATES else ""
        if element_id in self.highlight:
            classes += " bpmn-highlighted"
        return classes

    def fill_style(self, element_id: str) -> str:
        value = self.overlay.heat.get(element_id)
        return "" if value is None else f' style="fill:{_heat_colour(value)}"'

    def inverse_label(self, element_id: str) -> bool:
        value = self.overlay.heat.get(element_id)
        return value is not None and float(value) > 0.7

    # ---- text
    def text(
        self,
        lines: list[str],
        x: float,
        top: float,
        size: float,
        anchor: str = "middle",
        transform: str = "",
        cls: str = "bpmn-label",
        grow: bool = True,
    ) -> str:
        if not lines:
            return ""
        line_height = size * LINE_HEIGHT
        first = top + (line_height + size * 0.7) / 2
        spans = "".join(
            f'<tspan x="{_n(x)}" y="{_n(first + i * line_height)}">{_esc(line)}</tspan>' for i, line in enumerate(lines)
        )
        if grow:
            widest = max(_measure(line, size) for line in lines)
            left = x - widest / 2 if anchor == "middle" else x
            self.grow(left, top, left + widest, top + len(lines) * line_height)
        extra = f' transform="{transform}"' if transform else ""
        return f'<text class="{cls}" font-size="{_n(size)}" text-anchor="{anchor}"{extra}>{spans}</text>'

    def centred_text(self, name: str, box: _Box, size: float, padding: float = 5.0, cls: str = "bpmn-label") -> str:
        lines = _wrap(name, box.w - 2 * padding, size)
        height = len(lines) * size * LINE_HEIGHT
        return self.text(lines, box.cx, box.cy - height / 2, size, cls=cls)

    def external_label(self, name: str, di: Any, fallback: tuple[float, float]) -> str:
        """A label outside its shape: at the DI label bounds, else centred below ``fallback``."""
        if not name.strip():
            return ""
        label = _bounds(di.find(_LABEL))
        if label is not None and label.w > 1 and label.h > 1:
            lines = _fit_label(name, label)
            height = len(lines) * LABEL_FONT * LINE_HEIGHT
            top = label.cy - height / 2 if height > label.h else label.y
            return self.text(lines, label.cx, top, LABEL_FONT)
        lines = _wrap(name, 90, LABEL_FONT, break_words=False)
        return self.text(lines, fallback[0], fallback[1], LABEL_FONT)

    # ---- primitives
    def prims(self, prims: list[_Prim], box: _Box, unit: float) -> str:
        sx, sy = box.w / unit, box.h / unit

        def at(px: float, py: float) -> tuple[float, float]:
            return box.x + px * sx, box.y + py * sy

        out = []
        for kind, geometry, cls, width in prims:
            stroke = f' stroke-width="{_n(width)}"' if width else ""
            if kind == "circle":
                cx, cy, r = geometry
                x, y = at(cx, cy)
                rx, ry = r * sx, r * sy
                if abs(rx - ry) < 0.01:
                    out.append(f'<circle class="{cls}" cx="{_n(x)}" cy="{_n(y)}" r="{_n(rx)}"{stroke}/>')
                else:
                    out.append(f'<ellipse class="{cls}" cx="{_n(x)}" cy="{_n(y)}" rx="{_n(rx)}" ry="{_n(ry)}"{stroke}/>')
            else:
                tag = "polygon" if kind == "poly" else "polyline"
                out.append(f'<{tag} class="{cls}" points="{_points(at(px, py) for px, py in geometry)}"{stroke}/>')
        return "".join(out)

    # ---- shapes
    def shape(self, di: Any, sem: Any, box: _Box) -> str:
        element_id = di.get("bpmnElement") or ""
        local = _local(sem) if sem is not None else ""
        self.grow(box.x, box.y, box.x + box.w, box.y + box.h)
        if local == "participant":
            return self.wrap(element_id, local, "bpmn-participant", self.pool(di, sem, box, element_id, lane=False))
        if local == "lane":
            return self.wrap(element_id, local, "bpmn-lane", self.pool(di, sem, box, element_id, lane=True))
        if local in _TASK_KINDS or local in _SUBPROCESSES or local == "callActivity":
            return self.activity(di, sem, box, element_id, local)
        if local in _EVENTS:
            return self.wrap(element_id, local, "bpmn-event", self.event(di, sem, box, element_id, local))
        if local in _GATEWAYS:
            return self.wrap(element_id, local, "bpmn-gateway", self.gateway(di, sem, box, element_id, local))
        if local in _DATA_OBJECTS:
            return self.wrap(element_id, local, "bpmn-data bpmn-data-object", self.data_object(di, sem, box, element_id, local))
        if local in _DATA_STORES:
            return self.wrap(element_id, local, "bpmn-data bpmn-data-store", self.data_store(di, sem, box, element_id))
        if local == "textAnnotation":
            return self.wrap(element_id, local, "bpmn-annotation", self.annotation(sem, box, element_id))
        if local == "group":
            return self.wrap(element_id, local, "bpmn-group", self.group(di, sem, box, element_id))
        body = (
            f'<rect class="bpmn-body" x="{_n(box.x)}" y="{_n(box.y)}" width="{_n(box.w)}" height="{_n(box.h)}" rx="4"'
            f' stroke-width="1.5" stroke-dasharray="4 3"{self.fill_style(element_id)}/>'
        )
        name = (sem.get("name") or "") if sem is not None else ""
        return self.wrap(element_id, local, "bpmn-unknown", [body, self.centred_text(name, box, TASK_FONT)])

    def pool(self, di: Any, sem: Any, box: _Box, element_id: str, *, lane: bool) -> list[str]:
        horizontal = di.get("isHorizontal") != "false"
        body = (
            f'<rect class="bpmn-body" x="{_n(box.x)}" y="{_n(box.y)}" width="{_n(box.w)}" height="{_n(box.h)}"'
            f' stroke-width="{1 if lane else 1.5}"{self.fill_style(element_id)}/>'
        )
        parts = [body]
        name = sem.get("name") or ""
        expanded = lane or sem.get("processRef") is not None
        if not expanded:
            parts.append(self.centred_text(name, box, TASK_FONT))
            return parts
        band = 30.0
        if horizontal:
            if not lane:
                parts.append(f'<polyline class="bpmn-stroke" points="{_points([(box.x + band, box.y), (box.x + band, box.y + box.h)])}" stroke-width="1.5"/>')
            lines = _wrap(name, box.h - 10, TASK_FONT)
            cx, cy = box.x + band / 2, box.cy
            height = len(lines) * TASK_FONT * LINE_HEIGHT
            parts.append(self.text(lines, cx, cy - height / 2, TASK_FONT, transform=f"rotate(-90 {_n(cx)} {_n(cy)})", grow=False))
        else:
            if not lane:
                parts.append(f'<polyline class="bpmn-stroke" points="{_points([(box.x, box.y + band), (box.x + box.w, box.y + band)])}" stroke-width="1.5"/>')
            lines = _wrap(name, box.w - 10, TASK_FONT)
            height = len(lines) * TASK_FONT * LINE_HEIGHT
            parts.append(self.text(lines, box.cx, box.y + band / 2 - height / 2, TASK_FONT, grow=False))
        return parts

    def activity(self, di: Any, sem: Any, box: _Box, element_id: str, local: str) -> str:
        expanded = local in _SUBPROCESSES | {"callActivity"} and di.get("isExpanded") == "true"
        icon = _TASK_KINDS.get(local)
        called = None
        if local == "callActivity":
            called = self.by_id.get(sem.get("calledElement") or "")
            if called is not None and _local(called) in _GLOBAL_TASKS:
                icon = _GLOBAL_TASKS[_local(called)]
        category = "bpmn-task" if local in _TASK_KINDS else "bpmn-subprocess" if local in _SUBPROCESSES else "bpmn-call-activity"
        width = {"callActivity": 5.0}.get(local, 2.0)
        dash = ' stroke-dasharray="2 3"' if sem.get("triggeredByEvent") == "true" else ""
        radius = min(10.0, box.w / 2, box.h / 2)
        parts = [
            f'<rect class="bpmn-body" x="{_n(box.x)}" y="{_n(box.y)}" width="{_n(box.w)}" height="{_n(box.h)}" rx="{_n(radius)}"'
            f' stroke-width="{_n(width)}"{dash}{self.fill_style(element_id)}/>'
        ]
        if local == "transaction" and box.w > 8 and box.h > 8:
            parts.append(
                f'<rect class="bpmn-stroke" x="{_n(box.x + 3)}" y="{_n(box.y + 3)}" width="{_n(box.w - 6)}" height="{_n(box.h - 6)}"'
                f' rx="{_n(max(radius - 3, 0))}" stroke-width="1.5"/>'
            )
        if icon:
            parts.append(
                f'<g transform="translate({_n(box.x + 4)} {_n(box.y + 4)})">'
                + "".join(
                    f'<path class="{cls}" d="{d}"' + (f' stroke-width="{_n(w)}"' if w else "") + "/>"
                    for d, cls, w in _TASK_ICONS[icon]
                )
                + "</g>"
            )
        parts.append(self.activity_markers(sem, box, local, expanded, called))
        name = sem.get("name") or ""
        cls = "bpmn-label bpmn-label-inverse" if self.inverse_label(element_id) else "bpmn-label"
        if expanded:
            lines = _wrap(name, box.w - 20, TASK_FONT)
            parts.append(self.text(lines, box.x + 10, box.y + 4, TASK_FONT, anchor="start", cls=cls))
        else:
            lines = _wrap(name, box.w - 10, TASK_FONT)
            height = len(lines) * TASK_FONT * LINE_HEIGHT
            top = box.cy - height / 2
            if icon and top < box.y + 23:  # keep clear of the type icon when the box has room
                top = max(top, min(box.y + 23, box.y + box.h - height - 1))
            parts.append(self.text(lines, box.cx, top, TASK_FONT, cls=cls))
        return self.wrap(element_id, local, f"bpmn-activity {category}", parts)

    def activity_markers(self, sem: Any, box: _Box, local: str, expanded: bool, called: Any) -> str:
        markers: list[str] = []
        loop = sem.find(f"{{{BPMN_NS}}}standardLoopCharacteristics")
        multi = sem.find(f"{{{BPMN_NS}}}multiInstanceLoopCharacteristics")
        if loop is not None:
            markers.append(f'<path class="bpmn-stroke" d="{_LOOP_ARC}" stroke-width="1.5"/><path class="bpmn-stroke" d="{_LOOP_HEAD}" stroke-width="1.5"/>')
        elif multi is not None:
            if multi.get("isSequential") == "true":
                markers.append('<path class="bpmn-stroke" d="M1 3H13M1 7H13M1 11H13" stroke-width="2"/>')
            else:
                markers.append('<path class="bpmn-stroke" d="M3 1V13M7 1V13M11 1V13" stroke-width="2"/>')
        collapsed = not expanded and (
            local in _SUBPROCESSES or (local == "callActivity" and (called is None or _local(called) not in _GLOBAL_TASKS))
        )
        if collapsed:
            markers.append('<rect class="bpmn-paper" x="0" y="0" width="14" height="14" stroke-width="1.5"/><path class="bpmn-stroke" d="M3 7H11M7 3V11" stroke-width="1.5"/>')
        if local == "adHocSubProcess":
            markers.append('<path class="bpmn-stroke" d="M1 9C3 3.5 6 4 7 7S11 10.5 13 5" stroke-width="1.5"/>')
        if sem.get("isForCompensation") == "true":
            markers.append('<path class="bpmn-paper" d="M0.5 7L6.75 2.5V11.5ZM6.75 7L13 2.5V11.5Z" stroke-width="1.2"/>')
        if not markers:
            return ""
        size, gap = 14.0, 4.0
        total = len(markers) * size + (len(markers) - 1) * gap
        x = box.cx - total / 2
        y = box.y + box.h - size - 4
        out = []
        for marker in markers:
            out.append(f'<g transform="translate({_n(x)} {_n(y)})">{marker}</g>')
            x += size + gap
        return "".join(out)

    def event(self, di: Any, sem: Any, box: _Box, element_id: str, local: str) -> list[str]:
        cx, cy = box.cx, box.cy
        rx, ry = box.w / 2, box.h / 2
        interrupting = sem.get("cancelActivity") != "false" if local == "boundaryEvent" else sem.get("isInterrupting") != "false"
        dash = "" if interrupting else ' stroke-dasharray="5.5 3"'
        width = {"startEvent": 2.0, "endEvent": 4.0}.get(local, 1.5)

        def ring(rx_: float, ry_: float, cls: str, extra: str) -> str:
            if abs(rx_ - ry_) < 0.01:
                return f'<circle class="{cls}" cx="{_n(cx)}" cy="{_n(cy)}" r="{_n(rx_)}" stroke-width="{_n(width)}"{dash}{extra}/>'
            return f'<ellipse class="{cls}" cx="{_n(cx)}" cy="{_n(cy)}" rx="{_n(rx_)}" ry="{_n(ry_)}" stroke-width="{_n(width)}"{dash}{extra}/>'

        parts = [ring(rx, ry, "bpmn-body", self.fill_style(element_id))]
        if local not in ("startEvent", "endEvent") and rx > 4 and ry > 4:
            parts.append(ring(rx - 3, ry - 3, "bpmn-inner", self.fill_style(element_id)))
        kinds = []
        for child in sem:
            kind = _EVENT_DEFINITIONS.get(_local(child))
            if kind is None and _local(child) == "eventDefinitionRef":
                target = self.by_id.get((child.text or "").strip())
                kind = _EVENT_DEFINITIONS.get(_local(target)) if target is not None else None
            if kind:
                kinds.append(kind)
        throw = local in ("endEvent", "intermediateThrowEvent", "implicitThrowEvent")
        if len(kinds) == 1:
            parts.append(self.prims(_event_marker(kinds[0], throw), box, 36.0))
        elif len(kinds) > 1:
            kind = "parallelMultiple" if sem.get("parallelMultiple") == "true" and not throw else "multiple"
            parts.append(self.prims(_event_marker(kind, throw), box, 36.0))
        parts.append(self.external_label(sem.get("name") or "", di, (cx, box.y + box.h + 5)))
        return parts

    def gateway(self, di: Any, sem: Any, box: _Box, element_id: str, local: str) -> list[str]:
        diamond = [(box.cx, box.y), (box.x + box.w, box.cy), (box.cx, box.y + box.h), (box.x, box.cy)]
        parts = [f'<polygon class="bpmn-body" points="{_points(diamond)}" stroke-width="2"{self.fill_style(element_id)}/>']
        parts.append(self.prims(_gateway_marker(local, sem, di), box, 50.0))
        parts.append(self.external_label(sem.get("name") or "", di, (box.cx, box.y + box.h + 5)))
        return parts

    def data_object(self, di: Any, sem: Any, box: _Box, element_id: str, local: str) -> list[str]:
        x, y, w, h = box.x, box.y, box.w, box.h
        fold = min(w, h) * 0.28
        page = [(x, y), (x + w - fold, y), (x + w, y + fold), (x + w, y + h), (x, y + h)]
        parts = [
            f'<polygon class="bpmn-body" points="{_points(page)}" stroke-width="1.5"{self.fill_style(element_id)}/>',
            f'<polyline class="bpmn-stroke" points="{_points([(x + w - fold, y), (x + w - fold, y + fold), (x + w, y + fold)])}" stroke-width="1.5"/>',
        ]
        target = sem
        if local == "dataObjectReference":
            target = self.by_id.get(sem.get("dataObjectRef") or "", sem)
        if local in ("dataInput", "dataOutput"):
            arrow = [(0, 3), (6, 3), (6, 0), (11, 5), (6, 10), (6, 7), (0, 7)]
            cls = "bpmn-paper" if local == "dataInput" else "bpmn-ink"
            parts.append(f'<polygon class="{cls}" points="{_points((x + 5 + px, y + 5 + py) for px, py in arrow)}" stroke-width="1"/>')
        if target.get("isCollection") == "true":
            bx, by = box.cx - 6, y + h - 14
            parts.append(f'<path class="bpmn-stroke" d="M{_n(bx + 2)} {_n(by)}V{_n(by + 10)}M{_n(bx + 6)} {_n(by)}V{_n(by + 10)}M{_n(bx + 10)} {_n(by)}V{_n(by + 10)}" stroke-width="2"/>')
        name = sem.get("name") or ""
        state = sem.find(f"{{{BPMN_NS}}}dataState")
        if state is not None and state.get("name"):
            name = f"{name}\n[{state.get('name')}]"
        parts.append(self.external_label(name, di, (box.cx, box.y + box.h + 5)))
        return parts

    def data_store(self, di: Any, sem: Any, box: _Box, element_id: str) -> list[str]:
        x, y, w, h, cx = box.x, box.y, box.w, box.h, box.cx
        ry = min(h * 0.14, 10.0)
        k = 0.5523
        rx = w / 2

        def half(y0: float, down: bool) -> str:
            s = 1 if down else -1
            return (
                f"C{_n(x)} {_n(y0 + s * k * ry)} {_n(cx - k * rx)} {_n(y0 + s * ry)} {_n(cx)} {_n(y0 + s * ry)}"
                f"C{_n(cx + k * rx)} {_n(y0 + s * ry)} {_n(x + w)} {_n(y0 + s * k * ry)} {_n(x + w)} {_n(y0)}"
            )

        bottom = y + h - ry
        body = (
            f"M{_n(x)} {_n(y + ry)}{half(y + ry, False)}L{_n(x + w)} {_n(bottom)}"
            f"C{_n(x + w)} {_n(bottom + k * ry)} {_n(cx + k * rx)} {_n(y + h)} {_n(cx)} {_n(y + h)}"
            f"C{_n(cx - k * rx)} {_n(y + h)} {_n(x)} {_n(bottom + k * ry)} {_n(x)} {_n(bottom)}Z"
        )
        rings = "".join(f"M{_n(x)} {_n(y + ry + d)}{half(y + ry + d, True)}" for d in (0.0, ry * 0.6, ry * 1.2) if y + 2 * ry + d < bottom)
        parts = [
            f'<path class="bpmn-body" d="{body}" stroke-width="1.5"{self.fill_style(element_id)}/>',
            f'<path class="bpmn-stroke" d="{rings}" stroke-width="1.5"/>' if rings else "",
            self.external_label(sem.get("name") or "", di, (box.cx, box.y + box.h + 5)),
        ]
        return parts

    def annotation(self, sem: Any, box: _Box, element_id: str) -> list[str]:
        x, y, w, h = box.x, box.y, box.w, box.h
        text_element = sem.find(f"{{{BPMN_NS}}}text")
        text = (text_element.text or "") if text_element is not None else ""
        lines = _wrap(text, w - 10, TASK_FONT)
        return [
            f'<rect class="bpmn-body" x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{_n(h)}"{self.fill_style(element_id)}/>',
            f'<polyline class="bpmn-stroke" points="{_points([(x + min(10, w), y), (x, y), (x, y + h), (x + min(10, w), y + h)])}" stroke-width="1.5"/>',
            self.text(lines, x + 5, y + 4, TASK_FONT, anchor="start"),
        ]

    def group(self, di: Any, sem: Any, box: _Box, element_id: str) -> list[str]:
        value = self.by_id.get(sem.get("categoryValueRef") or "")
        name = (value.get("value") or "") if value is not None else (sem.get("name") or "")
        parts = [
            f'<rect class="bpmn-body" x="{_n(box.x)}" y="{_n(box.y)}" width="{_n(box.w)}" height="{_n(box.h)}" rx="10"'
            f' stroke-width="1.5" stroke-dasharray="10 4 2 4"{self.fill_style(element_id)}/>'
        ]
        if name.strip():
            label = _bounds(di.find(_LABEL))
            if label is not None and label.w > 1 and label.h > 1:
                parts.append(self.external_label(name, di, (box.cx, box.y + 4)))
            else:
                parts.append(self.text(_wrap(name, box.w - 10, LABEL_FONT), box.cx, box.y + 4, LABEL_FONT))
        return parts

    # ---- edges
    def edge(self, di: Any, sem: Any, points: list[tuple[float, float]]) -> str:
        element_id = di.get("bpmnElement") or ""
        local = _local(sem) if sem is not None else ""
        for x, y in points:
            self.grow(x, y, x, y)
        heat = self.overlay.heat.get(element_id)
        style = f' style="stroke:{_heat_colour(heat)};stroke-width:3px"' if heat is not None else ""
        classes = "bpmn-flow"
        dash = ""
        width = 1.5
        parts: list[str] = []
        start_dir = next((u for u in (_unit(points[i], points[i + 1]) for i in range(len(points) - 1)) if u), None)
        end_dir = next((u for u in (_unit(points[i - 1], points[i]) for i in range(len(points) - 1, 0, -1)) if u), None)
        head = tail = ""
        if local == "sequenceFlow":
            classes += " bpmn-sequence-flow"
            head = "filled"
            source = self.by_id.get(sem.get("sourceRef") or "")
            source_kind = _local(source) if source is not None else ""
            if element_id in self.defaults and source is not None and source.get("default") == element_id:
                tail = "slash"
            elif sem.find(f"{{{BPMN_NS}}}conditionExpression") is not None and (
                source_kind in _TASK_KINDS or source_kind in _SUBPROCESSES or source_kind == "callActivity"
            ):
                tail = "diamond"
        elif local == "messageFlow":
            classes += " bpmn-message-flow"
            dash = ' stroke-dasharray="10 6"'
            head, tail = "open", "circle"
        elif local == "association":
            classes += " bpmn-association"
            dash = ' stroke-dasharray="0.5 5" stroke-linecap="round"'
            direction = sem.get("associationDirection")
            head = "chevron" if direction in ("One", "Both") else ""
            tail = "chevron" if direction == "Both" else ""
        elif local in ("dataInputAssociation", "dataOutputAssociation"):
            classes += " bpmn-data-association"
            dash = ' stroke-dasharray="0.5 5" stroke-linecap="round"'
            head = "chevron"
        elif local in ("conversationLink",):
            classes += " bpmn-conversation-link"
            width = 4.0
        else:
            classes += " bpmn-unknown"
            dash = ' stroke-dasharray="4 3"'
        parts.append(f'<polyline class="bpmn-line bpmn-body" points="{_points(points)}" stroke-width="{_n(width)}"{dash}{style}/>')
        arrow_style = f' style="fill:{_heat_colour(heat)};stroke:{_heat_colour(heat)}"' if heat is not None else ""
        if head and end_dir:
            parts.append(self.arrow(points[-1], end_dir, head, arrow_style))
        if tail and start_dir:
            parts.append(self.arrow(points[0], (-start_dir[0], -start_dir[1]), tail, arrow_style))
        parts.append(self.edge_label(di, sem, points))
        return self.wrap(element_id, local, classes, parts)

    def arrow(self, tip: tuple[float, float], u: tuple[float, float], kind: str, style: str) -> str:
        """An end decoration at ``tip``; ``u`` points along the flow into ``tip``."""
        n = (-u[1], u[0])

        def at(along: float, across: float) -> tuple[float, float]:
            return tip[0] + along * u[0] + across * n[0], tip[1] + along * u[1] + across * n[1]

        if kind == "filled":
            return f'<polygon class="bpmn-arrow bpmn-ink" points="{_points([tip, at(-11, 4), at(-11, -4)])}" stroke-width="1" stroke-linejoin="round"{style}/>'
        if kind == "open":
            return f'<polygon class="bpmn-arrow bpmn-paper" points="{_points([tip, at(-11, 4), at(-11, -4)])}" stroke-width="1.5" stroke-linejoin="round"/>'
        if kind == "chevron":
            return f'<polyline class="bpmn-arrow bpmn-stroke" points="{_points([at(-10, 5), tip, at(-10, -5)])}" stroke-width="1.5"/>'
        if kind == "circle":
            return f'<circle class="bpmn-arrow bpmn-paper" cx="{_n(tip[0])}" cy="{_n(tip[1])}" r="3.5" stroke-width="1.5"/>'
        if kind == "diamond":
            return f'<polygon class="bpmn-arrow bpmn-paper" points="{_points([tip, at(-8, 5), at(-16, 0), at(-8, -5)])}" stroke-width="1.5"/>'
        if kind == "slash":
            return f'<polyline class="bpmn-arrow bpmn-stroke" points="{_points([at(-14, 5), at(-6, -5)])}" stroke-width="1.5"{style}/>'
        return ""

    def edge_label(self, di: Any, sem: Any, points: list[tuple[float, float]]) -> str:
        name = (sem.get("name") or "") if sem is not None else ""
        if not name.strip():
            return ""
        total = sum(math.dist(points[i], points[i + 1]) for i in range(len(points) - 1))
        walked, mid = 0.0, points[0]
        for i in range(len(points) - 1):
            step = math.dist(points[i], points[i + 1])
            if walked + step >= total / 2 and step > 0:
                t = (total / 2 - walked) / step
                mid = (points[i][0] + t * (points[i + 1][0] - points[i][0]), points[i][1] + t * (points[i + 1][1] - points[i][1]))
                break
            walked += step
        lines = len(_wrap(name, 90, LABEL_FONT, break_words=False))
        return self.external_label(name, di, (mid[0], mid[1] - 6 - lines * LABEL_FONT * LINE_HEIGHT))

    # ---- overlays drawn above everything
    def decorate(self, element_id: str, box: _Box | None, points: list[tuple[float, float]] | None) -> None:
        if element_id in self.highlight:
            if box is not None:
                pad = 6.0
                self.top.append(
                    f'<rect class="bpmn-highlight-outline" data-highlight-for="{_esc(element_id)}" x="{_n(box.x - pad)}" y="{_n(box.y - pad)}"'
                    f' width="{_n(box.w + 2 * pad)}" height="{_n(box.h + 2 * pad)}" rx="8"/>'
                )
                self.grow(box.x - pad - 3, box.y - pad - 3, box.x + box.w + pad + 3, box.y + box.h + pad + 3)
            elif points:
                self.top.append(f'<polyline class="bpmn-highlight-outline" data-highlight-for="{_esc(element_id)}" points="{_points(points)}"/>')
        badge = self.overlay.badges.get(element_id)
        if badge:
            text = " ".join(str(badge).split())
            width = _measure(text, 11) * 1.08 + 12
            if box is not None:
                right, top = box.x + box.w + 8, box.y - 9
            elif points:
                right, top = max(p[0] for p in points) + 8, min(p[1] for p in points) - 9
            else:
                return
            left = right - width
            self.grow(left, top, right, top + 18)
            self.top.append(
                f'<g class="bpmn-badge" data-badge-for="{_esc(element_id)}"><rect x="{_n(left)}" y="{_n(top)}" width="{_n(width)}"'
                f' height="18" rx="9"/><text x="{_n(left + width / 2)}" y="{_n(top + 13)}" text-anchor="middle">{_esc(text)}</text></g>'
            )

    # ---- whole diagram
    def render(self, plane: Any) -> str:
        items: list[tuple[tuple[float, ...], str, Any, Any]] = []
        for index, child in enumerate(plane):
            if child.tag == _SHAPE:
                sem = self.by_id.get(child.get("bpmnElement") or "")
                items.append((self._order(sem, child, index), "shape", child, sem))
            elif child.tag == _EDGE:
                sem = self.by_id.get(child.get("bpmnElement") or "")
                items.append(((3, 0, 0, index), "edge", child, sem))
        items.sort(key=lambda item: item[0])
        body: list[str] = []
        for _, kind, di, sem in items:
            element_id = di.get("bpmnElement") or ""
            if not element_id:
                continue
            if kind == "shape":
                box = _bounds(di)
                if box is None:
                    continue
                body.append(self.shape(di, sem, box))
                self.decorate(element_id, box, None)
            else:
                points = []
                for waypoint in di.findall(_WAYPOINT):
                    x, y = _float(waypoint.get("x")), _float(waypoint.get("y"))
                    if x is not None and y is not None:
                        points.append((x, y))
                if len(points) < 2:
                    continue
                body.append(self.edge(di, sem, points))
                self.decorate(element_id, None, points)
        if not math.isfinite(self.min_x):
            raise DiagramError("Sơ đồ BPMN không có hình nào có toạ độ hợp lệ (dc:Bounds, di:waypoint) nên không vẽ được.")
        x0, y0 = self.min_x - MARGIN, self.min_y - MARGIN
        width, height = self.max_x - self.min_x + 2 * MARGIN, self.max_y - self.min_y + 2 * MARGIN
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" class="bpmn-diagram" viewBox="{_n(x0)} {_n(y0)} {_n(width)} {_n(height)}"'
            f' width="{math.ceil(width)}" height="{math.ceil(height)}" font-family="{FONT_FAMILY}">'
            f"<style>{_STYLE}</style>"
            f'<rect class="bpmn-background" x="{_n(x0)}" y="{_n(y0)}" width="{_n(width)}" height="{_n(height)}" fill="#fff"/>'
            f'<g class="bpmn-elements">{"".join(body)}</g>'
            f'<g class="bpmn-overlays">{"".join(self.top)}</g>'
            "</svg>"
        )

    def _order(self, sem: Any, di: Any, index: int) -> tuple[float, ...]:
        """Painting order: pools, lanes, nodes (containers before what they hold), boundary events, edges, groups."""
        local = _local(sem) if sem is not None else ""
        box = _bounds(di)
        area = box.w * box.h if box is not None else 0.0
        if local == "participant":
            return (0, -area, 0, index)
        if local == "lane":
            return (0, -area, 1, index)
        if local == "group":
            return (4, 0, 0, index)
        if local == "boundaryEvent":
            return (2, 0, 0, index)
        return (1, -area, 0, index)


def render_svg(
    xml: bytes,
    *,
    process_id: str | None = None,
    overlay: Overlay | None = None,
    highlight: Iterable[str] = (),
) -> str:
    """Draw a BPMN 2.0 file (untrusted bytes) as a standalone SVG string.

    The diagram drawn is the first one of the file, or with ``process_id`` the
    one showing that process (its own plane, or the collaboration whose pool
    runs it). ``overlay`` paints states, badges, heat, tooltips and links;
    ``highlight`` ids get a thick magenta outline.

    Raises :class:`DiagramError` (a ``ValueError``, Vietnamese message) when the
    file is not readable BPMN XML (``problems`` then holds the reader's
    problems) or has no diagram layout (BPMN DI).
    """
    if isinstance(xml, str):  # text: drop a declaration whose encoding no longer applies
        xml = re.sub(r"^\s*<\?xml[^>]*\?>", "", xml).encode("utf-8")
    if not isinstance(xml, (bytes, bytearray, memoryview)):
        raise DiagramError(f"Nội dung sơ đồ phải là các byte của một tệp BPMN, không phải {type(xml).__name__}.")
    if isinstance(highlight, str):
        highlight = (highlight,)
    root, problems = parse_xml(bytes(xml), "diagram.bpmn")
    if root is None:
        detail = "; ".join(p.message for p in problems) or "không rõ lỗi"
        raise DiagramError(f"Không đọc được tệp BPMN để vẽ sơ đồ: {detail}", problems)
    renderer = _Renderer(root, overlay or Overlay(), set(highlight))
    plane = renderer.pick_plane(process_id)
    return renderer.render(plane)
