"""Drawing BPMN diagrams as SVG: layout fidelity, look, overlays and bad input."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from engine.core import bpmn
from engine.core.diagram import DiagramError, Overlay, render_svg

from .diagram_support import raster
from .diagram_support.builder import EVENT_KINDS, EVENT_TRIGGERS, TASK_TYPES, chain, document, edge, gallery, shape

MIWG = Path(__file__).parents[2] / "shared" / "corpus" / "miwg"
PROCESSES = Path(__file__).parents[1] / "processes"
MIWG_FILES = sorted(MIWG.glob("*.bpmn"))
PROCESS_FILES = sorted(PROCESSES.glob("*.bpmn"))
ALL_FILES = MIWG_FILES + PROCESS_FILES

SVG = "{http://www.w3.org/2000/svg}"
BPMN = "{http://www.omg.org/spec/BPMN/20100524/MODEL}"
BPMNDI = "{http://www.omg.org/spec/BPMN/20100524/DI}"
DC = "{http://www.omg.org/spec/DD/20100524/DC}"
DI = "{http://www.omg.org/spec/DD/20100524/DI}"

#: Least F1 overlap of ink cells between a drawing and its MIWG reference picture.
#: Good drawings score 0.97–1.0; shifted shapes score ≤ 0.6 and dropping all labels ≤ 0.91.
SIMILARITY = 0.93
CHROMIUM = os.environ.get("MOTCUA_CHROMIUM", "/usr/bin/chromium")


# --------------------------------------------------------------------------- helpers


def _svg(text: str) -> Any:
    root = etree.fromstring(text.encode("utf-8"))
    assert root.tag == f"{SVG}svg"
    return root


def _bpmn_tree(path: Path) -> Any:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    return etree.parse(str(path), parser).getroot()


def _first_plane(root: Any) -> Any:
    return next(root.iter(f"{BPMNDI}BPMNPlane"))


def _groups(svg_root: Any) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = {}
    for g in svg_root.iter(f"{SVG}g"):
        element_id = g.get("data-element-id")
        if element_id is not None:
            groups.setdefault(element_id, []).append(g)
    return groups


def _group(svg_root: Any, element_id: str) -> Any:
    found = _groups(svg_root)[element_id]
    assert len(found) == 1
    return found[0]


def _classes(element: Any) -> set[str]:
    return set((element.get("class") or "").split())


def _body(group: Any) -> Any:
    bodies = [child for child in group if "bpmn-body" in _classes(child)]
    assert len(bodies) == 1, etree.tostring(group)[:300]
    return bodies[0]


def _numbers(text: str) -> list[float]:
    return [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", text)]


def _bbox(element: Any) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of a rect, circle, ellipse, polygon, polyline or absolute M/L/C path."""
    tag = etree.QName(element).localname
    if tag == "rect":
        x, y, w, h = (float(element.get(k)) for k in ("x", "y", "width", "height"))
        return x, y, x + w, y + h
    if tag == "circle":
        cx, cy, r = (float(element.get(k)) for k in ("cx", "cy", "r"))
        return cx - r, cy - r, cx + r, cy + r
    if tag == "ellipse":
        cx, cy, rx, ry = (float(element.get(k)) for k in ("cx", "cy", "rx", "ry"))
        return cx - rx, cy - ry, cx + rx, cy + ry
    if tag in ("polygon", "polyline"):
        values = _numbers(element.get("points"))
    else:
        d = element.get("d")
        assert not re.search(r"[a-zHVSQTA]", d), d  # absolute moves, lines and cubic curves only
        values = _numbers(d)
    xs, ys = values[0::2], values[1::2]
    return min(xs), min(ys), max(xs), max(ys)


def _text(group: Any) -> str:
    return " ".join("".join(t.itertext()) for t in group.iter(f"{SVG}text"))


def _squash(text: str) -> str:
    return "".join(text.split())


def _name_of(element: Any, by_id: dict[str, Any]) -> str:
    local = etree.QName(element).localname
    if local == "textAnnotation":
        text = element.find(f"{BPMN}text")
        return (text.text or "") if text is not None else ""
    if local == "group":
        value = by_id.get(element.get("categoryValueRef") or "")
        return (value.get("value") or "") if value is not None else ""
    return element.get("name") or ""


# --------------------------------------------------------------------------- every real diagram


