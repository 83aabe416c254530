"""Completing a diagram's open metadata (engine/designer.py): pure XML edits the
engine then reads back."""

from __future__ import annotations

import pytest
from lxml import etree

from engine import designer
from engine.core import bpmn
from engine.errors import InvalidRequest

from .web_support import broken_birth_registration

NAME = "khai-sinh-thieu.bpmn"


def test_gaps_name_the_open_deadline_lane_role_and_allotment() -> None:
    gaps = designer.find_gaps({NAME: broken_birth_registration()})
    assert {(g.element_id, g.kind, g.key) for g in gaps} == {
        ("DangKyKhaiSinh", "process", "deadline"),
        ("lane_ks_tu_phap", "lane", "role"),
        ("kiem_tra_ghi_so", "step", "allotment"),
    }
    lane = next(g for g in gaps if g.kind == "lane")
    assert lane.name == "Công chức Tư pháp – Hộ tịch" and lane.file == NAME


def test_a_complete_diagram_has_no_gaps(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from .web_support import ROOT

    assert designer.find_gaps({"a.bpmn": (ROOT / "processes" / "dang-ky-khai-sinh.bpmn").read_bytes()}) == []


def test_filled_values_are_read_by_the_engine_and_the_diagram_deploys() -> None:
    content = broken_birth_registration()
    definition, problems = bpmn.analyse({NAME: content})
    assert definition is None and len([p for p in problems if p.severity == "error"]) >= 3
    filled = designer.fill(content, {
        "DangKyKhaiSinh": {"deadline": "trong ngày"},
        "lane_ks_tu_phap": {"role": "officer"},
        "kiem_tra_ghi_so": {"allotment": "2 giờ làm việc"},
    }, NAME)
    definition, problems = bpmn.analyse({NAME: filled})
    assert definition is not None, [str(p) for p in problems]
    assert definition.deadline.unit == "same_day"
    step = definition.steps["kiem_tra_ghi_so"]
    assert step.role == "officer" and str(step.allotment.amount) == "2" and step.allotment.unit == "working_hours"
    assert designer.find_gaps({NAME: filled}) == []


def test_an_existing_property_is_updated_not_duplicated_and_the_rest_is_kept() -> None:
    content = broken_birth_registration()
    once = designer.fill(content, {"ky_giay_khai_sinh": {"allotment": "3 giờ làm việc"}}, NAME)
    root = etree.fromstring(once)
    task = root.find(f".//{{{bpmn.BPMN_NS}}}userTask[@id='ky_giay_khai_sinh']")
    assert bpmn.extension_properties(task)["allotment"] == "3 giờ làm việc"
    names = [p.get("name") for p in task.iter(f"{{{bpmn.CAMUNDA_NS}}}property")]
    assert names.count("allotment") == 1
    # Untouched content (documentation with Vietnamese text, the diagram layout) survives.
    assert "Đăng ký khai sinh" in once.decode("utf-8") and b"BPMNShape" in once


def test_a_new_extension_block_goes_after_the_documentation() -> None:
    xml = (b'<?xml version="1.0" encoding="UTF-8"?><bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" id="d">'
           b'<bpmn:process id="p" isExecutable="true"><bpmn:documentation>x</bpmn:documentation><bpmn:startEvent id="s"/></bpmn:process></bpmn:definitions>')
    out = etree.fromstring(designer.fill(xml, {"p": {"code": "1.000001", "deadline": "3 ngày làm việc"}}))
    process = out.find(f"{{{bpmn.BPMN_NS}}}process")
    assert [etree.QName(c).localname for c in process][:2] == ["documentation", "extensionElements"]
    assert bpmn.extension_properties(process) == {"code": "1.000001", "deadline": "3 ngày làm việc"}


@pytest.mark.parametrize(("values", "fragment"), [
    ({"lane_ks_tu_phap": {"role": "king"}}, "Vai trò 'king' không có"),
    ({"kiem_tra_ghi_so": {"allotment": "soon"}}, "không phải là thời hạn"),
    ({"DangKyKhaiSinh": {"deadline": "  "}}, "Chưa nhập giá trị"),
    ({"khong_co": {"role": "officer"}}, "không có phần tử 'khong_co'"),
    ({"DangKyKhaiSinh": {"escalation": "x"}}, "Không điền được thuộc tính 'escalation'"),
])
def test_bad_values_are_refused_with_a_vietnamese_reason(values, fragment) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRequest) as err:
        designer.fill(broken_birth_registration(), values, NAME)
    assert fragment in err.value.message


def test_unreadable_xml_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        designer.fill(b"<not-closed", {"x": {"role": "officer"}}, NAME)
    assert designer.find_gaps({"x.bpmn": b"<not-closed"}) == []
