"""SQLAlchemy 2 models: the procedure catalog, dossiers, their open tasks and the audit trail.

Workflow state is one JSON text per dossier (without the spec, which is stored
once per procedure version). Everything a query filters on — open tasks by role,
agency, assignee and due date — lives in indexed columns, so inboxes and
deadline sweeps never deserialize a workflow.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from ..core.calendar import VN_TZ

__all__ = [
    "Agency",
    "ApiToken",
    "Feedback",
    "IdempotencyKey",
    "Rating",
    "AuditEvent",
    "Escalation",
    "Handover",
    "Officer",
    "OfficerRole",
    "OutboxMessage",
    "PortalDossier",
    "PortalFeedCursor",
    "Base",
    "CalendarOverride",
    "Dossier",
    "DossierCounter",
    "Procedure",
    "ProcedureFile",
    "ProcedureVersion",
    "Task",
    "TaskState",
    "UTCDateTime",
]


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes on every backend, stored in UTC, read back in
    Hà Nội time (what every page, form and API answer shows).

    SQLite has no time zones: values are stored as UTC and come back aware.
    A naive datetime is refused rather than guessed.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; pass an aware datetime")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(VN_TZ)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), date: Date()}


class Procedure(Base):
    """An administrative procedure (thủ tục hành chính), by its national code."""

    __tablename__ = "procedures"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(500))
    field: Mapped[str | None] = mapped_column(String(200))
    level: Mapped[str | None] = mapped_column(String(50))
    latest_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]

    versions: Mapped[list["ProcedureVersion"]] = relationship(
        back_populates="procedure", order_by="ProcedureVersion.version"
    )


class ProcedureVersion(Base):
    """One deployed version of a procedure: its files, metadata and parsed spec."""

    __tablename__ = "procedure_versions"
    __table_args__ = (
        UniqueConstraint("procedure_id", "version"),
        UniqueConstraint("procedure_id", "content_hash"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    procedure_id: Mapped[int] = mapped_column(ForeignKey("procedures.id"))
    version: Mapped[int]
    content_hash: Mapped[str] = mapped_column(String(64))
    process_id: Mapped[str] = mapped_column(String(255))
    meta: Mapped[dict[str, Any]]
    spec_json: Mapped[str] = mapped_column(Text, deferred=True)
    deployed_at: Mapped[datetime]
    deployed_by: Mapped[str] = mapped_column(String(200))

    procedure: Mapped[Procedure] = relationship(back_populates="versions")
    files: Mapped[list["ProcedureFile"]] = relationship(back_populates="version", order_by="ProcedureFile.id")


class ProcedureFile(Base):
    """A BPMN file of a version, kept verbatim (for download and drawing)."""

    __tablename__ = "procedure_files"

    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("procedure_versions.id"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content: Mapped[bytes] = mapped_column(LargeBinary)

    version: Mapped[ProcedureVersion] = relationship(back_populates="files")


class DossierCounter(Base):
    """Last dossier number issued by an agency on a day (gap-free codes)."""

    __tablename__ = "dossier_counters"

    agency_code: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[date] = mapped_column(primary_key=True)
    last_number: Mapped[int] = mapped_column(Integer, default=0)


class Dossier(Base):
    """A dossier (hồ sơ) running on one procedure version."""

    __tablename__ = "dossiers"
    __table_args__ = (
        Index(None, "status", "due_at"),
        Index("ix_dossiers_received_at", "received_at"),
        Index("ix_dossiers_agency_code_received_at", "agency_code", "received_at"),
        # ix_dossiers_applicant_lower on lower(applicant_name) is created by migration 0004.
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    procedure_version_id: Mapped[int] = mapped_column(ForeignKey("procedure_versions.id"), index=True)
    agency_code: Mapped[str] = mapped_column(String(64))
    #: Agency the dossier belongs to (e.g. the applicant's commune); lanes resolve from it.
    home_agency_id: Mapped[int | None] = mapped_column(ForeignKey("agencies.id"))
    #: The desk that received it (may be anywhere in the province).
    receiving_agency_id: Mapped[int | None] = mapped_column(ForeignKey("agencies.id"))
    applicant_name: Mapped[str | None] = mapped_column(String(200))
    applicant_phone: Mapped[str | None] = mapped_column(String(30))
    applicant_email: Mapped[str | None] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(20), default="in_person")  # in_person | online | post
    paused_at: Mapped[datetime | None]
    pause_reason: Mapped[str | None] = mapped_column(String(30))
    supplement_requests: Mapped[int] = mapped_column(Integer, default=0)
    new_appointment_at: Mapped[datetime | None]
    returned_at: Mapped[datetime | None]
    return_channel: Mapped[str | None] = mapped_column(String(20))
    #: National portal status (TrangThaiHoSo) 1–10.
    status: Mapped[int] = mapped_column(Integer)
    sub_status: Mapped[str | None] = mapped_column(String(50))
    data: Mapped[dict[str, Any]]
    workflow_state: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime]
    due_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]
    revision: Mapped[int] = mapped_column(Integer, default=1)

    version: Mapped[ProcedureVersion] = relationship()
    __mapper_args__ = {"version_id_col": revision}


class TaskState:
    """States of a human task row."""

    READY = "ready"
    CLAIMED = "claimed"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    OPEN = (READY, CLAIMED)


class Task(Base):
    """A human step of a dossier, as inboxes and deadline sweeps see it."""

    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_queue", "state", "role", "agency", "due_at"),
        # The inbox's order (undated last, then due, then id): its first page is one index range scan.
        Index("ix_tasks_offered", "agency_id", "role", "state", text("(due_at IS NULL)"), "due_at", "id"),
        Index("ix_tasks_mine", "assignee", "state", text("(due_at IS NULL)"), "due_at", "id"),
        Index("ix_tasks_due", "state", "due_at"),
        Index("ix_tasks_dossier", "dossier_id", "state"),
        Index("ix_tasks_escalation", "state", "escalation_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dossier_id: Mapped[int] = mapped_column(ForeignKey("dossiers.id"))
    spiff_task_id: Mapped[str] = mapped_column(String(36))
    step_id: Mapped[str] = mapped_column(String(255))
    step_name: Mapped[str] = mapped_column(String(500))
    process_id: Mapped[str] = mapped_column(String(255))
    lane: Mapped[str | None] = mapped_column(String(255))
    role: Mapped[str | None] = mapped_column(String(100))
    agency: Mapped[str | None] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(20))
    assignee: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[datetime]
    due_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    completed_by: Mapped[str | None] = mapped_column(String(200))
    #: Agency resolved from the lane at run time.
    agency_id: Mapped[int | None] = mapped_column(ForeignKey("agencies.id"), index=True)
    claimed_at: Mapped[datetime | None]
    #: The next rung of the step's escalation ladder, and when it is due (None: no more rungs).
    escalation_level: Mapped[str | None] = mapped_column(String(30))
    escalation_at: Mapped[datetime | None]
    #: Judgement against the step's own allotment: early | on_time | late.
    result: Mapped[str | None] = mapped_column(String(20))
    note: Mapped[str | None] = mapped_column(Text)

    dossier: Mapped[Dossier] = relationship()


class AuditEvent(Base):
    """Append-only record of every state change: who, what, when, from, to."""

    __tablename__ = "audit_events"
    __table_args__ = (Index(None, "dossier_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    dossier_id: Mapped[int | None] = mapped_column(ForeignKey("dossiers.id"))
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"))
    subject: Mapped[str | None] = mapped_column(String(255))
    from_state: Mapped[str | None] = mapped_column(String(100))
    to_state: Mapped[str | None] = mapped_column(String(100))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)

    dossier: Mapped[Dossier | None] = relationship()
    task: Mapped[Task | None] = relationship()


class CalendarOverride(Base):
    """An administrator's extra day off or extra working day (làm bù)."""

    __tablename__ = "calendar_overrides"

    day: Mapped[date] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # "day_off" | "working_day"
    note: Mapped[str | None] = mapped_column(String(500))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]