def test_the_corpora_are_there() -> None:
    assert MIWG.resolve().is_dir(), MIWG
    assert len(MIWG_FILES) >= 8 and all(p.with_suffix(".png").exists() for p in MIWG_FILES)
    assert len(PROCESS_FILES) >= 8


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_every_file_renders_its_whole_layout(path: Path) -> None:
    svg_text = render_svg(path.read_bytes())
    svg = _svg(svg_text)
    tree = _bpmn_tree(path)
    by_id = {e.get("id"): e for e in tree.iter(f"{BPMN}*") if e.get("id")}
    plane = _first_plane(tree)
    shapes = plane.findall(f"{BPMNDI}BPMNShape")
    edges = plane.findall(f"{BPMNDI}BPMNEdge")
    groups = _groups(svg)

    # exactly the elements the layout refers to, each once
    assert set(groups) == {di.get("bpmnElement") for di in shapes + edges}
    assert all(len(found) == 1 for found in groups.values())

    # the canvas holds everything with a margin, and says how big it is
    x0, y0, width, height = _numbers(svg.get("viewBox"))
    assert float(svg.get("width")) >= width - 1 and float(svg.get("height")) >= height - 1
    style = svg.find(f"{SVG}style")
    assert style is not None and "sans-serif" in style.text

    for di in shapes:
        bounds = di.find(f"{DC}Bounds")
        bx, by, bw, bh = (float(bounds.get(k)) for k in ("x", "y", "width", "height"))
        group = groups[di.get("bpmnElement")][0]
        left, top, right, bottom = _bbox(_body(group))
        assert (left, top, right, bottom) == pytest.approx((bx, by, bx + bw, by + bh), abs=0.011), di.get("bpmnElement")
        assert x0 < bx and y0 < by and bx + bw < x0 + width and by + bh < y0 + height
        element = by_id.get(di.get("bpmnElement"))
        name = _name_of(element, by_id) if element is not None else ""
        if name.strip():
            assert _squash(name) in _squash(_text(group)), (name, _text(group))

    for di in edges:
        waypoints = [(float(w.get("x")), float(w.get("y"))) for w in di.findall(f"{DI}waypoint")]
        line = _body(groups[di.get("bpmnElement")][0])
        assert etree.QName(line).localname == "polyline"
        values = _numbers(line.get("points"))
        assert values == pytest.approx([c for point in waypoints for c in point], abs=0.011)
        element = by_id.get(di.get("bpmnElement"))
        if element is not None and (element.get("name") or "").strip():
            assert _squash(element.get("name")) in _squash(_text(groups[di.get("bpmnElement")][0]))


