"""Recall (thu hồi), transfer (chuyển xử lý) and a leader's reset to an earlier step."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from api.app import create_app
from engine import auth, documents, lifecycle, organisation, services
from engine.core.calendar import VN_TZ
from engine.errors import Conflict, Forbidden, InvalidRequest
from engine.persistence.models import AuditEvent, Task, TaskState

from .conftest import load_demo_province

ROOT = Path(__file__).resolve().parents[1]
CODE = "2.000815"
PHUOC_AN = "000.17.22.H19"
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=VN_TZ)
FORMS = {
    "tiep_nhan": {"so_ban_sao": 1, "so_trang": 2},
    "kiem_tra": {"hop_le": True},
    "ghi_loi_chung": {"so_chung_thuc": "21/2026"},
    "ky_chung_thuc": {"nguoi_ky": "Phạm Văn Sơn"},
    "tra_ket_qua": {"phi_da_thu": 2000},
}


def _setup(session: Session) -> str:
    load_demo_province(session, T0)
    organisation.load_organisation(session, {"officers": [
        {"username": "chuyenvien2.phuocan", "full_name": "Đoàn Thị Ngọc", "roles": [{"agency": PHUOC_AN, "role": "officer"}]},
    ]}, "admin", T0)
    content = (ROOT / "processes" / "chung-thuc-ban-sao.bpmn").read_bytes()
    services.deploy(session, {"chung-thuc-ban-sao.bpmn": content}, "thietke.tinh", T0)
    return services.start_dossier(session, CODE, {}, "motcua.phuocan", T0, agency_code=PHUOC_AN,
                                  applicant={"name": "Hà Văn Cường", "phone": "0913555777"}).code


def _open(session: Session, code: str) -> list:
    return list(services.open_tasks(session, code))


def _do(session: Session, code: str, actor: str, at: datetime) -> None:
    task = _open(session, code)[0]
    if not task.assignee:
        lifecycle.claim(session, task.id, actor, at)
    services.complete_task(session, task.id, FORMS[task.step_id], actor, at)


def _slip_notes(session: Session, code: str) -> list[str]:
    context = documents.form_context(session, code, "05", "http://localhost")
    return [row.note for row in context.slip]


def test_recall_before_the_next_step_is_claimed(session: Session) -> None:
    code = _setup(session)
    _do(session, code, "motcua.phuocan", T0 + timedelta(minutes=10))
    due_before = services.get_dossier(session, code).due_at
    with pytest.raises(InvalidRequest):
        lifecycle.recall(session, code, "  ", "motcua.phuocan", T0 + timedelta(minutes=20))
    with pytest.raises(Conflict, match="không chuyển hồ sơ"):
        lifecycle.recall(session, code, "Nhầm", "chuyenvien.phuocan", T0 + timedelta(minutes=20))
    lifecycle.recall(session, code, "Chuyển nhầm, thiếu bản chính", "motcua.phuocan", T0 + timedelta(minutes=20))
    [task] = _open(session, code)
    assert (task.step_id, task.state, task.assignee) == ("tiep_nhan", TaskState.CLAIMED, "motcua.phuocan")
    # A fresh allotment of one working hour from the recall; the dossier keeps its legal due date.
    assert task.due_at.astimezone(VN_TZ) == T0 + timedelta(minutes=80)
    assert services.get_dossier(session, code).due_at == due_before
    cancelled = session.scalar(select(Task).where(Task.step_id == "kiem_tra"))
    assert cancelled.state == TaskState.CANCELLED
    assert any(n.startswith("Thu hồi hồ sơ đã chuyển: Chuyển nhầm") for n in _slip_notes(session, code))
    actions = session.scalars(select(AuditEvent.action).where(AuditEvent.action == "dossier.recall")).all()
    assert actions == ["dossier.recall"]
    # Forward again; once the next officer has claimed it, a recall is refused.
    services.complete_task(session, task.id, FORMS["tiep_nhan"], "motcua.phuocan", T0 + timedelta(minutes=30))
    check = _open(session, code)[0]
    lifecycle.claim(session, check.id, "chuyenvien.phuocan", T0 + timedelta(minutes=35))
    with pytest.raises(Conflict, match="đã được chuyenvien.phuocan nhận xử lý"):
        lifecycle.recall(session, code, "Nhầm lần nữa", "motcua.phuocan", T0 + timedelta(minutes=40))


def test_transfer_a_claimed_step_to_a_colleague_of_the_same_role(session: Session) -> None:
    code = _setup(session)
    _do(session, code, "motcua.phuocan", T0 + timedelta(minutes=10))
    check = _open(session, code)[0]
    with pytest.raises(Conflict, match="nhận xử lý trước"):
        lifecycle.transfer(session, check.id, "chuyenvien2.phuocan", None, "chuyenvien.phuocan", T0 + timedelta(minutes=15))
    lifecycle.claim(session, check.id, "chuyenvien.phuocan", T0 + timedelta(minutes=20))
    with pytest.raises(Forbidden):  # the receptionist does not hold the officer role
        lifecycle.transfer(session, check.id, "motcua.phuocan", None, "chuyenvien.phuocan", T0 + timedelta(minutes=25))
    with pytest.raises(Forbidden):  # only the holder can hand it on
        lifecycle.transfer(session, check.id, "chuyenvien2.phuocan", None, "lanhdao.phuocan", T0 + timedelta(minutes=25))
    moved = lifecycle.transfer(session, check.id, "chuyenvien2.phuocan", "Nghỉ phép chiều nay", "chuyenvien.phuocan",
                               T0 + timedelta(minutes=30))
    assert moved.assignee == "chuyenvien2.phuocan"
    assert moved.due_at == check.due_at  # the step's clock runs on
    with pytest.raises(Conflict):
        services.complete_task(session, check.id, FORMS["kiem_tra"], "chuyenvien.phuocan", T0 + timedelta(minutes=40))
    services.complete_task(session, check.id, FORMS["kiem_tra"], "chuyenvien2.phuocan", T0 + timedelta(minutes=40))
    assert "Chuyển xử lý cho đồng nghiệp: Nghỉ phép chiều nay" in _slip_notes(session, code)


def test_leader_resets_to_an_earlier_step_and_the_dossier_runs_on(session: Session) -> None:
    code = _setup(session)
    at = T0
    for actor in ("motcua.phuocan", "chuyenvien.phuocan", "chuyenvien.phuocan"):
        at += timedelta(minutes=10)
        _do(session, code, actor, at)
    assert [t.step_id for t in _open(session, code)] == ["ky_chung_thuc"]
    with pytest.raises(Forbidden):
        lifecycle.reset_to_step(session, code, "kiem_tra", "Sai sót", "chuyenvien.phuocan", at)
    with pytest.raises(Conflict, match="chưa được thực hiện"):
        lifecycle.reset_to_step(session, code, "tra_ket_qua", "Sai sót", "lanhdao.phuocan", at)
    reset_at = T0 + timedelta(hours=2)
    lifecycle.reset_to_step(session, code, "kiem_tra", "Bản sao không khớp bản chính", "lanhdao.phuocan", reset_at)
    [task] = _open(session, code)
    assert (task.step_id, task.assignee) == ("kiem_tra", "chuyenvien.phuocan")
    # Its two working hours again, from the reset at 10:00: 10:00–11:30, then 13:00–13:30.
    assert task.due_at.astimezone(VN_TZ) == datetime(2026, 3, 2, 13, 30, tzinfo=VN_TZ)
    assert "Lãnh đạo chuyển lại bước trước: Bản sao không khớp bản chính" in _slip_notes(session, code)
    at = reset_at
    for actor in ("chuyenvien.phuocan", "chuyenvien.phuocan", "lanhdao.phuocan", "motcua.phuocan"):
        at += timedelta(minutes=10)
        _do(session, code, actor, at)
    assert services.get_dossier(session, code).status == services.DossierStatus.PROCESSED


def test_recall_transfer_and_reset_over_http(db_engine: Engine) -> None:
    with Session(db_engine, expire_on_commit=False) as session:
        code = _setup(session)
        for name in ("motcua.phuocan", "chuyenvien.phuocan", "chuyenvien2.phuocan", "lanhdao.phuocan"):
            auth.set_password(session, name, "mat-khau-thu")
    app = create_app(database_url=db_engine.url.render_as_string(hide_password=False))
    client = app.test_client()

    def token(name: str) -> dict[str, str]:
        reply = client.post("/api/v1/auth/login", json={"username": name, "password": "mat-khau-thu"})
        return {"Authorization": f"Bearer {reply.get_json()['token']}"}

    def take(headers: dict[str, str]) -> dict:
        """The caller's first step, claimed if it was only offered."""
        inbox = client.get("/api/v1/tasks/inbox", headers=headers).get_json()
        if inbox["mine"]:
            return inbox["mine"][0]
        task = inbox["queue"][0]
        assert client.post(f"/api/v1/tasks/{task['id']}/claim", headers=headers).status_code == 200
        return task

    desk, officer, leader = token("motcua.phuocan"), token("chuyenvien.phuocan"), token("lanhdao.phuocan")
    first = take(desk)
    assert client.post(f"/api/v1/tasks/{first['id']}/complete", json={"data": FORMS["tiep_nhan"]}, headers=desk).status_code == 200
    reply = client.post(f"/api/v1/dossiers/{code}/recall", json={"reason": "Chuyển nhầm"}, headers=desk)
    assert reply.status_code == 200, reply.get_json()
    refused = client.post(f"/api/v1/dossiers/{code}/recall", json={"reason": "Lần hai"}, headers=desk)
    assert refused.status_code == 409 and refused.content_type.startswith("application/problem+json")
    first = take(desk)
    assert client.post(f"/api/v1/tasks/{first['id']}/complete", json={"data": FORMS["tiep_nhan"]}, headers=desk).status_code == 200
    check = client.get("/api/v1/tasks/inbox", headers=officer).get_json()["queue"][0]
    assert client.post(f"/api/v1/tasks/{check['id']}/claim", headers=officer).status_code == 200
    moved = client.post(f"/api/v1/tasks/{check['id']}/transfer", json={"to": "chuyenvien2.phuocan"}, headers=officer)
    assert moved.status_code == 200 and moved.get_json()["assignee"] == "chuyenvien2.phuocan"
    not_leader = client.post(f"/api/v1/dossiers/{code}/reset", json={"step_id": "tiep_nhan", "reason": "x"}, headers=officer)
    assert not_leader.status_code == 403
    reset = client.post(f"/api/v1/dossiers/{code}/reset", json={"step_id": "tiep_nhan", "reason": "Thiếu giấy tờ"}, headers=leader)
    assert reset.status_code == 200, reset.get_json()
    assert [t["step_id"] for t in client.get("/api/v1/tasks/inbox", headers=desk).get_json()["mine"]] == ["tiep_nhan"]
