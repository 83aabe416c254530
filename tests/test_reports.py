"""Supervisors' figures on small histories made through the use cases, with a fixed
clock, on SQLite and PostgreSQL: on-time rates, bottlenecks, satisfaction, the
periodic report and its Excel, PDF and CSV exports, and the reports API."""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from openpyxl import load_workbook
from pypdf import PdfReader
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from api.app import create_app
from engine import auth, config, exports, lifecycle, organisation, public, reports, scheduler, services
from engine.core.calendar import VN_TZ
from engine.errors import Forbidden, InvalidRequest, NotFound
from engine.persistence.models import Dossier, Task

from .conftest import FIXTURES, fixture_bytes

XA = "000.17.22.H19"  # UBND xã Phước An
PROVINCE = "000.00.00.H19"
VPDK = "000.00.31.H19"
PHONE = "0912345678"
SECRET = "5678"

# Two steps at the commune: reception (1 working day), then handling (2 working days); 3 days in all.
SIMPLE = b"""<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:camunda="http://camunda.org/schema/1.0/bpmn" id="d" targetNamespace="t">
<bpmn:process id="P" name="C\xe1\xba\xa5p gi\xe1\xba\xa5y x\xc3\xa1c nh\xe1\xba\xadn" isExecutable="true"><bpmn:extensionElements><camunda:properties><camunda:property name="code" value="9.000001"/><camunda:property name="deadline" value="3 working days"/></camunda:properties></bpmn:extensionElements>
<bpmn:laneSet id="ls"><bpmn:lane id="l1" name="Desk"><bpmn:extensionElements><camunda:properties><camunda:property name="role" value="receptionist"/><camunda:property name="agency" value="home"/></camunda:properties></bpmn:extensionElements><bpmn:flowNodeRef>tiep_nhan</bpmn:flowNodeRef></bpmn:lane>
<bpmn:lane id="l2" name="Officer"><bpmn:extensionElements><camunda:properties><camunda:property name="role" value="officer"/><camunda:property name="agency" value="home"/></camunda:properties></bpmn:extensionElements><bpmn:flowNodeRef>xu_ly</bpmn:flowNodeRef></bpmn:lane></bpmn:laneSet>
<bpmn:startEvent id="start"/><bpmn:userTask id="tiep_nhan" name="Ti\xe1\xba\xbfp nh\xe1\xba\xadn h\xe1\xbb\x93 s\xc6\xa1"><bpmn:extensionElements><camunda:properties><camunda:property name="allotment" value="1 working day"/></camunda:properties></bpmn:extensionElements></bpmn:userTask>
<bpmn:userTask id="xu_ly" name="Th\xe1\xba\xa9m \xc4\x91\xe1\xbb\x8bnh, x\xe1\xbb\xad l\xc3\xbd"><bpmn:extensionElements><camunda:properties><camunda:property name="allotment" value="2 working days"/></camunda:properties></bpmn:extensionElements></bpmn:userTask><bpmn:endEvent id="end"/>
<bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="tiep_nhan"/><bpmn:sequenceFlow id="f2" sourceRef="tiep_nhan" targetRef="xu_ly"/><bpmn:sequenceFlow id="f3" sourceRef="xu_ly" targetRef="end"/></bpmn:process></bpmn:definitions>
"""
CODE = "9.000001"

def vn(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=VN_TZ)


START, END, NOW = vn(2026, 3, 1), vn(2026, 3, 16), vn(2026, 3, 20, 9, 0)


@dataclass
class History:
    codes: dict[str, str]


def _tasks(session: Session, code: str) -> dict[str, int]:
    return {row.step_id: row.id for row in services.open_tasks(session, code)}


def _dossier(session: Session, name: str, received: datetime, channel: str = "in_person") -> str:
    record = services.start_dossier(
        session, CODE, {}, actor="lan.desk", now=received, agency_code=XA, applicant={"name": f"Ông {name}", "phone": PHONE}, channel=channel
    )
    return record.code


def _step(session: Session, code: str, step: str, actor: str, claimed: datetime | None, completed: datetime | None) -> int:
    task_id = _tasks(session, code)[step]
    if claimed is not None:
        lifecycle.claim(session, task_id, actor, claimed)
    if completed is not None:
        services.complete_task(session, task_id, {}, actor=actor, now=completed)
    return task_id