def test_element_kinds_get_their_classes_and_markers() -> None:
    svg = _svg(render_svg((MIWG / "B.2.0.bpmn").read_bytes()))
    kinds: dict[str, set[str]] = {}
    for g in svg.iter(f"{SVG}g"):
        if g.get("data-element-id"):
            kinds.setdefault(g.get("data-type"), set()).update(_classes(g))
    assert {"bpmn-task", "bpmn-activity"} <= kinds["userTask"]
    assert "bpmn-event" in kinds["boundaryEvent"] and "bpmn-gateway" in kinds["parallelGateway"]
    assert {"bpmn-flow", "bpmn-sequence-flow"} <= kinds["sequenceFlow"]
    assert {"bpmn-flow", "bpmn-message-flow"} <= kinds["messageFlow"]
    assert "bpmn-lane" in kinds["lane"] and "bpmn-participant" in kinds["participant"]
    assert "bpmn-call-activity" in kinds["callActivity"] and "bpmn-subprocess" in kinds["subProcess"]

    tree = _bpmn_tree(MIWG / "B.2.0.bpmn")
    by_name = {e.get("name"): e.get("id") for e in tree.iter(f"{BPMN}*") if e.get("name")}

    def group(name: str) -> Any:
        return _group(svg, by_name[name])

    # call activity: thick border
    assert float(_body(group("Collapsed Call Activity")).get("stroke-width")) >= 4
    # non-interrupting boundary events are dashed, interrupting ones are not
    assert _body(group("Boundary Intermediate Event Non-Interrupting Escalation")).get("stroke-dasharray")
    assert not _body(group("Boundary Intermediate Event Interrupting Error")).get("stroke-dasharray")
    # end events are thick, start events thin, intermediate ones double
    assert float(_body(group("End Event 7 None")).get("stroke-width")) > float(_body(group("Start Event 2 Message")).get("stroke-width"))
    assert group("Intermediate Event Timer Catch").findall(f"{SVG}circle")[1].get("class") == "bpmn-inner"
    # thrown triggers are filled, caught ones are outlined
    throw = group("Intermediate Event Message Throw").find(f"{SVG}polygon")
    catch = group("Intermediate Event Message Catch").find(f"{SVG}polygon")
    assert "bpmn-ink" in _classes(throw) and "bpmn-paper" in _classes(catch)
    # gateways: parallel +, exclusive X only where the layout says isMarkerVisible="true"
    assert len(group("Parallel Gateway 2").findall(f"{SVG}polygon")) == 2
    assert len(group("Exclusive Gateway 4").findall(f"{SVG}polygon")) == 2
    b1 = _svg(render_svg((MIWG / "B.1.0.bpmn").read_bytes()))
    b1_names = {e.get("name"): e.get("id") for e in _bpmn_tree(MIWG / "B.1.0.bpmn").iter(f"{BPMN}*") if e.get("name")}
    assert len(_group(b1, b1_names["Exclusive Gateway Divergence 1"]).findall(f"{SVG}polygon")) == 1
    # the default flow carries a slash; a conditional flow out of an activity a diamond
    a21 = _svg(render_svg((MIWG / "A.2.1.bpmn").read_bytes()))
    a21_names = {e.get("name"): e.get("id") for e in _bpmn_tree(MIWG / "A.2.1.bpmn").iter(f"{BPMN}*") if e.get("name")}
    default = _group(a21, a21_names["Default"])
    assert any(etree.QName(c).localname == "polyline" and "bpmn-arrow" in _classes(c) for c in default)
    conditional = _group(a21, a21_names["Condition"])
    assert len([c for c in conditional if etree.QName(c).localname == "polygon"]) == 2  # arrowhead + diamond
    # message flows are dashed and start with an open circle
    flow = _group(svg, by_name["Message Flow 1"])
    assert _body(flow).get("stroke-dasharray") and flow.find(f"{SVG}circle") is not None


def _marks(group: Any) -> list[Any]:
    """The drawn parts of an element other than its body and its label."""
    return [e for e in group.iter() if e is not group and etree.QName(e).localname not in ("text", "tspan", "title", "g") and "bpmn-body" not in _classes(e)]


def test_every_kind_of_shape_gets_its_marker() -> None:
    svg = _svg(render_svg(gallery()))

    def group(element_id: str) -> Any:
        return _group(svg, element_id)

    def signature(element_id: str) -> tuple[str, ...]:
        """What is drawn besides the body, in coordinates relative to the body (icon paths are local already)."""
        x0, y0, _, _ = _bbox(_body(group(element_id)))

        def shape_of(e: Any) -> str:
            local = e.getparent().get("transform") is not None
            if e.get("d") or local:
                return " ".join(f"{k}={e.get(k)}" for k in ("d", "x", "y", "width", "height", "points") if e.get(k))
            values = _numbers(e.get("points") or "") or [float(e.get(k)) - o for k, o in (("cx", x0), ("cy", y0))] + [float(e.get("r"))]
            if e.get("points"):
                values = [v - (x0 if i % 2 == 0 else y0) for i, v in enumerate(values)]
            return " ".join(f"{v:.1f}" for v in values)

        return tuple(sorted(f"{etree.QName(e).localname}:{' '.join(sorted(_classes(e)))}:{shape_of(e)}" for e in _marks(group(element_id))))

    # task types: a distinct icon each, none on a plain task
    assert _marks(group("task")) == []
    icons = {signature(t) for t in TASK_TYPES if t != "task"}
    assert len(icons) == len(TASK_TYPES) - 1 and () not in icons
    # activity markers, all different, on the bottom edge
    markers = ["collapsed", "adhoc", "loop", "parallel_mi", "sequential_mi", "compensation"]
    assert len({signature(m) for m in markers}) == len(markers) and all(_marks(group(m)) for m in markers)
    assert signature("call") == signature("collapsed")  # a call activity shown collapsed: the + marker
    for m in markers:
        translate = next(g for g in group(m).iter(f"{SVG}g") if g.get("transform"))
        assert 140 + 80 - 20 <= _numbers(translate.get("transform"))[1] <= 140 + 80
    assert "bpmn-inner" not in _classes(_body(group("transaction"))) and len(group("transaction").findall(f"{SVG}rect")) == 2
    assert _body(group("event_sub")).get("stroke-dasharray")
    # event triggers: caught ones outlined, thrown ones filled
    for trigger in EVENT_TRIGGERS:
        signatures = {kind: signature(f"{kind}_{trigger}") for kind in EVENT_KINDS}
        assert all(signatures.values()), trigger
        if trigger not in ("timer", "conditional", "terminate"):
            thrown = [e for e in _marks(group(f"endEvent_{trigger}")) if "bpmn-ink" in _classes(e)]
            caught = [e for e in _marks(group(f"intermediateCatchEvent_{trigger}")) if "bpmn-ink" in _classes(e)]
            assert thrown and not caught, trigger
    assert len({signature(f"startEvent_{t}") for t in EVENT_TRIGGERS}) == len(EVENT_TRIGGERS)
    assert _body(group("boundaryEvent_message")).get("stroke-dasharray")
    pentagon = [e for e in _marks(group("startEvent_multiple")) if etree.QName(e).localname == "polygon"]
    assert len(_numbers(pentagon[0].get("points"))) == 10
    cross = [e for e in _marks(group("startEvent_parallel_multiple")) if etree.QName(e).localname == "polygon"]
    assert len(_numbers(cross[0].get("points"))) == 24
    # gateways
    assert _marks(group("exclusive_plain")) == [] and _marks(group("exclusive"))
    gateways = ["exclusive", "parallel", "inclusive", "complex", "event_based", "parallel_event_based"]
    assert len({signature(g) for g in gateways}) == len(gateways)
    # data: collection bars, input outlined arrow, output filled arrow, the state in the label
    assert any(etree.QName(e).localname == "path" for e in _marks(group("data_object")))
    assert "[đã ký]" in _text(group("data_object"))
    assert "bpmn-paper" in _classes(_marks(group("data_input"))[-1]) and "bpmn-ink" in _classes(_marks(group("data_output"))[-1])
    assert _text(group("note")) == "Ghi chú về bước này"
    assert _body(group("note_link")).get("stroke-dasharray") and any("bpmn-arrow" in _classes(e) for e in group("note_link"))


