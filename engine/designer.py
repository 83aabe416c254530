"""Completing a diagram's open metadata from a form, without a modeller.

A designer uploads a BPMN file that leaves some metadata open — a lane without
a ``role``, a step without an ``allotment``, a process without a ``deadline``
or ``code``. :func:`find_gaps` lists those holes; :func:`fill` writes the values
the designer typed into the XML as ``camunda:property`` extension properties
(exactly the keys :mod:`engine.core.bpmn` reads), leaving the rest of the file
as it was. Pure functions over bytes: no database, no clock.

Example::

    gaps = find_gaps({"x.bpmn": data})
    # [Gap(file='x.bpmn', element_id='lane_1', kind='lane', name='Chuyên viên', key='role'), ...]
    data = fill(data, {"lane_1": {"role": "officer"}, "task_1": {"allotment": "3 ngày làm việc"}})
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from lxml import etree

from .core import bpmn
from .core.durations import DurationError, parse_duration
from .errors import InvalidRequest
from .organisation import ROLES

__all__ = ["FILLABLE_KEYS", "Gap", "check_value", "fill", "fill_files", "find_gaps"]

#: Keys this module fills, by kind of element.
FILLABLE_KEYS = {"process": ("code", "deadline"), "lane": ("role",), "step": ("allotment",)}

_CAMUNDA = bpmn.CAMUNDA_NS


def _b(tag: str) -> str:
    return f"{{{bpmn.BPMN_NS}}}{tag}"


_HUMAN = (_b("userTask"), _b("manualTask"), _b("task"))


@dataclass(frozen=True)
class Gap:
    """A metadata value a file leaves open: ``key`` on element ``element_id``."""

    file: str
    element_id: str
    kind: str  # "process" | "lane" | "step"
    name: str
    key: str


def check_value(key: str, value: str) -> str:
    """The cleaned ``value`` for ``key``; :class:`InvalidRequest` (Vietnamese message) if it cannot be used."""
    text = " ".join((value or "").split())
    if not text:
        raise InvalidRequest(f"Chưa nhập giá trị cho '{key}'.")
    if "\x00" in text or len(text) > 200:
        raise InvalidRequest(f"Giá trị của '{key}' không hợp lệ.")
    if key == "role":
        if text not in ROLES:
            raise InvalidRequest(f"Vai trò '{text}' không có; chọn một trong: {', '.join(ROLES)}.")
    elif key in ("allotment", "deadline"):
        try:
            parse_duration(text)
        except DurationError as err:
            raise InvalidRequest(
                f"'{text}' không phải là thời hạn; ví dụ: '3 ngày làm việc', '4 giờ làm việc', '30 ngày', 'trong ngày'."
            ) from err
    elif key == "code":
        if len(text) > 64 or " " in text:
            raise InvalidRequest("Mã thủ tục không được chứa dấu cách và tối đa 64 ký tự.")
    else:
        raise InvalidRequest(f"Không điền được thuộc tính '{key}' ở đây.")
    return text


def _innermost_lanes(process: Any) -> dict[str, Any]:
    index: dict[str, Any] = {}
    for lane in process.iter(_b("lane")):
        for ref in lane.findall(_b("flowNodeRef")):
            node = (ref.text or "").strip()
            if node not in index or _depth(lane) > _depth(index[node]):
                index[node] = lane
    return index


def _depth(element: Any) -> int:
    depth = 0
    while element is not None:
        depth, element = depth + 1, element.getparent()
    return depth


def _lane_has_role(lane: Any) -> bool:
    node = lane
    while node is not None:
        if node.tag == _b("lane") and bpmn.extension_properties(node).get("role"):
            return True
        node = node.getparent()
    return False


def find_gaps(files: Mapping[str, bytes]) -> list[Gap]:
    """The metadata ``files`` (one procedure) leave open, in file order.

    Files that are not readable BPMN are skipped (their problems come from
    :func:`engine.core.bpmn.analyse`).
    """
    roots = {}
    for name, content in files.items():
        root, _problems = bpmn.parse_xml(content, name)
        if root is not None:
            roots[name] = root
    called = {el.get("calledElement") for root in roots.values() for el in root.iter(_b("callActivity"))}
    gaps: list[Gap] = []
    processes = [(name, p) for name, root in roots.items() for p in root.iter(_b("process"))]
    with_code = [(name, p) for name, p in processes if bpmn.extension_properties(p).get("code")]
    main = with_code[0] if with_code else next(((n, p) for n, p in processes if p.get("id") not in called), None)
    if main is not None:
        name, process = main
        props = bpmn.extension_properties(process)
        label = props.get("name") or process.get("name") or process.get("id") or ""
        for key in FILLABLE_KEYS["process"]:
            if not props.get(key):
                gaps.append(Gap(name, process.get("id") or "", "process", label, key))
    for name, process in processes:
        lanes = _innermost_lanes(process)
        seen_lanes: set[str] = set()
        for task in process.iter(*_HUMAN):
            task_id = task.get("id") or ""
            props = bpmn.extension_properties(task)
            lane = lanes.get(task_id)
            if lane is not None and not props.get("role") and not _lane_has_role(lane):
                lane_id = lane.get("id") or ""
                if lane_id and lane_id not in seen_lanes:
                    seen_lanes.add(lane_id)
                    gaps.append(Gap(name, lane_id, "lane", lane.get("name") or lane_id, "role"))
            if not props.get("allotment") and task_id:
                gaps.append(Gap(name, task_id, "step", task.get("name") or task_id, "allotment"))
    return gaps


def _properties_container(element: Any) -> Any:
    """The element's ``camunda:properties``, created (with ``extensionElements``) when missing."""
    ext = element.find(_b("extensionElements"))
    if ext is None:
        ext = etree.Element(_b("extensionElements"))
        # extensionElements follows the documentation elements (BPMN schema order).
        position = sum(1 for child in element if child.tag == _b("documentation"))
        element.insert(position, ext)
    container = ext.find(f"{{{_CAMUNDA}}}properties")
    if container is None:
        container = etree.SubElement(ext, f"{{{_CAMUNDA}}}properties", nsmap={"camunda": _CAMUNDA})
    return container