class Agency(Base):
    """An agency in the province's tree (province → department/district → commune …).

    ``kind`` names what the agency is (``ubnd``, ``vpdk`` land registration,
    ``thue`` tax, ``cong_an`` police, ``bhxh`` social insurance, ``so`` a
    department …) so that lanes can name "the tax office serving this dossier".
    """

    __tablename__ = "agencies"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(300))
    level: Mapped[str] = mapped_column(String(30))  # province | department | district | commune | unit
    kind: Mapped[str] = mapped_column(String(50), default="ubnd")
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("agencies.id"), index=True)
    successor_id: Mapped[int | None] = mapped_column(ForeignKey("agencies.id"))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    email: Mapped[str | None] = mapped_column(String(200))


class Officer(Base):
    """A person who works in the system (officer, leader, supervisor …)."""

    __tablename__ = "officers"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    full_name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(30))
    password_hash: Mapped[str | None] = mapped_column(String(300))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None]


class OfficerRole(Base):
    """An officer holds a role at an agency."""

    __tablename__ = "officer_roles"
    __table_args__ = (UniqueConstraint("officer_id", "agency_id", "role"), Index("ix_officer_roles_agency_role", "agency_id", "role"))

    id: Mapped[int] = mapped_column(primary_key=True)
    officer_id: Mapped[int] = mapped_column(ForeignKey("officers.id"))
    agency_id: Mapped[int] = mapped_column(ForeignKey("agencies.id"))
    role: Mapped[str] = mapped_column(String(50))