def test_pools_and_lanes_name_bands() -> None:
    vertical = _svg(render_svg((MIWG / "A.4.1.bpmn").read_bytes()))
    horizontal = _svg(render_svg((MIWG / "A.4.0.bpmn").read_bytes()))
    for g in vertical.iter(f"{SVG}g"):
        if _classes(g) & {"bpmn-lane", "bpmn-participant"}:
            text = g.find(f"{SVG}text")
            left, top, right, bottom = _bbox(_body(g))
            baseline = float(text.find(f"{SVG}tspan").get("y"))
            assert text.get("transform") is None and top < baseline < top + 30
    rotated = [g.find(f"{SVG}text").get("transform") for g in horizontal.iter(f"{SVG}g") if _classes(g) & {"bpmn-lane", "bpmn-participant"} and g.find(f"{SVG}text") is not None]
    assert rotated and all(t.startswith("rotate(-90") for t in rotated)


# --------------------------------------------------------------------------- the look, against the MIWG reference pictures


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield browser.new_page()
        finally:
            browser.close()


def _size(svg_text: str) -> tuple[int, int]:
    root = _svg(svg_text)
    return int(root.get("width")), int(root.get("height"))


def _screenshot(page: Any, html: str, size: tuple[int, int]) -> Any:
    page.set_viewport_size({"width": size[0], "height": size[1]})
    page.set_content(html)
    return raster.load_picture(page.screenshot())


def _drawing_box(page: Any, svg_text: str) -> tuple[int, int, int, int]:
    """Where the ink of ``svg_text`` lies when drawn at its own size."""
    natural = _screenshot(page, f"<html><body style='margin:0;background:#fff'>{svg_text}</body></html>", _size(svg_text))
    return raster.drawing_box(raster.ink(natural))