def fill(content: bytes, values: Mapping[str, Mapping[str, str]], filename: str = "diagram.bpmn") -> bytes:
    """``content`` with each ``values[element_id][key]`` set as an extension property.

    An existing ``camunda:property`` of that name is updated; otherwise one is
    added. Raises :class:`InvalidRequest` for unreadable XML, an unknown element
    id or a value the engine would not accept.
    """
    root, problems = bpmn.parse_xml(content, filename)
    if root is None:
        raise InvalidRequest(f"Không đọc được tệp {filename}: " + "; ".join(p.message for p in problems))
    by_id = {el.get("id"): el for el in root.iter() if isinstance(el.tag, str) and el.tag.startswith(f"{{{bpmn.BPMN_NS}}}") and el.get("id")}
    for element_id, pairs in values.items():
        element = by_id.get(element_id)
        if element is None:
            raise InvalidRequest(f"Tệp {filename} không có phần tử '{element_id}'.")
        for key, raw in pairs.items():
            value = check_value(key, raw)
            container = _properties_container(element)
            existing = next((p for p in container.findall(f"{{{_CAMUNDA}}}property") if p.get("name") == key), None)
            if existing is None:
                existing = etree.SubElement(container, f"{{{_CAMUNDA}}}property")
                existing.set("name", key)
            existing.set("value", value)
    return etree.tostring(root.getroottree(), xml_declaration=True, encoding="UTF-8")


def fill_files(files: Mapping[str, bytes], values: Mapping[str, Mapping[str, Mapping[str, str]]]) -> dict[str, bytes]:
    """:func:`fill` over several files: ``values[filename][element_id][key]``; untouched files stay as they are."""
    unknown = set(values) - set(files)
    if unknown:
        raise InvalidRequest("Không có tệp: " + ", ".join(sorted(unknown)) + ".")
    return {name: fill(content, values[name], name) if values.get(name) else content for name, content in files.items()}
