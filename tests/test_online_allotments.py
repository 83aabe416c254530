"""A step may have a separate allotment for dossiers filed online; the channel decides."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from engine import services
from engine.core import bpmn
from engine.core.calendar import VN_TZ, WorkingCalendar

from .conftest import fixture_bytes

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=VN_TZ)


def _diagram(s3_online: str = "2 working days", deadline_online: str = "11 working days") -> dict[str, bytes]:
    text = fixture_bytes("six_steps.bpmn")["six_steps.bpmn"].decode()
    text = text.replace(
        '<camunda:property name="deadline" value="15 working days"/>',
        f'<camunda:property name="deadline" value="15 working days"/><camunda:property name="deadline_online" value="{deadline_online}"/>',
    )
    text = text.replace(
        '<camunda:property name="allotment" value="5 working days"/>',
        f'<camunda:property name="allotment" value="5 working days"/><camunda:property name="allotment_online" value="{s3_online}"/>',
    )
    return {"six_steps.bpmn": text.encode()}


def test_online_allotments_are_read_and_checked_against_the_online_deadline() -> None:
    definition, problems = bpmn.analyse(_diagram())
    assert [p for p in problems if p.severity == "error"] == []
    meta = definition.metadata()
    assert (meta["deadline_online_amount"], meta["deadline_online_unit"]) == ("11", "working_days")
    assert (meta["steps"]["s3"]["allotment_online_amount"], meta["steps"]["s3"]["allotment_online_unit"]) == ("2", "working_days")
    assert meta["steps"]["s2"]["allotment_online"] is None
    # Online: 0.5 + 3 + 2 (s3 online) + 3 + 2 + 0.5 = 11 working days, more than 10.
    _, too_long = bpmn.analyse(_diagram(deadline_online="10 working days"))
    assert any("online" in p.message and p.element_id == "LienThong6" for p in too_long)
    _, bad = bpmn.analyse(_diagram(s3_online="soon"))
    assert any("Online allotment of step" in p.message and p.element_id == "s3" for p in bad)


def _complete_until(session: Session, code: str, step_id: str, at: datetime) -> object:
    while True:
        task = services.open_tasks(session, code)[0]
        if task.step_id == step_id:
            return task
        services.complete_task(session, task.id, {}, "someone", at)


def test_the_channel_decides_which_allotment_and_deadline_apply(session: Session) -> None:
    services.deploy(session, _diagram(deadline_online="11 working days"), "designer", NOW)
    calendar = WorkingCalendar()
    desk = services.start_dossier(session, "1.999001", {}, "desk", NOW, channel="in_person")
    online = services.start_dossier(session, "1.999001", {}, "portal", NOW, channel="online")
    post = services.start_dossier(session, "1.999001", {}, "desk", NOW, channel="post")
    assert desk.due_at == post.due_at == calendar.add_working_days(NOW, 15)
    assert online.due_at == calendar.add_working_days(NOW, 11)
    for record, days in ((desk, 5), (online, 2), (post, 5)):
        task = _complete_until(session, record.code, "s3", NOW)
        assert task.due_at == calendar.add_working_days(NOW, days), record.channel