def _similarity(page: Any, svg_text: str, reference_png: Path, ours: tuple[int, int, int, int] | None = None) -> raster.Score:
    """Rasterise ``svg_text`` over the reference picture's drawing and compare ink.

    The drawing is scaled and moved so that the bounding box of its ink
    (``ours``, by default measured on ``svg_text`` itself) lands on the
    reference's; then both are compared on a grid of 4-pixel cells.
    """
    reference = raster.load_picture(str(reference_png))
    ours = ours or _drawing_box(page, svg_text)
    theirs = raster.drawing_box(raster.ink(reference))
    sx = (theirs[2] - theirs[0]) / (ours[2] - ours[0])
    sy = (theirs[3] - theirs[1]) / (ours[3] - ours[1])
    width, height = _size(svg_text)
    stretched = svg_text.replace("<svg ", '<svg preserveAspectRatio="none" ', 1)
    html = (
        "<html><body style='margin:0;background:#fff'>"
        f"<img style='position:absolute;left:{theirs[0] - ours[0] * sx}px;top:{theirs[1] - ours[1] * sy}px;"
        f"width:{width * sx}px;height:{height * sy}px' src='{raster.svg_data_url(stretched)}'></body></html>"
    )
    placed = _screenshot(page, html, reference.size)
    return raster.compare(reference, placed, theirs, cell=4, tolerance=1)


@pytest.mark.parametrize("path", MIWG_FILES, ids=lambda p: p.name)
def test_drawing_looks_like_the_reference_picture(page: Any, path: Path) -> None:
    score = _similarity(page, render_svg(path.read_bytes()), path.with_suffix(".png"))
    assert score.f1 >= SIMILARITY, score


def _shift_shapes(svg_text: str, dx: float, dy: float) -> str:
    root = _svg(svg_text)
    for g in root.iter(f"{SVG}g"):
        if g.get("data-element-id") and "bpmn-flow" not in _classes(g):
            g.set("transform", f"translate({dx} {dy})")
    return etree.tostring(root, encoding="unicode")


def _without(svg_text: str, tag: str) -> str:
    root = _svg(svg_text)
    for element in list(root.iter(f"{SVG}{tag}")):
        element.getparent().remove(element)
    return etree.tostring(root, encoding="unicode")


@pytest.mark.parametrize("name", ["A.1.0", "B.2.0"])
def test_the_comparison_rejects_wrong_drawings(page: Any, name: str) -> None:
    path = MIWG / f"{name}.bpmn"
    good = render_svg(path.read_bytes())
    reference = path.with_suffix(".png")
    placement = _drawing_box(page, good)  # where the diagram's layout lands on the reference
    assert _similarity(page, good, reference, ours=placement).f1 >= SIMILARITY
    # shapes moved off their layout, lines left in place
    assert _similarity(page, _shift_shapes(good, 20, 14), reference, ours=placement).f1 < 0.8
    # even when the comparison re-fits the moved drawing onto the reference
    assert _similarity(page, _shift_shapes(good, 40, 30), reference).f1 < SIMILARITY
    # no labels at all
    assert _similarity(page, _without(good, "text"), reference).f1 < SIMILARITY
    other = render_svg((MIWG / ("A.4.0.bpmn" if name == "A.1.0" else "B.1.0.bpmn")).read_bytes())
    assert _similarity(page, other, reference).f1 < SIMILARITY - 0.2
    # a blank canvas placed where the good drawing goes
    blank = _without(good, "g")
    assert _similarity(page, blank, reference, ours=placement).f1 == 0.0


# --------------------------------------------------------------------------- overlays

TASKS = document(
    '<bpmn:startEvent id="s" name="Nộp hồ sơ"/>'
    '<bpmn:userTask id="t1" name="Tiếp nhận"/>'
    '<bpmn:userTask id="t2" name="Thẩm định"/>'
    '<bpmn:endEvent id="e"/>'
    '<bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="t1"/>'
    '<bpmn:sequenceFlow id="f2" sourceRef="t1" targetRef="t2"/>'
    '<bpmn:sequenceFlow id="f3" sourceRef="t2" targetRef="e"/>',
    shape("s", 100, 122, 36, 36, label=(80, 165, 76, 14))
    + shape("t1", 200, 100, 100, 80)
    + shape("t2", 360, 100, 100, 80)
    + shape("e", 520, 122, 36, 36)
    + edge("f1", (136, 140), (200, 140))
    + edge("f2", (300, 140), (360, 140))
    + edge("f3", (460, 140), (520, 140)),
)


