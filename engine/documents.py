"""The legal forms of a dossier, filled from what the engine recorded."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import fees, forms, services
from .errors import Conflict, InvalidRequest
from .persistence.models import (
    Agency,
    AuditEvent,
    Handover,
    Officer,
    Procedure,
    ProcedureVersion,
    Task,
)

__all__ = ["form_context", "render"]


def _agency(session: Session, agency_id: int | None) -> Agency | None:
    return session.get(Agency, agency_id) if agency_id else None


def _name(session: Session, username: str | None) -> str:
    if not username:
        return ""
    officer = session.scalar(select(Officer).where(Officer.username == username))
    return officer.full_name if officer else username


def form_context(session: Session, code: str, form: str, public_url: str) -> forms.FormContext:
    """Everything form ``form`` ("01"–"05") shows for dossier ``code``."""
    if form not in forms.FORM_TITLES:
        raise InvalidRequest(f"Form must be one of {', '.join(forms.FORM_TITLES)}, not '{form}'.")
    dossier = services.get_dossier(session, code)
    version = session.get(ProcedureVersion, dossier.procedure_version_id)
    procedure = session.get(Procedure, version.procedure_id)
    receiving = _agency(session, dossier.receiving_agency_id)
    parent = _agency(session, receiving.parent_id) if receiving else None
    events = session.scalars(select(AuditEvent).where(AuditEvent.dossier_id == dossier.id).order_by(AuditEvent.id)).all()
    receipt = next((e for e in events if e.action in ("dossier.receive", "dossier.refuse")), None)
    context: dict[str, Any] = {
        "dossier_code": dossier.code,
        "procedure_code": procedure.code,
        "procedure_name": procedure.name,
        "applicant_name": dossier.applicant_name or "—",
        "applicant_phone": dossier.applicant_phone,
        "applicant_email": dossier.applicant_email,
        "receiving_agency": receiving.name if receiving else dossier.agency_code,
        "parent_agency": parent.name.upper() if parent else None,
        "received_at": dossier.received_at,
        "due_at": dossier.due_at,
        "receiver": _name(session, receipt.actor if receipt else None),
        "lookup_url": f"{public_url.rstrip('/')}/tra-cuu?ma={dossier.code}",
        "fees": fees.form_fee_lines(session, dossier.id),
        "documents": tuple((str(d.get("name")), int(d.get("copies", 1))) for d in dossier.data.get("documents", []) if isinstance(d, dict)),
    }
    if form == "02":
        pause = next((e for e in reversed(events) if e.action == "dossier.pause" and e.details.get("reason") == "supplement"), None)
        if pause is None:
            raise Conflict(f"No supplement was requested for dossier {code}.")
        context.update(reasons=tuple(pause.details.get("items", [])), issued_at=pause.at, signer=_name(session, pause.actor))
    elif form == "03":
        reasons = dossier.data.get("refusal_reasons")
        if not reasons:
            raise Conflict(f"Dossier {code} was not refused.")
        context.update(reasons=tuple(reasons))
    elif form == "04":
        apology = next((e for e in events if e.action == "dossier.apology"), None)
        if apology is None:
            raise Conflict(f"No apology was issued for dossier {code}.")
        late = session.scalar(select(Agency).where(Agency.code == apology.details.get("agency")))
        late_parent = _agency(session, late.parent_id) if late else None
        context.update(
            late_agency=late.name if late else apology.details.get("agency"),
            parent_agency=late_parent.name.upper() if late_parent else context["parent_agency"],
            late_reason=apology.details.get("reason"),
            due_at=datetime.fromisoformat(apology.from_state) if apology.from_state else dossier.due_at,
            new_due_at=dossier.due_at,
            signer=_name(session, apology.details.get("approved_by")),
            signer_title="THỦ TRƯỞNG CƠ QUAN",
            issued_at=apology.at,
        )
    elif form == "05":
        context["slip"] = tuple(_slip(session, dossier.id))
    return forms.FormContext(**context)


#: Audit actions that move a dossier between people without a hand-over between
#: agencies, and the note the control slip gives them.
_SLIP_MOVES = {
    "task.return": "Trả lại bước trước",
    "dossier.recall": "Thu hồi hồ sơ đã chuyển",
    "dossier.reset": "Lãnh đạo chuyển lại bước trước",
    "task.transfer": "Chuyển xử lý cho đồng nghiệp",
    "task.reassign": "Lãnh đạo giao lại",
}


def _slip(session: Session, dossier_id: int) -> list[forms.SlipRow]:
    rows = _handover_rows(session, dossier_id) + _move_rows(session, dossier_id)
    return sorted(rows, key=lambda row: row.handed_at)


def _move_rows(session: Session, dossier_id: int) -> list[forms.SlipRow]:
    rows = []
    events = session.scalars(
        select(AuditEvent).where(AuditEvent.dossier_id == dossier_id, AuditEvent.action.in_(_SLIP_MOVES)).order_by(AuditEvent.id)
    )
    for event in events:
        details = event.details or {}
        task = session.get(Task, event.task_id) if event.task_id else None
        agency = _agency(session, task.agency_id) if task else None
        reason = str(details.get("reason") or "").strip()
        rows.append(
            forms.SlipRow(
                agency=agency.name if agency else "",
                handed_at=event.at,
                from_person=_name(session, event.actor),
                to_person=_name(session, details.get("to")),
                result="",
                note=_SLIP_MOVES[event.action] + (f": {reason}" if reason else ""),
            )
        )
    return rows


def _handover_rows(session: Session, dossier_id: int) -> list[forms.SlipRow]:
    rows = []
    for handover in session.scalars(select(Handover).where(Handover.dossier_id == dossier_id).order_by(Handover.id)):
        sent_from = session.get(Task, handover.from_task_id) if handover.from_task_id else None
        to_agency = _agency(session, handover.to_agency_id)
        rows.append(
            forms.SlipRow(
                agency=(to_agency.name if to_agency else ""),
                handed_at=handover.sent_at,
                from_person=_name(session, handover.sent_by),
                to_person=_name(session, handover.received_by),
                result=(sent_from.result or "") if sent_from else "",
                note=(sent_from.note or "") if sent_from else "",
            )
        )
    return rows


def render(session: Session, code: str, form: str, public_url: str, pdf: bool = False) -> bytes:
    """Form ``form`` of dossier ``code`` as HTML (UTF-8) or PDF bytes."""
    context = form_context(session, code, form, public_url)
    return forms.render_pdf(form, context) if pdf else forms.render_html(form, context).encode("utf-8")