def build_history(session: Session) -> History:
    """Seven dossiers at the commune of Phước An, handled 27/2–6/3/2026 (no holidays then).

    A early, B on time (its second step late), C late, D unfinished and overdue,
    E two supplement requests (late by the rule though on time by the dates),
    F returned once for rework then early, G received before the period and early.
    """
    _load_org(session)
    services.deploy(session, {"simple.bpmn": SIMPLE}, actor="designer", now=vn(2026, 2, 2, 8))
    codes: dict[str, str] = {}
    # G: Fri 27/2 10:00, due Wed 4/3 10:00; finished Mon 2/3 15:00 (1.4375 working days).
    codes["G"] = g = _dossier(session, "G", vn(2026, 2, 27, 10))
    _step(session, g, "tiep_nhan", "lan.desk", vn(2026, 2, 27, 10, 30), vn(2026, 2, 27, 11))
    _step(session, g, "xu_ly", "hung.xa", vn(2026, 3, 2, 8), vn(2026, 3, 2, 15))
    # A: Mon 2/3 08:00, due Thu 5/3 08:00; finished Tue 3/3 10:00 (1.25).
    codes["A"] = a = _dossier(session, "A", vn(2026, 3, 2, 8))
    _step(session, a, "tiep_nhan", "lan.desk", vn(2026, 3, 2, 8), vn(2026, 3, 2, 9))
    _step(session, a, "xu_ly", "hung.xa", vn(2026, 3, 2, 10), vn(2026, 3, 3, 10))
    # B: Mon 2/3 09:00 (online), due Thu 5/3 09:00; finished Thu 08:30 (2.9375); its second step was due Wed 10:00.
    codes["B"] = b = _dossier(session, "B", vn(2026, 3, 2, 9), channel="online")
    _step(session, b, "tiep_nhan", "lan.desk", vn(2026, 3, 2, 9, 30), vn(2026, 3, 2, 10))
    _step(session, b, "xu_ly", "hung.xa", vn(2026, 3, 2, 13), vn(2026, 3, 5, 8, 30))
    # C: Mon 2/3 10:00, due Thu 5/3 10:00; finished Fri 6/3 10:00 (4.0).
    codes["C"] = c = _dossier(session, "C", vn(2026, 3, 2, 10))
    _step(session, c, "tiep_nhan", "lan.desk", vn(2026, 3, 2, 10, 30), vn(2026, 3, 2, 11))
    _step(session, c, "xu_ly", "hung.xa", vn(2026, 3, 3, 8), vn(2026, 3, 6, 10))
    # D: Mon 2/3 11:00, due Thu 5/3 11:00; its second step (due Wed 4/3 13:30) is still open.
    codes["D"] = d = _dossier(session, "D", vn(2026, 3, 2, 11))
    _step(session, d, "tiep_nhan", "lan.desk", vn(2026, 3, 2, 13), vn(2026, 3, 2, 13, 30))
    _step(session, d, "xu_ly", "hung.xa", vn(2026, 3, 3, 8), None)
    # E: Tue 3/3 08:00; paused Tue 10:00–Wed 10:00 and Wed 11:00–14:00 (9.5 working hours);
    # finished Thu 5/3 09:00: 17 h less 9.5 h paused = 0.9375 working days.
    codes["E"] = e = _dossier(session, "E", vn(2026, 3, 3, 8))
    _step(session, e, "tiep_nhan", "lan.desk", vn(2026, 3, 3, 8, 30), vn(2026, 3, 3, 9))
    _step(session, e, "xu_ly", "hung.xa", vn(2026, 3, 3, 9, 30), None)
    lifecycle.request_supplement(session, e, ["Bản sao giấy khai sinh"], "hung.xa", vn(2026, 3, 3, 10))
    lifecycle.resume(session, e, "lan.desk", vn(2026, 3, 4, 10))
    lifecycle.request_supplement(session, e, ["Bản chính giấy khai sinh"], "hung.xa", vn(2026, 3, 4, 11))
    lifecycle.resume(session, e, "lan.desk", vn(2026, 3, 4, 14))
    services.complete_task(session, _tasks(session, e)["xu_ly"], {}, actor="hung.xa", now=vn(2026, 3, 5, 9))
    # F: Tue 3/3 09:00; handling returned to reception Tue 13:30, redone; finished Wed 4/3 15:00 (1.5625).
    codes["F"] = f = _dossier(session, "F", vn(2026, 3, 3, 9))
    _step(session, f, "tiep_nhan", "lan.desk", vn(2026, 3, 3, 9, 30), vn(2026, 3, 3, 10))
    returned = _step(session, f, "xu_ly", "hung.xa", vn(2026, 3, 3, 11), None)
    lifecycle.return_to_previous(session, returned, "Thiếu bản sao giấy tờ", "hung.xa", vn(2026, 3, 3, 13, 30))
    services.complete_task(session, _tasks(session, f)["tiep_nhan"], {}, actor="lan.desk", now=vn(2026, 3, 3, 14))
    _step(session, f, "xu_ly", "hung.xa", vn(2026, 3, 3, 15), vn(2026, 3, 4, 15))
    # Results, ratings, a complaint.
    lifecycle.return_result(session, a, "desk", "lan.desk", vn(2026, 3, 3, 11))
    lifecycle.return_result(session, f, "desk", "lan.desk", vn(2026, 3, 4, 16))
    public.rate(session, a, SECRET, {k: 5 for k in public.CRITERIA}, None, vn(2026, 3, 3, 12))
    public.rate(session, f, SECRET, {k: (2 if k == "cong_chuc" else 4) for k in public.CRITERIA}, "Phải đi lại nhiều lần", vn(2026, 3, 5, 8))
    public.send_feedback(session, "Trễ hẹn", "Hồ sơ trả chậm một ngày", vn(2026, 3, 10, 9), dossier_code=c, secret=SECRET)
    return History(codes)


def _load_org(session: Session) -> None:
    text = (FIXTURES / "org_two_tier.yaml").read_text()
    organisation.load_organisation(session, organisation.parse_organisation(text, "org.yaml"), actor="admin", now=vn(2026, 2, 2, 8))
    organisation.agency_tree(session, fresh=True)


@pytest.fixture
def history(session: Session) -> History:
    return build_history(session)


def _one(rows: list[dict], **match: object) -> dict:
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, rows)
    return found[0]


# --------------------------------------------------------------------------- on time