def test_states_colour_the_elements(page: Any) -> None:
    overlay = Overlay(states={"t1": "done", "t2": "current", "s": "late", "e": "waiting", "f2": "done"})
    svg_text = render_svg(TASKS, overlay=overlay)
    svg = _svg(svg_text)
    assert _group(svg, "t1").get("data-state") == "done" and "state-done" in _classes(_group(svg, "t1"))
    assert _group(svg, "t2").get("data-state") == "current"
    assert _group(svg, "f3").get("data-state") is None and not any(c.startswith("state-") for c in _classes(_group(svg, "f3")))
    page.set_viewport_size({"width": 700, "height": 300})
    page.set_content(f"<html><body>{svg_text}</body></html>")
    colours = page.evaluate(
        """() => Object.fromEntries(['s', 't1', 't2', 'e', 'f2', 'f3'].map(id => {
            const body = document.querySelector(`[data-element-id="${id}"] > .bpmn-body`);
            const style = getComputedStyle(body);
            return [id, [style.fill, style.stroke, style.strokeWidth]];
        }))"""
    )

    def rgb(text: str) -> tuple[int, ...]:
        return tuple(int(v) for v in re.findall(r"\d+", text)[:3])

    done_fill, done_stroke = rgb(colours["t1"][0]), rgb(colours["t1"][1])
    assert done_stroke[1] > done_stroke[0] + 40 and done_fill[1] > done_fill[2]  # green
    current_stroke = rgb(colours["t2"][1])
    assert current_stroke[2] > current_stroke[0] + 80 and float(colours["t2"][2].rstrip("px")) >= 3.5  # blue, thick
    late_stroke = rgb(colours["s"][1])
    assert late_stroke[0] > late_stroke[1] + 80 and late_stroke[0] > late_stroke[2] + 80  # red
    waiting_stroke = rgb(colours["e"][1])
    assert waiting_stroke[0] > 150 and waiting_stroke[1] > 100 and waiting_stroke[2] < 60  # amber
    assert rgb(colours["f2"][1])[1] > rgb(colours["f2"][1])[0] + 40 and colours["f2"][0] == "none"  # a done flow: green line
    assert rgb(colours["f3"][1]) == (34, 36, 42)  # elements without a state keep the ink colour


def test_badges_sit_at_the_top_right_corner() -> None:
    svg = _svg(render_svg(TASKS, overlay=Overlay(badges={"t2": "12 hồ sơ", "f1": "3,4 ngày"})))
    badges = {g.get("data-badge-for"): g for g in svg.iter(f"{SVG}g") if g.get("data-badge-for")}
    assert set(badges) == {"t2", "f1"}
    assert "".join(badges["t2"].find(f"{SVG}text").itertext()) == "12 hồ sơ"
    left, top, right, bottom = _bbox(badges["t2"].find(f"{SVG}rect"))
    assert 460 <= right <= 472 and left < 460 and top < 100 < bottom  # over the corner (460, 100)
    # drawn above every element, so nothing hides it
    order = [e for e in svg.iter() if e.get("data-element-id") or e.get("data-badge-for")]
    assert order[-1].get("data-badge-for") or order[-2].get("data-badge-for")
    x0, y0, w, h = _numbers(svg.get("viewBox"))
    assert y0 <= top and x0 + w >= right


