"""Result documents (văn bản kết quả): the signed PDF a step produces.

An officer holding an open step attaches its result document
(:func:`attach_result`); the PDF is stored as uploaded with the verdict on its
digital signature (:mod:`engine.signatures`). A step whose diagram element has
the extension property ``signed_result`` = ``true`` cannot be completed until
one of its result documents carries a signature that checks at that moment
(:func:`check_before_completion`, called by ``services.complete_task``).

The trusted certificates come from ``MOTCUA_TRUSTED_CA_FILE``
(:func:`trust_store`); callers may pass their own :class:`TrustStore`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from lxml import etree
from sqlalchemy import select
from sqlalchemy.orm import Session, undefer

from . import config, organisation
from .core import bpmn
from .core.calendar import VN_TZ
from .errors import Conflict, Forbidden, InvalidRequest, NotFound
from .persistence.db import unit_of_work
from .persistence.models import (
    AuditEvent,
    Dossier,
    ProcedureFile,
    ProcedureVersion,
    ResultDocument,
    Task,
    TaskState,
)
from .signatures import MAX_PDF_BYTES, Reason, TrustStore, Verification, is_pdf, verify_pdf

__all__ = [
    "DocumentRejected",
    "SIGNED_RESULT_PROPERTY",
    "attach_result",
    "check_before_completion",
    "latest_result",
    "list_results",
    "requires_signed_result",
    "result_out",
    "trust_store",
]

log = logging.getLogger(__name__)

#: The extension property of a user task that makes its signed result document mandatory.
SIGNED_RESULT_PROPERTY = "signed_result"
_TRUE = {"true", "1", "yes", "có", "co"}


class DocumentRejected(InvalidRequest):
    """An upload that is no usable PDF; ``kind`` is ``empty``, ``too_large``, ``not_pdf`` or ``malformed``."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message, kind=kind)
        self.kind = kind


def trust_store(settings: config.Settings | None = None) -> TrustStore:
    """The trusted certificates named by ``MOTCUA_TRUSTED_CA_FILE`` (empty store when unset or unreadable)."""
    path = (settings or config.load()).trusted_ca_file
    if not path:
        return TrustStore()
    try:
        return TrustStore.from_file(path)
    except ValueError as err:
        log.error("trusted CA bundle cannot be used, no signature will be trusted: %s", err)
        return TrustStore()