class Handover(Base):
    """A hand-over of a dossier from one agency to another (liên thông)."""

    __tablename__ = "handovers"
    __table_args__ = (Index(None, "dossier_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dossier_id: Mapped[int] = mapped_column(ForeignKey("dossiers.id"))
    from_agency_id: Mapped[int | None] = mapped_column(ForeignKey("agencies.id"))
    to_agency_id: Mapped[int | None] = mapped_column(ForeignKey("agencies.id"))
    from_task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"))
    to_task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"))
    sent_by: Mapped[str] = mapped_column(String(200))
    sent_at: Mapped[datetime]
    received_by: Mapped[str | None] = mapped_column(String(200))
    received_at: Mapped[datetime | None]


class Escalation(Base):
    """A rung of a step's escalation ladder that has fired (the pending rung lives on the task row)."""

    __tablename__ = "escalations"
    __table_args__ = (UniqueConstraint("task_id", "level"), Index("ix_escalations_pending", "state", "due_at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    dossier_id: Mapped[int] = mapped_column(ForeignKey("dossiers.id"))
    level: Mapped[str] = mapped_column(String(30))  # warning | head_of_unit | leader | supervisor
    due_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(20), default="pending")  # pending | fired | cancelled
    fired_at: Mapped[datetime | None]


class OutboxMessage(Base):
    """A notification written in the transaction of the change that causes it."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime]
    channel: Mapped[str] = mapped_column(String(20))  # email | sms | zalo | log
    recipient: Mapped[str] = mapped_column(String(300))
    subject: Mapped[str] = mapped_column(String(500))
    body: Mapped[str] = mapped_column(Text)
    event: Mapped[str] = mapped_column(String(100))
    dossier_id: Mapped[int | None] = mapped_column(ForeignKey("dossiers.id"))
    state: Mapped[str] = mapped_column(String(20), default="pending")  # pending | sending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None]


class ApiToken(Base):
    """A bearer token of an officer: only its hash is stored; it expires and can be revoked."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    officer_id: Mapped[int] = mapped_column(ForeignKey("officers.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class IdempotencyKey(Base):
    """A retried write (e.g. receiving a dossier) answers with its first result."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("actor", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    actor: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    response_status: Mapped[int]
    response_body: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class Rating(Base):
    """The applicant's rating of a returned dossier (Decision 766 criteria), once."""

    __tablename__ = "ratings"

    id: Mapped[int] = mapped_column(primary_key=True)
    dossier_id: Mapped[int] = mapped_column(ForeignKey("dossiers.id"), unique=True)
    scores: Mapped[dict[str, Any]]
    satisfied: Mapped[bool] = mapped_column(Boolean)
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]


class Feedback(Base):
    """Phản ánh, kiến nghị: feedback from the public, about a dossier or not."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(primary_key=True)
    dossier_id: Mapped[int | None] = mapped_column(ForeignKey("dossiers.id"), index=True)
    agency_id: Mapped[int | None] = mapped_column(ForeignKey("agencies.id"), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    contact: Mapped[str | None] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(String(300))
    content: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(20), default="new")
    created_at: Mapped[datetime]


class PortalDossier(Base):
    """A dossier filed on the national public service portal (Cổng Dịch vụ công quốc gia).

    Maps the portal's ``MaHoSo`` to the local dossier. The row is reserved
    (``state = 'receiving'``) before the dossier starts and completed
    (``'received'``) right after, so a retried filing finds it.
    """

    __tablename__ = "portal_dossiers"

    id: Mapped[int] = mapped_column(primary_key=True)
    ma_ho_so: Mapped[str] = mapped_column(String(64), unique=True)
    dossier_id: Mapped[int | None] = mapped_column(ForeignKey("dossiers.id"), unique=True)
    dossier_code: Mapped[str | None] = mapped_column(String(64))
    procedure_code: Mapped[str] = mapped_column(String(64))
    agency_code: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(20), default="receiving")  # receiving | received
    request_hash: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    received_at: Mapped[datetime | None]


class PortalFeedCursor(Base):
    """How far the portal feeder has read the audit trail (one row per feed).

    ``waiting_*`` describe a hole in the audit ids seen on PostgreSQL (an id
    taken by a transaction not yet committed, or rolled back): the feeder
    waits until every transaction running when it saw the hole has ended.
    """

    __tablename__ = "portal_feed_cursor"

    name: Mapped[str] = mapped_column(String(30), primary_key=True)
    last_event_id: Mapped[int] = mapped_column(Integer, default=0)
    waiting_below: Mapped[int | None] = mapped_column(Integer)
    waiting_horizon: Mapped[int | None] = mapped_column(BigInteger)
    waiting_since: Mapped[datetime | None]
    updated_at: Mapped[datetime]


#: Portal messages are delivered in order per dossier: the claim looks for earlier ones.
Index("ix_outbox_channel_dossier", OutboxMessage.channel, OutboxMessage.dossier_id, OutboxMessage.id)


class DossierFee(Base):
    """A fee (phí, lệ phí) a dossier owes, copied from its procedure's declaration at receipt.

    ``state``: ``due`` (to be paid), ``paid``, or ``free`` (declared at 0 đồng).
    """

    __tablename__ = "dossier_fees"
    __table_args__ = (UniqueConstraint("dossier_id", "code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dossier_id: Mapped[int] = mapped_column(ForeignKey("dossiers.id"))
    code: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(300))
    #: In đồng.
    amount: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(20), default="due")
    created_at: Mapped[datetime]
    paid_at: Mapped[datetime | None]


class FeePayment(Base):
    """A payment of one fee of a dossier, with its receipt number (số biên lai).

    One payment per fee; a receipt number is used once per agency; a payment
    gateway's transaction id once overall (its callbacks are idempotent on it).
    """

    __tablename__ = "fee_payments"
    __table_args__ = (UniqueConstraint("agency_code", "receipt_number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dossier_id: Mapped[int] = mapped_column(ForeignKey("dossiers.id"), index=True)
    fee_id: Mapped[int] = mapped_column(ForeignKey("dossier_fees.id"), unique=True)
    #: In đồng.
    amount: Mapped[int] = mapped_column(BigInteger)
    method: Mapped[str] = mapped_column(String(20))  # desk | transfer | online
    #: The agency whose receipt series the number belongs to.
    agency_code: Mapped[str] = mapped_column(String(64))
    receipt_number: Mapped[str] = mapped_column(String(64))
    transaction_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    paid_at: Mapped[datetime]
    recorded_at: Mapped[datetime]
    recorded_by: Mapped[str] = mapped_column(String(200))


class ResultDocument(Base):
    """A result document (văn bản kết quả) a step produced: the PDF as uploaded and the
    verdict on its digital signature when it was checked."""

    __tablename__ = "result_documents"
    __table_args__ = (
        Index("ix_result_documents_dossier", "dossier_id", "id"),
        Index("ix_result_documents_task", "task_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dossier_id: Mapped[int] = mapped_column(ForeignKey("dossiers.id"))
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    step_id: Mapped[str] = mapped_column(String(255))
    filename: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    content: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    uploaded_by: Mapped[str] = mapped_column(String(200))
    uploaded_at: Mapped[datetime]
    #: The signature check: valid or not, who signed and when, why it was refused.
    signature_valid: Mapped[bool] = mapped_column(Boolean)
    signer: Mapped[str | None] = mapped_column(String(500))
    signed_at: Mapped[datetime | None]
    reasons: Mapped[list[str]] = mapped_column(JSON)
    verified_at: Mapped[datetime]
