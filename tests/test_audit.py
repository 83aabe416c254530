"""The audit trail is append-only and tells who did what to a dossier, and when."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from engine import lifecycle, services
from engine.core.calendar import VN_TZ
from engine.persistence.models import AuditEvent

from .conftest import load_demo_province

ROOT = Path(__file__).resolve().parents[1]
AT = datetime(2026, 3, 2, 8, 0, tzinfo=VN_TZ)


def _dossier(session: Session) -> str:
    load_demo_province(session, AT)
    content = (ROOT / "processes" / "chung-thuc-ban-sao.bpmn").read_bytes()
    services.deploy(session, {"chung-thuc-ban-sao.bpmn": content}, "thietke.tinh", AT)
    record = services.start_dossier(session, "2.000815", {}, "motcua.phuocan", AT, agency_code="000.17.22.H19",
                                    applicant={"name": "Lò Văn Páo", "phone": "0977000111"})
    return record.code


@pytest.mark.parametrize("statement", ["update", "delete", "raw"])
def test_audit_rows_cannot_be_changed_or_deleted(session: Session, statement: str) -> None:
    code = _dossier(session)
    before = session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)).all()
    assert before
    with pytest.raises(DBAPIError, match="append-only"):
        if statement == "update":
            session.execute(update(AuditEvent).values(actor="ai-do-khac"))
        elif statement == "delete":
            session.execute(delete(AuditEvent).where(AuditEvent.subject == code))
        else:
            session.execute(text("UPDATE audit_events SET at = at"))
        session.flush()
    session.rollback()
    assert session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)).all() == before
    # Appending still works.
    lifecycle.withdraw(session, code, "Công dân rút hồ sơ", "motcua.phuocan", AT + timedelta(hours=1))
    assert len(session.scalars(select(AuditEvent.id)).all()) > len(before)


def test_history_reconstructs_who_did_what_and_when(session: Session) -> None:
    code = _dossier(session)
    desk = services.open_tasks(session, code)[0]
    services.complete_task(session, desk.id, {"so_ban_sao": 2, "so_trang": 4}, "motcua.phuocan", AT + timedelta(minutes=15))
    check = services.open_tasks(session, code)[0]
    lifecycle.claim(session, check.id, "chuyenvien.phuocan", AT + timedelta(minutes=30))
    lifecycle.return_to_previous(session, check.id, "Thiếu trang 3 của bản sao", "chuyenvien.phuocan", AT + timedelta(minutes=45))
    history = services.dossier_history(session, code)
    trail = [(e.actor, e.action, e.at.astimezone(VN_TZ)) for e in history]
    assert trail[0] == ("motcua.phuocan", "dossier.receive", AT)
    assert ("motcua.phuocan", "task.complete", AT + timedelta(minutes=15)) in trail
    assert ("chuyenvien.phuocan", "task.claim", AT + timedelta(minutes=30)) in trail
    returned = [e for e in history if e.actor == "chuyenvien.phuocan" and e.at.astimezone(VN_TZ) == AT + timedelta(minutes=45)]
    assert returned and any("Thiếu trang 3" in str(e.details) for e in returned)
    assert [e.at for e in history] == sorted(e.at for e in history)  # in the order it happened
