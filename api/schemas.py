"""Request and response schemas (marshmallow): they validate requests and
generate the OpenAPI document, so the two cannot drift."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from marshmallow import Schema, fields, validate

from engine.lifecycle import RETURN_CHANNELS
from engine.services import CHANNELS


class ProblemSchema(Schema):
    type = fields.String()
    title = fields.String()
    status = fields.Integer()
    detail = fields.String()


class LoginIn(Schema):
    username = fields.String(required=True, validate=validate.Length(min=1, max=100))
    password = fields.String(required=True, validate=validate.Length(min=1, max=200), load_only=True)


class TokenOut(Schema):
    token = fields.String(required=True)
    expires_at = fields.AwareDateTime(required=True)
    username = fields.String(required=True)
    full_name = fields.String(required=True)
    roles = fields.List(fields.Dict(), required=True)


class MeOut(Schema):
    username = fields.String(required=True)
    full_name = fields.String(required=True)
    roles = fields.List(fields.Dict(), required=True)


class PageArgs(Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100_000))
    page_size = fields.Integer(load_default=20, validate=validate.Range(min=1, max=200))


class StepOut(Schema):
    step_id = fields.String()
    name = fields.String()
    process_id = fields.String()
    lane_name = fields.String(allow_none=True)
    role = fields.String(allow_none=True)
    agency = fields.String(allow_none=True)
    allotment = fields.String(allow_none=True)


class ProcedureOut(Schema):
    code = fields.String(required=True)
    name = fields.String(required=True)
    field = fields.String(allow_none=True)
    level = fields.String(allow_none=True)
    latest_version = fields.Integer(required=True)


class VersionOut(Schema):
    code = fields.String(required=True)
    version = fields.Integer(required=True)
    deployed_at = fields.AwareDateTime(required=True)
    deployed_by = fields.String(required=True)
    deadline = fields.String(allow_none=True)
    files = fields.List(fields.String())
    steps = fields.List(fields.Nested(StepOut))


class DeployOut(Schema):
    code = fields.String(required=True)
    name = fields.String(required=True)
    version = fields.Integer(required=True)
    created = fields.Boolean(required=True)
    warnings = fields.List(fields.Dict())


class ApplicantIn(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    phone = fields.String(load_default=None, allow_none=True, validate=validate.Regexp(r"^\+?[0-9 .-]{6,20}$"))
    email = fields.Email(load_default=None, allow_none=True)


class ReceiveIn(Schema):
    procedure_code = fields.String(required=True, validate=validate.Length(min=1, max=64))
    agency_code = fields.String(required=True, validate=validate.Length(min=1, max=64))
    home_agency_code = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=64))
    channel = fields.String(load_default="in_person", validate=validate.OneOf(CHANNELS))
    applicant = fields.Nested(ApplicantIn, required=True)
    data = fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=100)), load_default=dict)


class TaskOut(Schema):
    id = fields.Integer(required=True)
    dossier_id = fields.Integer(required=True)
    step_id = fields.String(required=True)
    step_name = fields.String(required=True)
    lane = fields.String(allow_none=True)
    role = fields.String(allow_none=True)
    agency = fields.String(allow_none=True)
    state = fields.String(required=True)
    assignee = fields.String(allow_none=True)
    started_at = fields.AwareDateTime(required=True)
    due_at = fields.AwareDateTime(allow_none=True)
    completed_at = fields.AwareDateTime(allow_none=True)
    result = fields.String(allow_none=True)


_TASK_FIELDS = tuple(TaskOut._declared_fields)


def task_out(row: Any) -> dict[str, Any]:
    """What ``TaskOut().dump(row)`` gives, without marshmallow's cost per field (inbox pages are the API's hottest read)."""
    out = {}
    for name in _TASK_FIELDS:
        value = getattr(row, name)
        out[name] = value.isoformat() if isinstance(value, datetime) else value
    return out


class DossierOut(Schema):
    code = fields.String(required=True)
    procedure_code = fields.String(required=True)
    procedure_name = fields.String(required=True)
    version = fields.Integer(required=True)
    status = fields.Integer(required=True)
    status_label = fields.String(required=True)
    sub_status = fields.String(allow_none=True)
    channel = fields.String(required=True)
    applicant_name = fields.String(allow_none=True)
    applicant_phone = fields.String(allow_none=True)
    applicant_email = fields.String(allow_none=True)
    received_at = fields.AwareDateTime(required=True)
    due_at = fields.AwareDateTime(allow_none=True)
    finished_at = fields.AwareDateTime(allow_none=True)
    returned_at = fields.AwareDateTime(allow_none=True)
    new_appointment_at = fields.AwareDateTime(allow_none=True)
    supplement_requests = fields.Integer(required=True)
    data = fields.Dict(required=True)
    open_tasks = fields.List(fields.Nested(TaskOut), required=True)


class DossierSummaryOut(Schema):
    code = fields.String(required=True)
    procedure_code = fields.String(required=True)
    status = fields.Integer(required=True)
    applicant_name = fields.String(allow_none=True)
    received_at = fields.AwareDateTime(required=True)
    due_at = fields.AwareDateTime(allow_none=True)
    overdue = fields.Boolean(required=True)


class DossierPageOut(Schema):
    items = fields.List(fields.Nested(DossierSummaryOut), required=True)
    page = fields.Integer(required=True)
    page_size = fields.Integer(required=True)
    total = fields.Integer(required=True)


class SearchArgs(PageArgs):
    code = fields.String(validate=validate.Length(max=64))
    applicant = fields.String(validate=validate.Length(min=1, max=200), metadata={"description": "Start of the applicant's name"})
    procedure = fields.String(validate=validate.Length(max=64))
    agency = fields.String(validate=validate.Length(max=64))
    status = fields.Integer(validate=validate.Range(min=1, max=10))
    received_from = fields.AwareDateTime()
    received_to = fields.AwareDateTime()
    overdue = fields.Boolean()


class EventOut(Schema):
    at = fields.AwareDateTime(required=True)
    actor = fields.String(required=True)
    action = fields.String(required=True)
    subject = fields.String(allow_none=True)
    from_state = fields.String(allow_none=True)
    to_state = fields.String(allow_none=True)
    details = fields.Dict()


class ReasonIn(Schema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=2000))


class ResetIn(Schema):
    step_id = fields.String(required=True, validate=validate.Length(min=1, max=255))
    reason = fields.String(required=True, validate=validate.Length(min=1, max=2000))


class TransferIn(Schema):
    to = fields.String(required=True, validate=validate.Length(min=1, max=100))
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2000))


class ItemsIn(Schema):
    items = fields.List(fields.String(validate=validate.Length(min=1, max=500)), required=True, validate=validate.Length(min=1, max=50))


class ApologyIn(Schema):
    new_due_at = fields.AwareDateTime(required=True)
    reason = fields.String(required=True, validate=validate.Length(min=1, max=2000))
    agency_code = fields.String(required=True, validate=validate.Length(min=1, max=64))
    approved_by = fields.String(required=True, validate=validate.Length(min=1, max=100))


class ReturnResultIn(Schema):
    channel = fields.String(required=True, validate=validate.OneOf(RETURN_CHANNELS))


class CompleteIn(Schema):
    data = fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=100)), load_default=dict)


class ReassignIn(Schema):
    to = fields.String(required=True, validate=validate.Length(min=1, max=100))


class InboxOut(Schema):
    mine = fields.List(fields.Nested(TaskOut), required=True)
    queue = fields.List(fields.Nested(TaskOut), required=True)


class AgencyOut(Schema):
    code = fields.String(required=True)
    name = fields.String(required=True)
    level = fields.String(required=True)
    kind = fields.String(required=True)
    parent = fields.String(allow_none=True)
    active = fields.Boolean(required=True)


class OverrideIn(Schema):
    day = fields.Date(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(("day_off", "working_day")))
    note = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))


class OverrideOut(Schema):
    day = fields.Date(required=True)
    kind = fields.String(required=True)
    note = fields.String(allow_none=True)


class GrantOut(Schema):
    agency = fields.String(required=True)
    role = fields.String(required=True)


class OfficerOut(Schema):
    username = fields.String(required=True)
    full_name = fields.String(required=True)
    email = fields.String(allow_none=True)
    phone = fields.String(allow_none=True)
    active = fields.Boolean(required=True)
    roles = fields.List(fields.Nested(GrantOut), required=True)


class OrganisationIn(Schema):
    agencies = fields.List(fields.Dict(), load_default=list, validate=validate.Length(max=5000))
    officers = fields.List(fields.Dict(), load_default=list, validate=validate.Length(max=20000))


class LoadOut(Schema):
    agencies = fields.Integer(required=True)
    officers = fields.Integer(required=True)