def test_on_time_per_agency_judges_dossiers(session: Session, history: History) -> None:
    rows = reports.on_time(session, START, END, "agency", now=NOW)
    row = _one(rows, agency_code=XA)
    assert len(rows) == 1
    assert {k: row[k] for k in ("received", "carried_over", "early", "on_time", "late", "finished", "in_time", "overdue", "in_progress", "withdrawn")} == {
        "received": 6, "carried_over": 1, "early": 3, "on_time": 1, "late": 2, "finished": 6,
        "in_time": 0, "overdue": 1, "in_progress": 1, "withdrawn": 0,
    }
    assert row["on_time_rate"] == pytest.approx(4 / 6, abs=1e-4)
    assert row["late_rate"] == pytest.approx(2 / 6, abs=1e-4)
    # 10 + 23.5 + 32 + 7.5 (E, paused time excluded) + 12.5 + 11.5 working hours over 6 dossiers.
    assert row["avg_days"] == round(97 / 6 / 8, 2) == 2.02
    assert row["p90_days"] == 4.0
    assert row["flagged"] is True
    assert row["agency_name"] == "UBND xã Phước An"


def test_drill_down_lists_the_dossiers_behind_each_number(session: Session, history: History) -> None:
    c = history.codes

    def codes(metric: str, **kw: object) -> list[str]:
        return reports.drill_down(session, START, END, "agency", XA, metric, now=NOW, **kw)

    assert codes("early") == sorted([c["A"], c["F"], c["G"]])
    assert codes("on_time") == [c["B"]]
    assert codes("late") == sorted([c["C"], c["E"]])
    assert codes("overdue") == [c["D"]]
    assert codes("carried_over") == [c["G"]]
    assert codes("received") == sorted(c[k] for k in "ABCDEF")
    steps = reports.drill_down(session, START, END, "step", CODE, "late", now=NOW, step="xu_ly")
    assert steps == sorted([c["B"], c["C"]])
    with pytest.raises(InvalidRequest):
        codes("nonsense")
    with pytest.raises(NotFound):
        reports.drill_down(session, START, END, "agency", "000.99.99.H99", "late", now=NOW)


def test_unfinished_work_is_judged_at_the_end_of_the_period(session: Session, history: History) -> None:
    # Up to Wed 4/3 12:00: B, C, D (due Thu 5/3) and F are unfinished and in time; G and A finished early.
    rows = reports.on_time(session, START, vn(2026, 3, 4, 12), "procedure", now=NOW)
    row = _one(rows, procedure_code=CODE)
    assert (row["early"], row["on_time"], row["late"], row["in_time"], row["overdue"]) == (2, 0, 0, 4, 1)
    assert reports.drill_down(session, START, vn(2026, 3, 4, 12), "procedure", CODE, "in_time", now=NOW) == sorted(
        history.codes[k] for k in "BCDF"
    )
    # E has had its second supplement request (Wed 11:00): late whatever its dates, even unfinished.
    assert reports.drill_down(session, START, vn(2026, 3, 4, 12), "procedure", CODE, "overdue", now=NOW) == [history.codes["E"]]
    # A period not over yet is judged now: on Wed 4/3 14:00 D's second step (due 13:30) is overdue.
    steps = reports.on_time(session, START, END, "step", now=vn(2026, 3, 4, 14), procedure=CODE)
    assert _one(steps, step_id="xu_ly")["overdue"] >= 1


def test_on_time_per_officer_and_step(session: Session, history: History) -> None:
    officers = reports.on_time(session, START, END, "officer", now=NOW)
    hung = _one(officers, officer="hung.xa")
    assert (hung["early"], hung["on_time"], hung["late"], hung["overdue"], hung["cancelled"]) == (4, 0, 2, 1, 1)
    assert hung["officer_name"] == "Trần Văn Hùng"
    assert hung["flagged"] is True
    lan = _one(officers, officer="lan.desk")
    assert (lan["received"], lan["early"], lan["late"], lan["flagged"]) == (7, 7, 0, False)
    steps = reports.on_time(session, START, END, "step", now=NOW)
    handle = _one(steps, step_id="xu_ly")
    assert (handle["received"], handle["carried_over"], handle["finished"], handle["late"], handle["cancelled"]) == (7, 1, 6, 2, 1)
    assert handle["step_name"] == "Thẩm định, xử lý"
    # 9 + 22.5 + 31 + 6.5 + 9 + 10.5 working hours (E's pauses excluded).
    assert handle["avg_days"] == round(88.5 / 6 / 8, 2) == 1.84
    assert handle["p90_days"] == 3.88  # 31 h, nearest rank


def test_scope_limits_figures_to_visible_agencies(session: Session, history: History) -> None:
    vpdk_only = reports.scope_of(session, VPDK, None)
    assert reports.on_time(session, START, END, "agency", now=NOW, agencies=vpdk_only) == []
    tree = organisation.agency_tree(session)
    province = reports.scope_of(session, PROVINCE, None)
    assert tree.by_code[XA].id in province and tree.by_code[VPDK].id in province
    with pytest.raises(Forbidden):
        reports.scope_of(session, XA, vpdk_only)
    with pytest.raises(InvalidRequest):
        reports.on_time(session, END, START, "agency", now=NOW)
    with pytest.raises(InvalidRequest):
        reports.on_time(session, START, END, "officer", now=NOW, level="dossier")


# --------------------------------------------------------------------------- bottlenecks