def _is_true(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.strip().casefold() in _TRUE


# Per deployed content (a version's content hash): the steps whose diagram asks for a signed result.
_FROM_FILES: OrderedDict[str, frozenset[str]] = OrderedDict()
_FROM_FILES_LOCK = threading.Lock()
_FROM_FILES_MAX = 256


def _signed_steps_in_files(session: Session, dossier_id: int) -> frozenset[str]:
    """Steps marked ``signed_result`` in the BPMN files of the dossier's version (for metadata
    that lack the key), parsed once per deployed content."""
    row = session.execute(
        select(ProcedureVersion.id, ProcedureVersion.content_hash)
        .join(Dossier, Dossier.procedure_version_id == ProcedureVersion.id)
        .where(Dossier.id == dossier_id)
    ).first()
    if row is None:
        return frozenset()
    version_id, content_hash = row
    with _FROM_FILES_LOCK:
        if content_hash in _FROM_FILES:
            return _FROM_FILES[content_hash]
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    steps: set[str] = set()
    for content in session.scalars(select(ProcedureFile.content).where(ProcedureFile.version_id == version_id)):
        try:
            root = etree.fromstring(content, parser)
        except etree.XMLSyntaxError:  # validated at deploy; a damaged copy marks nothing
            continue
        for element in root.iter(*bpmn.HUMAN_TASKS):
            if _is_true(bpmn.extension_properties(element).get(SIGNED_RESULT_PROPERTY)):
                steps.add(element.get("id"))
    found = frozenset(steps)
    with _FROM_FILES_LOCK:
        _FROM_FILES[content_hash] = found
        while len(_FROM_FILES) > _FROM_FILES_MAX:
            _FROM_FILES.popitem(last=False)
    return found


def requires_signed_result(session: Session, meta: Mapping[str, Any], step_id: str, dossier_id: int) -> bool:
    """True when step ``step_id`` must have a validly signed result document.

    Read from the version's metadata (``meta["steps"][step_id]["signed_result"]``)
    when the metadata carry the key, else from the deployed BPMN files.
    """
    step = (meta.get("steps") or {}).get(step_id) or {}
    if SIGNED_RESULT_PROPERTY in step:
        return _is_true(step[SIGNED_RESULT_PROPERTY])
    return step_id in _signed_steps_in_files(session, dossier_id)


def _clean_filename(name: str | None) -> str:
    """A display name for the upload: its base name, printable, at most 255 characters."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = "".join(c for c in unicodedata.normalize("NFC", base) if c.isprintable()).strip()
    return base[:255] or "ket-qua.pdf"


def _verified(content: bytes, trust: TrustStore | None, now: datetime) -> Verification:
    return verify_pdf(content, trust if trust is not None else trust_store(), now)


@unit_of_work
def attach_result(
    session: Session,
    task_id: int,
    filename: str | None,
    content: bytes,
    actor: str,
    now: datetime,
    trust: TrustStore | None = None,
) -> ResultDocument:
    """Store ``content`` (a PDF) as the result document of open step ``task_id``, with its
    signature verdict; commits. Only the officer holding the step (its assignee, or
    anyone with its role at its agency while nobody claimed it) may attach.

    Raises :class:`DocumentRejected` for an empty, oversized, non-PDF or unreadable
    file; :class:`~engine.errors.NotFound`, :class:`~engine.errors.Conflict` (step
    not open) and :class:`~engine.errors.Forbidden` as usual. A PDF whose signature
    does not check is stored (the answer says why); only completion needs it valid.
    """
    if not isinstance(task_id, int) or not 0 < task_id < 2**31 or (task := session.get(Task, task_id, populate_existing=True)) is None:
        raise NotFound(f"Không có bước xử lý số {task_id}.")
    if task.state not in TaskState.OPEN:
        raise Conflict(f"Bước '{task.step_name}' không còn mở (đã {task.state}); không đính kèm kết quả được.")
    if task.assignee and task.assignee != actor:
        raise Forbidden(f"Bước '{task.step_name}' đang do {task.assignee} xử lý; chỉ người đang giữ bước mới đính kèm kết quả.")
    if not task.assignee and task.agency_id is not None and not organisation.holds_role(session, actor, task.role or "", task.agency_id):
        raise Forbidden(f"{actor} không giữ vai trò '{task.role}' tại cơ quan xử lý bước '{task.step_name}'.")
    if not isinstance(content, (bytes, bytearray)) or not content:
        raise DocumentRejected("Chưa có tệp: gửi văn bản kết quả (PDF) trong trường 'file' (multipart/form-data).", "empty")
    if len(content) > MAX_PDF_BYTES:
        raise DocumentRejected(Reason.TOO_LARGE.format(limit=MAX_PDF_BYTES // (1024 * 1024)), "too_large")
    if not is_pdf(content):
        raise DocumentRejected(Reason.NOT_PDF + " Văn bản kết quả phải là tệp PDF.", "not_pdf")
    verification = _verified(bytes(content), trust, now)
    if verification.reasons == (Reason.MALFORMED,):
        raise DocumentRejected(Reason.MALFORMED, "malformed")
    document = ResultDocument(
        dossier_id=task.dossier_id,
        task_id=task.id,
        step_id=task.step_id,
        filename=_clean_filename(filename),
        size=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        content=bytes(content),
        uploaded_by=actor,
        uploaded_at=now,
        signature_valid=verification.valid,
        signer=verification.signer[:500] if verification.signer else None,
        signed_at=verification.signed_at,
        reasons=list(verification.reasons),
        verified_at=now,
    )
    session.add(document)
    session.flush()
    session.add(AuditEvent(
        at=now, actor=actor, action="task.result", dossier_id=task.dossier_id, task_id=task.id, subject=task.step_id,
        to_state="signed" if verification.valid else "not_signed",
        details={"document_id": document.id, "filename": document.filename, "sha256": document.sha256,
                 "signer": document.signer, "reasons": list(verification.reasons)},
    ))
    session.commit()
    return document


def result_out(document: ResultDocument, step_name: str | None = None) -> dict[str, Any]:
    """A result document as the API shows it (without its content)."""
    return {
        "id": document.id,
        "task_id": document.task_id,
        "step_id": document.step_id,
        "step_name": step_name,
        "filename": document.filename,
        "size": document.size,
        "sha256": document.sha256,
        "uploaded_by": document.uploaded_by,
        "uploaded_at": document.uploaded_at,
        "verification": {
            "valid": document.signature_valid,
            "signer": document.signer,
            "signed_at": document.signed_at,
            "reasons": list(document.reasons or []),
            "verified_at": document.verified_at,
        },
    }


def list_results(session: Session, code: str) -> list[dict[str, Any]]:
    """The result documents of dossier ``code``, oldest first, with their verification."""
    from .services import get_dossier

    dossier = get_dossier(session, code)
    rows = session.execute(
        select(ResultDocument, Task.step_name)
        .join(Task, Task.id == ResultDocument.task_id)
        .where(ResultDocument.dossier_id == dossier.id)
        .order_by(ResultDocument.id)
    ).all()
    return [result_out(document, step_name) for document, step_name in rows]


def latest_result(session: Session, dossier_id: int) -> ResultDocument | None:
    """The result document handed out: the newest validly signed one, else the newest, if any."""
    return session.scalar(
        select(ResultDocument).where(ResultDocument.dossier_id == dossier_id)
        .order_by(ResultDocument.signature_valid.desc(), ResultDocument.id.desc()).limit(1)
    )


def check_before_completion(
    session: Session,
    meta: Mapping[str, Any],
    task_row: Any,
    now: datetime | None = None,
    trust: TrustStore | None = None,
) -> None:
    """Refuse to complete a step that needs a signed result and has none that checks now.

    ``task_row`` is the step's row (``id``, ``dossier_id``, ``step_id``, ``step_name``).
    Its result documents are verified again, newest first, against the trusted
    certificates as configured at this moment. Raises
    :class:`~engine.errors.InvalidRequest` (Vietnamese message, ``reasons`` in
    its details) when none passes; does nothing for steps without the requirement.
    """
    if not requires_signed_result(session, meta, task_row.step_id, task_row.dossier_id):
        return
    at = now or datetime.now(VN_TZ)
    documents = session.scalars(
        select(ResultDocument).options(undefer(ResultDocument.content))
        .where(ResultDocument.task_id == task_row.id).order_by(ResultDocument.id.desc())
    ).all()
    if not documents:
        raise InvalidRequest(
            f"Bước '{task_row.step_name}' yêu cầu văn bản kết quả có chữ ký số hợp lệ; "
            "hãy tải lên văn bản kết quả đã ký số (PDF) trước khi hoàn thành.",
            reasons=[Reason.UNSIGNED],
        )
    store = trust if trust is not None else trust_store()
    newest: Verification | None = None
    for document in documents:
        verdict = verify_pdf(document.content, store, at)
        if verdict.valid:
            return
        newest = newest or verdict
    assert newest is not None
    raise InvalidRequest(
        f"Văn bản kết quả của bước '{task_row.step_name}' chưa có chữ ký số hợp lệ: " + " ".join(newest.reasons),
        reasons=list(newest.reasons),
    )