def test_heat_fills_from_pale_yellow_to_deep_red() -> None:
    svg = _svg(render_svg(TASKS, overlay=Overlay(heat={"t1": 0.0, "t2": 1.0, "s": 0.5})))

    def fill(element_id: str) -> tuple[int, int, int]:
        style = _body(_group(svg, element_id)).get("style")
        hex_colour = re.search(r"fill:#([0-9a-f]{6})", style).group(1)
        return tuple(int(hex_colour[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]

    pale, middle, deep = fill("t1"), fill("s"), fill("t2")
    assert min(pale) > 190 and pale[0] > pale[2] + 30  # pale yellow
    assert deep[0] > 140 and deep[1] < 40 and deep[2] < 60  # deep red
    assert pale[1] > middle[1] > deep[1]
    assert _group(svg, "t2").get("data-heat") == "1"
    assert _body(_group(svg, "e")).get("style") is None
    with pytest.raises(ValueError):
        Overlay(heat={"t1": 1.5})
    with pytest.raises(ValueError):
        Overlay(heat={"t1": float("nan")})


def test_titles_and_links() -> None:
    overlay = Overlay(
        titles={"t1": "Tiếp nhận: 3 hồ sơ đang chờ"},
        links={"t1": "/ho-so?buoc=t1&trang=2", "t2": "https://dichvucong.example/x?a=1"},
    )
    svg_text = render_svg(TASKS, overlay=overlay)
    svg = _svg(svg_text)
    t1 = _group(svg, "t1")
    assert t1[0].tag == f"{SVG}title" and t1[0].text == "Tiếp nhận: 3 hồ sơ đang chờ"
    assert t1.getparent().tag == f"{SVG}a" and t1.getparent().get("href") == "/ho-so?buoc=t1&trang=2"
    assert "buoc=t1&amp;trang=2" in svg_text
    assert _group(svg, "t2").getparent().get("href") == "https://dichvucong.example/x?a=1"
    assert _group(svg, "s").getparent().tag != f"{SVG}a"


@pytest.mark.parametrize(
    "url",
    ["javascript:alert(1)", " JavaScript:alert(1)", "java\tscript:alert(1)", "\x01javascript:alert(1)", "data:text/html,<script>x</script>", "vbscript:x", "file:///etc/passwd"],
)
def test_unsafe_links_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="Liên kết"):
        Overlay(links={"t1": url})


def test_untrusted_text_is_escaped() -> None:
    evil = '<script>alert("x")</script> \' " & done'
    data = document(
        f'<bpmn:userTask id="t1" name="{evil.replace("&", "&amp;").replace("<", "&lt;").replace(chr(34), "&quot;")}"/>',
        shape("t1", 100, 100, 300, 80),
    )
    svg_text = render_svg(data, overlay=Overlay(titles={"t1": evil}, badges={"t1": evil}, links={"t1": '/a?q="><script>'}))
    assert "<script" not in svg_text
    svg = _svg(svg_text)
    assert not list(svg.iter(f"{SVG}script"))
    group = _group(svg, "t1")
    assert _squash(evil) in _squash(_text(group))
    assert group.find(f"{SVG}title").text == evil
    assert group.getparent().get("href") == '/a?q="><script>'
    badge = next(g for g in svg.iter(f"{SVG}g") if g.get("data-badge-for") == "t1")
    assert "".join(badge.itertext()) == " ".join(evil.split())


def test_highlight_outlines_elements_in_magenta() -> None:
    svg = _svg(render_svg(TASKS, highlight=["t2", "f3", "nowhere"]))
    outlines = {e.get("data-highlight-for"): e for e in svg.iter() if e.get("data-highlight-for")}
    assert set(outlines) == {"t2", "f3"}
    left, top, right, bottom = _bbox(outlines["t2"])
    assert left < 360 and top < 100 and right > 460 and bottom > 180
    assert "bpmn-highlighted" in _classes(_group(svg, "t2"))
    style = svg.find(f"{SVG}style").text
    rule = re.search(r"\.bpmn-highlight-outline\{([^}]*)\}", style).group(1)
    colour = re.search(r"stroke:#([0-9a-f]{6})", rule).group(1)
    r, g, b = (int(colour[i : i + 2], 16) for i in (0, 2, 4))
    assert r > 180 and b > 120 and g < 60  # magenta
    assert float(re.search(r"stroke-width:([\d.]+)", rule).group(1)) >= 4


def test_bad_overlay_states_are_refused() -> None:
    with pytest.raises(ValueError, match="Trạng thái"):
        Overlay(states={"t1": "finished"})


# --------------------------------------------------------------------------- labels and diagram choice


def test_external_labels_use_their_layout_bounds_else_sit_below() -> None:
    svg = _svg(render_svg(TASKS))
    start_span = _group(svg, "s").find(f"{SVG}text/{SVG}tspan")
    assert float(start_span.get("x")) == pytest.approx(80 + 76 / 2) and 165 < float(start_span.get("y")) < 165 + 14
    data = document('<bpmn:endEvent id="e" name="Kết thúc"/>', shape("e", 100, 100, 36, 36))
    end_span = _group(_svg(render_svg(data)), "e").find(f"{SVG}text/{SVG}tspan")
    assert float(end_span.get("x")) == pytest.approx(118) and float(end_span.get("y")) > 136


def test_long_task_names_wrap_inside_the_box() -> None:
    name = "Kiểm tra hồ sơ, ghi Sổ hộ tịch, lấy số định danh cá nhân cho trẻ"
    svg = _svg(render_svg(document(f'<bpmn:task id="t" name="{name}"/>', shape("t", 0, 0, 100, 80))))
    spans = _group(svg, "t").findall(f"{SVG}text/{SVG}tspan")
    assert len(spans) >= 3 and " ".join(s.text for s in spans) == name
    assert all(10 < float(s.get("y")) < 80 for s in spans)


def test_several_diagrams_pick_the_process_asked_for() -> None:
    data = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:bpmndi="http://www.omg.org/spec/BPMN/20100524/DI"'
        ' xmlns:dc="http://www.omg.org/spec/DD/20100524/DC" id="d" targetNamespace="t">'
        '<bpmn:collaboration id="C"><bpmn:participant id="pool_b" name="Cơ quan thuế" processRef="B"/></bpmn:collaboration>'
        '<bpmn:process id="A"><bpmn:task id="a1" name="Một"/></bpmn:process>'
        '<bpmn:process id="B"><bpmn:task id="b1" name="Hai"/></bpmn:process>'
        '<bpmndi:BPMNDiagram id="DA"><bpmndi:BPMNPlane id="PA" bpmnElement="A">'
        '<bpmndi:BPMNShape id="a1_di" bpmnElement="a1"><dc:Bounds x="0" y="0" width="100" height="80"/></bpmndi:BPMNShape>'
        "</bpmndi:BPMNPlane></bpmndi:BPMNDiagram>"
        '<bpmndi:BPMNDiagram id="DC"><bpmndi:BPMNPlane id="PC" bpmnElement="C">'
        '<bpmndi:BPMNShape id="pool_di" bpmnElement="pool_b" isHorizontal="true"><dc:Bounds x="0" y="0" width="400" height="200"/></bpmndi:BPMNShape>'
        '<bpmndi:BPMNShape id="b1_di" bpmnElement="b1"><dc:Bounds x="100" y="50" width="100" height="80"/></bpmndi:BPMNShape>'
        "</bpmndi:BPMNPlane></bpmndi:BPMNDiagram></bpmn:definitions>"
    ).encode()
    assert set(_groups(_svg(render_svg(data)))) == {"a1"}
    assert set(_groups(_svg(render_svg(data, process_id="A")))) == {"a1"}
    assert set(_groups(_svg(render_svg(data, process_id="B")))) == {"pool_b", "b1"}
    with pytest.raises(DiagramError, match="“Z”"):
        render_svg(data, process_id="Z")