def test_bottlenecks_per_step_with_waiting_working_returns(session: Session, history: History) -> None:
    result = reports.bottlenecks(session, CODE, START, END, now=NOW)
    steps = result["steps"]
    assert [s["step_id"] for s in steps] == ["xu_ly", "tiep_nhan"]  # ranked by late share
    handle = steps[0]
    assert handle["rank"] == 1 and handle["agency_code"] == XA
    assert (handle["queue"], handle["queue_overdue"], handle["finished"], handle["late"]) == (1, 1, 6, 2)
    assert handle["late_share"] == pytest.approx(1 / 3, abs=1e-4)
    # Waiting before claim 1 + 1.5 + 5 + 0.5 + 1 + 5 h; working 8 + 21 + 26 + 6 + 8 + 5.5 h (E's pauses excluded).
    assert handle["avg_wait_days"] == round(14 / 6 / 8, 2) == 0.29
    assert handle["avg_work_days"] == round(74.5 / 6 / 8, 2) == 1.55
    assert (handle["returns_sent"], handle["returns_received"]) == (1, 0)
    reception = steps[1]
    assert (reception["returns_sent"], reception["returns_received"], reception["late"], reception["queue"]) == (0, 1, 0, 0)
    [agency] = result["agencies"]
    assert (agency["agency_code"], agency["queue"], agency["finished"], agency["late"], agency["returns_sent"]) == (XA, 1, 13, 2, 1)
    by_queue = reports.bottlenecks(session, CODE, START, END, now=NOW, rank_by="returns")
    assert by_queue["steps"][0]["rank"] == 1
    c = history.codes
    drill = reports.bottleneck_drill_down
    assert drill(session, CODE, START, END, "queue", now=NOW, step="xu_ly") == [c["D"]]
    assert drill(session, CODE, START, END, "late", now=NOW, step="xu_ly", agency=XA) == sorted([c["B"], c["C"]])
    assert drill(session, CODE, START, END, "returns_sent", now=NOW, step="xu_ly") == [c["F"]]
    assert drill(session, CODE, START, END, "returns_received", now=NOW, step="tiep_nhan") == [c["F"]]
    with pytest.raises(NotFound):
        reports.bottlenecks(session, "0.000000", START, END, now=NOW)


def test_bottlenecks_of_a_joint_procedure_per_agency(session: Session, now: datetime) -> None:
    _load_org(session)
    services.deploy(session, fixture_bytes("land_joint.bpmn"), actor="designer", now=now)
    record = services.start_dossier(session, "1.999010", {}, actor="lan.desk", now=vn(2026, 3, 2, 8), agency_code=XA)
    for step, actor, at in (("receive", "lan.desk", vn(2026, 3, 2, 9)), ("confirm", "hung.xa", vn(2026, 3, 3, 9))):
        services.complete_task(session, _tasks(session, record.code)[step], {}, actor=actor, now=at)
    result = reports.bottlenecks(session, "1.999010", START, END, now=NOW, rank_by="queue")
    first = result["steps"][0]
    assert (first["step_id"], first["agency_code"], first["queue"], first["queue_overdue"]) == ("survey", VPDK, 1, 1)
    agencies = {a["agency_code"]: a for a in result["agencies"]}
    assert set(agencies) == {XA, VPDK}
    assert (agencies[XA]["finished"], agencies[VPDK]["queue"]) == (2, 1)
    # A supervisor of the land office sees only its own step.
    only = reports.bottlenecks(session, "1.999010", START, END, now=NOW, agencies=reports.scope_of(session, VPDK, None))
    assert [s["step_id"] for s in only["steps"]] == ["survey"]


# --------------------------------------------------------------------------- satisfaction


def test_satisfaction_score_of_decision_766(session: Session, history: History) -> None:
    [row] = reports.satisfaction(session, START, END, now=NOW)
    assert row["agency_code"] == XA
    assert {k: row[k] for k in ("finished", "late", "complained", "ratings", "satisfied", "dissatisfied", "feedback")} == {
        "finished": 6, "late": 2, "complained": 2, "ratings": 2, "satisfied": 1, "dissatisfied": 1, "feedback": 1,
    }
    assert row["score"] == 33.33  # 100 − 2/6 late − 2/6 with a complaint or dissatisfaction
    assert row["dissatisfied_share"] == 0.5
    reasons = {r["kind"]: r for r in row["reasons"]}
    assert reasons["rating"]["dossier_code"] == history.codes["F"]
    assert reasons["rating"]["comment"] == "Phải đi lại nhiều lần"
    assert reasons["rating"]["criteria"] == ["Công chức"]
    assert reasons["feedback"]["dossier_code"] == history.codes["C"]
    [proc] = reports.satisfaction(session, START, END, now=NOW, group_by="procedure")
    assert (proc["procedure_code"], proc["score"], proc["feedback"]) == (CODE, 33.33, 1)


# --------------------------------------------------------------------------- periodic report and exports


def test_periods() -> None:
    def bounds(text: str) -> tuple[datetime, datetime, str]:
        period = reports.parse_period(text)
        return period.start, period.end, period.label

    assert bounds("Q1-2026") == (vn(2026, 1, 1), vn(2026, 4, 1), "Quý I năm 2026")
    assert bounds("q4-2026")[:2] == (vn(2026, 10, 1), vn(2027, 1, 1))
    assert bounds("H1-2026") == (vn(2026, 1, 1), vn(2026, 7, 1), "6 tháng đầu năm 2026")
    assert bounds("9M-2026") == (vn(2026, 1, 1), vn(2026, 10, 1), "9 tháng năm 2026")
    assert bounds("2026") == (vn(2026, 1, 1), vn(2027, 1, 1), "Năm 2026")
    for bad in ("Q5-2026", "2026-Q1", "", "H3-2026", "1999"):
        with pytest.raises(InvalidRequest):
            reports.parse_period(bad)


def test_periodic_report_rows_and_totals(session: Session, history: History) -> None:
    report = reports.periodic_report(session, PROVINCE, "Q1-2026", now=NOW)
    assert report.agency_name == "UBND tỉnh Đồng Nai" and report.period.label == "Quý I năm 2026"
    assert [r["agency_code"] for r in report.by_agency][0] == PROVINCE
    assert len(report.by_agency) == 7  # the province and the six agencies under it
    xa = _one(report.by_agency, agency_code=XA)
    expected = {"total": 7, "carried_over": 0, "received_online": 1, "received_direct": 6, "finished": 6, "early": 3,
                "on_time": 1, "late": 2, "in_progress": 1, "in_time": 0, "overdue": 1, "withdrawn": 0}
    assert {k: xa[k] for k in expected} == expected
    assert xa["on_time_rate"] == 66.67 and xa["depth"] == 1
    assert _one(report.by_agency, agency_code=VPDK)["total"] == 0
    assert {k: report.totals[k] for k in expected} == expected
    [proc] = report.by_procedure
    assert (proc["procedure_code"], proc["total"], proc["late"]) == (CODE, 7, 2)
    # An agency outside the supervisor's jurisdiction is refused.
    with pytest.raises(Forbidden):
        reports.periodic_report(session, PROVINCE, "Q1-2026", now=NOW, visible=reports.scope_of(session, XA, None))