# --------------------------------------------------------------------------- bad input


def test_a_file_without_layout_is_a_clear_error() -> None:
    data = (
        '<?xml version="1.0"?><bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" id="d" targetNamespace="t">'
        '<bpmn:process id="P"><bpmn:startEvent id="s"/></bpmn:process></bpmn:definitions>'
    ).encode()
    with pytest.raises(DiagramError, match="không có phần bố cục sơ đồ") as caught:
        render_svg(data)
    assert isinstance(caught.value, ValueError) and caught.value.problems == []


@pytest.mark.parametrize(
    "data, words",
    [
        (b"<bpmn:definitions xmlns:bpmn='http://www.omg.org/spec/BPMN/20100524/MODEL'><bpmn:process", "well-formed"),
        (b"", "empty"),
        (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>', "DOCTYPE"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "root element"),
        (b"<a>" + b" " * (bpmn.MAX_FILE_BYTES + 1) + b"</a>", "limit"),
    ],
    ids=["truncated", "empty", "entities", "not-bpmn", "too-big"],
)
def test_unreadable_files_give_the_bpmn_readers_problem(data: bytes, words: str) -> None:
    with pytest.raises(DiagramError, match="Không đọc được tệp BPMN") as caught:
        render_svg(data)
    assert caught.value.problems and isinstance(caught.value.problems[0], bpmn.Problem)
    assert words in caught.value.problems[0].message and words in str(caught.value)


def test_odd_layout_values_are_skipped_not_fatal() -> None:
    data = document(
        '<bpmn:task id="t1" name="Tốt"/><bpmn:task id="t2" name="Hỏng"/><bpmn:sequenceFlow id="f" sourceRef="t1" targetRef="t2"/>',
        shape("t1", 0, 0, 100, 80) + shape("t2", "NaN", 0, 100, 80) + shape("ghost", 200, 0, 50, 50) + edge("f", (100, 40)),
    )
    svg = _svg(render_svg(data))
    groups = _groups(svg)
    assert set(groups) == {"t1", "ghost"}  # unknown references are drawn plainly, broken geometry is left out
    assert "bpmn-unknown" in _classes(groups["ghost"][0])


# --------------------------------------------------------------------------- speed


def test_a_hundred_elements_render_in_milliseconds() -> None:
    data = chain(49)  # start, 49 tasks, end and 50 flows: 101 elements
    assert len(_groups(_svg(render_svg(data)))) == 101
    best = min(_timed(lambda: render_svg(data)) for _ in range(7))
    assert best < 0.02, f"{best * 1000:.1f} ms"


def _timed(action: Any) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start