def test_excel_pdf_and_csv_read_back(session: Session, history: History) -> None:
    report = reports.periodic_report(session, PROVINCE, "Q1-2026", now=NOW)
    book = load_workbook(io.BytesIO(exports.report_xlsx(report)))
    assert book.sheetnames == ["Theo cơ quan", "Theo thủ tục"]
    sheet = book["Theo cơ quan"]
    assert sheet["A1"].value == "BÁO CÁO KẾT QUẢ GIẢI QUYẾT THỦ TỤC HÀNH CHÍNH"
    assert "Quý I năm 2026 (từ ngày 01/01/2026 đến ngày 31/03/2026)" in sheet["A2"].value
    header = [cell.value for cell in sheet[5]]
    assert header[:6] == ["STT", "Mã", "Cơ quan", "Tổng số hồ sơ nhận giải quyết", "Kỳ trước chuyển qua", "Mới tiếp nhận trực tuyến"]
    assert header[header.index("Tỷ lệ đúng hạn (%)")] and sheet[5][0].font.bold
    rows = {r[1]: r for r in sheet.iter_rows(min_row=6, values_only=True)}
    xa = rows[XA]
    column = {name: header.index(name) for name in header}
    assert (xa[column["Tổng số hồ sơ nhận giải quyết"]], xa[column["Trước hạn"]], xa[column["Quá hạn"]]) == (7, 3, 2)
    assert xa[column["Tỷ lệ đúng hạn (%)"]] == 66.67
    totals = rows[None]
    assert totals[2] == "Tổng cộng" and totals[column["Đã giải quyết: tổng số"]] == 6
    assert book["Theo thủ tục"]["B6"].value == CODE

    text = unicodedata.normalize("NFC", "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(exports.report_pdf(report))).pages))
    assert "Báo cáo kết quả giải quyết thủ tục hành chính" in text
    assert "Quý I năm 2026" in text and "UBND tỉnh Đồng Nai" in text and "UBND xã Phước An" in text
    assert "66,67" in text

    parsed = list(csv.reader(io.StringIO(exports.report_csv(report).decode("utf-8-sig"))))
    assert parsed[0][:4] == ["Phân loại", "Mã", "Tên", "Tổng số hồ sơ nhận giải quyết"]
    xa_row = next(r for r in parsed if r[1] == XA)
    assert xa_row[0] == "Theo cơ quan" and xa_row[3] == "7" and xa_row[parsed[0].index("Quá hạn")] == "2"
    assert parsed[-1][0] == "Tổng cộng" and parsed[-1][parsed[0].index("Tỷ lệ đúng hạn (%)")] == "66.67"
    on_time = list(csv.reader(io.StringIO(exports.rows_csv(reports.on_time(session, START, END, "officer", now=NOW)).decode("utf-8-sig"))))
    assert on_time[0][:3] == ["Tài khoản", "Cán bộ", "Tiếp nhận trong kỳ"]
    hung = next(r for r in on_time if r[0] == "hung.xa")
    assert hung[on_time[0].index("Quá hạn")] == "2" and hung[on_time[0].index("Cảnh báo quá hạn trên 10%")] == "Có"


# --------------------------------------------------------------------------- API

PASSWORD = "mat-khau-giam-sat"


@pytest.fixture
def api(session: Session, history: History, db_engine: Engine) -> Iterator[Any]:
    extra = "officers:\n  - {username: gs.vpdk, full_name: Giám sát VPĐK, roles: [{agency: 000.00.31.H19, role: supervisor}]}\n"
    organisation.load_organisation(session, organisation.parse_organisation(extra), "admin", vn(2026, 2, 2, 8))
    for username in ("giam.sat", "hung.xa", "gs.vpdk"):
        auth.set_password(session, username, PASSWORD)
    app = create_app(database_url=db_engine.url.render_as_string(hide_password=False))
    client = app.test_client()

    def token(username: str) -> str:
        response = client.post("/api/v1/auth/login", json={"username": username, "password": PASSWORD})
        assert response.status_code == 200, response.get_json()
        return response.get_json()["token"]

    client.token = token  # type: ignore[attr-defined]
    yield client
    app.extensions["motcua.engine"].dispose()


def test_reports_api_for_supervisors(api: Any, history: History) -> None:
    headers = {"Authorization": f"Bearer {api.token('giam.sat')}"}
    period = "from=2026-03-01&to=2026-03-16"
    response = api.get(f"/api/v1/reports/on-time?group_by=agency&{period}", headers=headers)
    assert response.status_code == 200, response.get_json()
    [row] = response.get_json()["rows"]
    assert (row["agency_code"], row["received"], row["late"], row["overdue"], row["flagged"]) == (XA, 6, 2, 1, True)
    response = api.get(f"/api/v1/reports/on-time?group_by=officer&{period}&format=csv", headers=headers)
    assert response.mimetype == "text/csv"
    table = list(csv.reader(io.StringIO(response.data.decode("utf-8-sig"))))
    assert next(r for r in table if r[0] == "hung.xa")[table[0].index("Quá hạn")] == "2"
    response = api.get(f"/api/v1/reports/bottlenecks?procedure={CODE}&{period}&format=xlsx&table=agencies", headers=headers)
    sheet = load_workbook(io.BytesIO(response.data)).active
    assert [c.value for c in sheet[3]][:2] == ["Mã cơ quan", "Cơ quan"] and sheet["A4"].value == XA
    response = api.get(f"/api/v1/reports/drill-down?report=on-time&group_by=agency&key={XA}&metric=late&{period}", headers=headers)
    assert response.get_json()["codes"] == sorted([history.codes["C"], history.codes["E"]])
    response = api.get(f"/api/v1/reports/bottlenecks?procedure={CODE}&{period}", headers=headers)
    assert response.get_json()["steps"][0]["step_id"] == "xu_ly"
    response = api.get(f"/api/v1/reports/drill-down?report=bottlenecks&procedure={CODE}&step=xu_ly&metric=returns_sent&{period}", headers=headers)
    assert response.get_json()["codes"] == [history.codes["F"]]
    response = api.get(f"/api/v1/reports/satisfaction?{period}", headers=headers)
    assert response.get_json()["rows"][0]["score"] == 33.33
    response = api.get("/api/v1/reports/periodic?period=Q1-2026&format=xlsx", headers=headers)
    assert response.status_code == 200 and "bao-cao-Q1-2026-000.00.00.H19.xlsx" in response.headers["Content-Disposition"]
    assert load_workbook(io.BytesIO(response.data))["Theo cơ quan"]["A1"].value.startswith("BÁO CÁO")
    response = api.get("/api/v1/reports/periodic?period=Q1-2026&format=pdf", headers=headers)
    assert response.mimetype == "application/pdf" and response.data.startswith(b"%PDF")
    response = api.get("/api/v1/reports/periodic?period=Q1-2026", headers=headers)
    assert response.get_json()["totals"]["total"] == 7


def test_reports_api_refuses_others_and_bad_input(api: Any) -> None:
    assert api.get("/api/v1/reports/on-time").status_code == 401
    officer = {"Authorization": f"Bearer {api.token('hung.xa')}"}
    response = api.get("/api/v1/reports/on-time", headers=officer)
    assert response.status_code == 403 and response.mimetype == "application/problem+json"
    land = {"Authorization": f"Bearer {api.token('gs.vpdk')}"}
    response = api.get(f"/api/v1/reports/periodic?period=Q1-2026&agency={XA}", headers=land)
    assert response.status_code == 403 and response.mimetype == "application/problem+json"
    response = api.get("/api/v1/reports/on-time?from=2026-03-01&to=2026-03-16", headers=land)
    assert response.status_code == 200 and response.get_json()["rows"] == []  # nothing of the commune's is theirs
    supervisor = {"Authorization": f"Bearer {api.token('giam.sat')}"}
    # Malformed parameters are refused by the schema (422, as everywhere in the API), wrong values by the engine (400).
    for query, status in (("on-time?group_by=nation", 422), ("bottlenecks", 422), ("periodic?period=Q5-2026", 400),
                          ("on-time?from=yesterday", 400), ("on-time?from=2026-03-16&to=2026-03-01", 400),
                          ("drill-down?metric=nonsense&key=000.17.22.H19", 400)):
        response = api.get(f"/api/v1/reports/{query}", headers=supervisor)
        assert response.status_code == status, (query, response.get_json())
        assert response.mimetype == "application/problem+json"
    assert api.get("/api/v1/reports/bottlenecks?procedure=0.000000", headers=supervisor).status_code == 404


def test_working_time_in_sql_matches_the_calendar(session: Session) -> None:
    """The SQL arithmetic behind handling times agrees with the working calendar across
    Tết, public holidays, make-up Saturdays and an administrator's extra day off."""
    import random

    from sqlalchemy import BigInteger, column, select, values

    services.add_calendar_override(session, datetime(2026, 3, 13).date(), "day_off", "Nghỉ bù", "admin", vn(2026, 1, 5, 8))
    calendar = services.load_calendar(session, fresh=True)
    work = reports._WorkingTime(calendar, datetime(2025, 1, 1).date(), datetime(2026, 12, 31).date(),
                                postgres=session.get_bind().dialect.name == "postgresql")
    rng = random.Random(766)
    instants = [vn(2026, 2, 13, 10), vn(2026, 2, 25, 10), vn(2026, 3, 12, 17), vn(2026, 3, 16, 7, 30), vn(2025, 4, 29, 12)]
    instants += [vn(2025, 1, 1) + (vn(2026, 12, 31) - vn(2025, 1, 1)) * rng.random() for _ in range(150)]
    epochs = [int(t.timestamp()) for t in instants]
    points = values(column("e", BigInteger), name="points", literal_binds=True).data([(e,) for e in epochs]).cte("points")
    day, tod = work.split(work.local(points.c.e))
    rows = dict(session.execute(select(points.c.e, work.cum(day, tod))).all())
    first = instants[0]
    for instant, epoch in zip(instants, epochs):
        start, end = sorted((first, instant))
        expected = calendar.working_time_between(start.replace(microsecond=0), end.replace(microsecond=0)).total_seconds()
        assert abs(rows[epoch] - rows[int(first.timestamp())]) == expected, instant


def test_handling_times_follow_a_change_of_the_calendar(session: Session, history: History) -> None:
    """An administrator declares Tue 3/3/2026 a day off after the fact: stored handling
    times are recomputed (7.5 + 15.5 + 24 + 5.5 + 6 + 11.5 working hours)."""
    before = _one(reports.on_time(session, START, END, "agency", now=NOW), agency_code=XA)
    assert (before["avg_days"], before["p90_days"]) == (2.02, 4.0)
    services.add_calendar_override(session, datetime(2026, 3, 3).date(), "day_off", "Nghỉ đột xuất", "admin", NOW)
    after = _one(reports.on_time(session, START, END, "agency", now=NOW), agency_code=XA)
    assert (after["avg_days"], after["p90_days"]) == (round(70 / 6 / 8, 2), 3.0)
    assert (after["early"], after["on_time"], after["late"]) == (3, 1, 2)  # judgements stay as made


# --------------------------------------------------------------------------- stored facts


def _random_history(session: Session, seed: int, dossiers: int = 14) -> None:
    """Dossiers received at random instants of 23/2–13/3/2026, handled at random speeds:
    some paused for a supplement, some returned for rework, some left open."""
    import random

    rng = random.Random(seed)
    calendar = services.load_calendar(session)

    def later(at: datetime, most_hours: float) -> datetime:
        return calendar.add_working_time(at, timedelta(minutes=rng.randrange(5, int(most_hours * 60))))

    for n in range(dossiers):
        received = calendar.next_working_instant(vn(2026, 2, 23, 7, 30) + timedelta(minutes=rng.randrange(0, 18 * 24 * 60)))
        code = _dossier(session, f"R{n}", received, channel=rng.choice(("online", "in_person")))
        at = later(received, 6)
        _step(session, code, "tiep_nhan", "lan.desk", at, at := later(at, 10))
        if rng.random() < 0.15:
            continue  # handling never claimed
        claimed = later(at, 8)
        task_id = _step(session, code, "xu_ly", "hung.xa", claimed, None)
        at = later(claimed, 4)
        fate = rng.random()
        if fate < 0.2:
            lifecycle.request_supplement(session, code, ["Bản sao giấy tờ"], "hung.xa", at)
            at = later(at, 12)
            lifecycle.resume(session, code, "lan.desk", at)
            at = later(at, 4)
        elif fate < 0.35:
            lifecycle.return_to_previous(session, task_id, "Thiếu giấy tờ", "hung.xa", at)
            services.complete_task(session, _tasks(session, code)["tiep_nhan"], {}, actor="lan.desk", now=(at := later(at, 3)))
            _step(session, code, "xu_ly", "hung.xa", (at := later(at, 3)), None)
        if rng.random() < 0.85:
            services.complete_task(session, _tasks(session, code)["xu_ly"], {}, actor="hung.xa", now=later(at, 30))


def _every_figure(session: Session, start: datetime, end: datetime, now: datetime, scope: Any) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for group_by, level in (("agency", "dossier"), ("agency", "step"), ("procedure", "dossier"), ("procedure", "step"),
                            ("officer", "step"), ("step", "step")):
        figures[f"on_time/{group_by}/{level}"] = reports.on_time(session, start, end, group_by, now=now, level=level, agencies=scope)
    for rank_by in ("late_share", "working"):
        figures[f"bottlenecks/{rank_by}"] = reports.bottlenecks(session, CODE, start, end, now=now, agencies=scope, rank_by=rank_by)
    for metric in ("finished", "late", "early", "in_progress", "overdue", "cancelled", "received", "carried_over"):
        figures[f"drill/{metric}"] = reports.drill_down(session, start, end, "step", CODE, metric, now=now, step="xu_ly", agencies=scope)
        if metric in reports.BOTTLENECK_METRICS:
            figures[f"bottleneck_drill/{metric}"] = reports.bottleneck_drill_down(session, CODE, start, end, metric, now=now, agencies=scope)
    figures["satisfaction"] = reports.satisfaction(session, start, end, now=now, agencies=scope)
    return figures


@pytest.mark.parametrize("seed", [7, 2026])
def test_stored_facts_give_the_row_level_figures(session: Session, db_engine: Engine, seed: int) -> None:
    """On a random history, every report read from the stored facts equals the same report
    computed row by row from the live tables, for whole and cut periods and for scopes."""
    _load_org(session)
    services.deploy(session, {"simple.bpmn": SIMPLE}, actor="designer", now=vn(2026, 2, 2, 8))
    _random_history(session, seed)
    periods = [
        (vn(2026, 3, 1), vn(2026, 4, 1), vn(2026, 4, 20, 9)),  # the whole month, seen later
        (vn(2026, 2, 24, 13, 17), vn(2026, 3, 9, 10, 41), vn(2026, 3, 9, 10, 41)),  # cut mid-day, seen at its end
        (vn(2026, 3, 2), vn(2026, 3, 6), vn(2026, 3, 20, 9)),
        (vn(2026, 1, 1), vn(2026, 12, 31), vn(2026, 3, 10, 15)),  # not over yet
    ]
    with Session(db_engine) as live:
        live.info[reports.ROW_LEVEL] = True
        for start, end, now in periods:
            for scope in (None, reports.scope_of(session, XA, None), frozenset()):
                stored = _every_figure(session, start, end, now, scope)
                assert stored == _every_figure(live, start, end, now, scope), (start, end, scope)
        for code in ("Q1-2026", "2026"):
            assert reports.periodic_report(session, PROVINCE, code, now=NOW) == reports.periodic_report(live, PROVINCE, code, now=NOW)
    # Not vacuous: the history has finished, late, returned and open steps.
    handle = _one(reports.on_time(session, *periods[0][:2], "step", now=periods[0][2]), step_id="xu_ly")
    assert handle["finished"] > 3 and handle["cancelled"] + handle["in_time"] + handle["overdue"] >= 1


def test_stored_step_seconds_and_p90_are_exact(session: Session, history: History) -> None:
    """The stored working seconds of a step equal the calendar's working time (less pauses),
    and the 90th percentile is the nearest-rank one of those seconds."""
    import math

    calendar = services.load_calendar(session)
    row = _one(reports.on_time(session, START, END, "step", now=NOW), step_id="xu_ly")
    steps = reports.REPORT_STEPS
    stored = session.execute(
        select(steps.c.task_id, steps.c.duration, steps.c.waiting, steps.c.working, steps.c.category).where(steps.c.step_id == "xu_ly")
    ).all()
    tasks = {t.id: t for t in session.scalars(select(Task).where(Task.step_id == "xu_ly"))}
    paused = session.scalar(select(Dossier.id).where(Dossier.code == history.codes["E"]))
    durations = []
    for task_id, duration, waiting, working, category in stored:
        task = tasks[task_id]
        if category == "cancelled":
            assert (duration, waiting, working) == (None, None, None)
            continue
        expected = calendar.working_time_between(task.started_at, task.completed_at).total_seconds()
        if task.dossier_id == paused:  # E: 9.5 working hours paused
            expected -= 9.5 * 3600
        assert duration == expected and waiting + working == duration, task_id
        durations.append(duration)
    assert len(durations) == row["finished"] == 6
    p90 = sorted(durations)[math.ceil(0.9 * len(durations)) - 1]
    assert row["p90_days"] == round(p90 / calendar.standard_day.total_seconds(), 2)
    assert row["avg_days"] == round(sum(durations) / len(durations) / calendar.standard_day.total_seconds(), 2)


def test_refresh_adds_new_steps_and_reports_follow(session: Session, db_engine: Engine, history: History) -> None:
    """Steps finished after a report are stored by the next refresh (the worker's or a
    report's), once; the figures then count them."""
    before = _one(reports.on_time(session, START, END, "step", now=NOW), step_id="xu_ly")
    reception_before = _one(reports.on_time(session, START, END, "step", now=NOW), step_id="tiep_nhan")
    assert reports.refresh_times(db_engine, services.load_calendar(session)) == {"steps": 0, "dossiers": 0, "returns": 0}
    d = history.codes["D"]
    services.complete_task(session, _tasks(session, d)["xu_ly"], {}, actor="hung.xa", now=vn(2026, 3, 9, 9))
    code = _dossier(session, "H", vn(2026, 3, 9, 8))
    _step(session, code, "tiep_nhan", "lan.desk", vn(2026, 3, 9, 8, 30), vn(2026, 3, 9, 9, 30))
    # The worker's job stores the two new steps and the finished dossier D.
    sessions = lambda: Session(db_engine)  # noqa: E731
    assert scheduler.run_report_refresh(sessions) == {"steps": 2, "dossiers": 1, "returns": 0}
    assert reports.refresh_times(db_engine, services.load_calendar(session)) == {"steps": 0, "dossiers": 0, "returns": 0}
    after = _one(reports.on_time(session, START, END, "step", now=NOW), step_id="xu_ly")
    assert (before["finished"], before["overdue"]) == (6, 1)
    # D's step (due Wed 4/3 13:30) finished late; H's, open since Mon 9/3 09:30 (due Wed 11/3), is overdue on 16/3.
    assert (after["finished"], after["late"], after["overdue"]) == (7, 3, 1)
    reception = _one(reports.on_time(session, START, END, "step", now=NOW), step_id="tiep_nhan")
    assert (reception["received"], reception["finished"]) == (reception_before["received"] + 1, reception_before["finished"] + 1)
    with Session(db_engine) as live:
        live.info[reports.ROW_LEVEL] = True
        assert reports.on_time(live, START, END, "step", now=NOW) == reports.on_time(session, START, END, "step", now=NOW)
    jobs = {job.id for job in scheduler.build_scheduler(sessions, settings=config.Settings()).get_jobs()}
    assert "report-refresh" in jobs
