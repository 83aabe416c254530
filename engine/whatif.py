"""What-if: replay a period's real arrivals through a procedure with other allotments or staff.

A province that wants to promise a shorter deadline first asks: with the
dossiers we really received last quarter, how many would have been late? The
replay copies the organisation and the procedure's deployed files into a
scratch SQLite database, applies the changes (allotments, legal deadline,
officers per role and agency), and runs the recorded arrivals — same instants,
same desks, same channels — through the simulator twice: once unchanged (to
see how close the simulation comes to what happened) and once changed. The
live database is only read.
"""

from __future__ import annotations

import tempfile
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from statistics import mean
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from . import designer, organisation, services
from .core.calendar import VN_TZ, WorkingCalendar
from .errors import InvalidRequest
from .persistence.db import make_engine, make_session_factory, migrate
from .persistence.models import Agency, Dossier, Officer, OfficerRole, Procedure, ProcedureFile, ProcedureVersion, Task
from .simulate import Arrival, SimulationPlan, simulate

__all__ = ["Change", "Outcome", "StepOutcome", "outcome", "replay"]

#: How long after the period the replay runs on at most, so its dossiers can finish
#: (never past the time of asking: the simulation is compared with what happened by then).
RUN_ON = timedelta(days=120)
_FINISHED = (services.DossierStatus.PROCESSED, services.DossierStatus.RETURNED)


@dataclass(frozen=True)
class Change:
    """What to change: ``allotments`` step id → duration text (``"3 ngày làm việc"``),
    ``deadline`` the legal deadline text, ``staff`` (agency code, role) → how many
    officers hold that role there."""

    allotments: Mapping[str, str] = field(default_factory=dict)
    deadline: str | None = None
    staff: Mapping[tuple[str, str], int] = field(default_factory=dict)


@dataclass
class StepOutcome:
    step_id: str
    name: str
    completed: int
    late_share: float
    average_wait_hours: float  # before an officer claims it, in working hours
    average_work_hours: float  # from claim to completion, in working hours
    average_queue: float  # open steps, sampled every working day at 10:00 during the period
    max_queue: int


@dataclass
class Outcome:
    """How the dossiers received in the period fared."""

    received: int
    finished: int
    on_time: int
    late: int
    unfinished_overdue: int
    on_time_rate: float | None
    average_handling_days: float | None
    steps: list[StepOutcome]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- measuring


def outcome(session: Session, procedure_code: str, start: datetime, end: datetime, horizon: datetime) -> Outcome:
    """The figures of ``procedure_code``'s dossiers received in [start, end), seen at ``horizon``."""
    calendar = services.load_calendar(session)
    rows = session.execute(
        select(Dossier.id, Dossier.status, Dossier.received_at, Dossier.finished_at, Dossier.due_at)
        .join(ProcedureVersion, ProcedureVersion.id == Dossier.procedure_version_id)
        .join(Procedure, Procedure.id == ProcedureVersion.procedure_id)
        .where(Procedure.code == procedure_code, Dossier.received_at >= start, Dossier.received_at < end)
    ).all()
    finished = [r for r in rows if r.status in _FINISHED and r.finished_at is not None and r.finished_at <= horizon]
    on_time = sum(1 for r in finished if r.due_at is None or r.finished_at <= r.due_at)
    overdue = sum(
        1 for r in rows if r not in finished and r.status not in _ENDED and r.due_at is not None and r.due_at < horizon
    )
    handling = [calendar.working_time_between(r.received_at, r.finished_at).total_seconds() / 3600 / 8 for r in finished]
    ids = [r.id for r in rows]
    return Outcome(
        received=len(rows),
        finished=len(finished),
        on_time=on_time,
        late=len(finished) - on_time,
        unfinished_overdue=overdue,
        on_time_rate=round(on_time / len(finished), 4) if finished else None,
        average_handling_days=round(mean(handling), 2) if handling else None,
        steps=_steps(session, ids, calendar, start, end, horizon),
    )


_ENDED = (services.DossierStatus.WITHDRAWN, services.DossierStatus.STOPPED, services.DossierStatus.REFUSED)


def _steps(
    session: Session, dossier_ids: Sequence[int], calendar: WorkingCalendar, start: datetime, end: datetime, horizon: datetime
) -> list[StepOutcome]:
    tasks: list[Any] = []
    for chunk in range(0, len(dossier_ids), 500):
        tasks += session.execute(
            select(Task.step_id, Task.step_name, Task.started_at, Task.claimed_at, Task.completed_at, Task.result)
            .where(Task.dossier_id.in_(dossier_ids[chunk:chunk + 500]))
        ).all()
    by_step: dict[str, list[Any]] = defaultdict(list)
    for task in tasks:
        by_step[task.step_id].append(task)
    samples = []
    day = start.astimezone(VN_TZ).date()
    while day < end.astimezone(VN_TZ).date():
        if calendar.is_working_day(day):
            samples.append(datetime(day.year, day.month, day.day, 10, 0, tzinfo=VN_TZ))
        day += timedelta(days=1)

    def hours(a: datetime | None, b: datetime | None) -> float | None:
        return calendar.working_time_between(a, b).total_seconds() / 3600 if a and b and b >= a else None

    out = []
    for step_id, rows in by_step.items():
        done = [r for r in rows if r.completed_at is not None and r.completed_at <= horizon]
        waits = [h for r in rows if (h := hours(r.started_at, r.claimed_at)) is not None]
        works = [h for r in done if (h := hours(r.claimed_at, r.completed_at)) is not None]
        queue = [sum(1 for r in rows if r.started_at <= t and (r.completed_at is None or r.completed_at > t)) for t in samples]
        out.append(StepOutcome(
            step_id=step_id,
            name=rows[0].step_name,
            completed=len(done),
            late_share=round(sum(1 for r in done if r.result == "late") / len(done), 4) if done else 0.0,
            average_wait_hours=round(mean(waits), 2) if waits else 0.0,
            average_work_hours=round(mean(works), 2) if works else 0.0,
            average_queue=round(mean(queue), 2) if queue else 0.0,
            max_queue=max(queue, default=0),
        ))
    return sorted(out, key=lambda s: (-s.late_share, s.step_id))


# --------------------------------------------------------------------------- replaying


def _organisation(session: Session, staff: Mapping[tuple[str, str], int]) -> dict[str, Any]:
    """The live organisation as :func:`organisation.load_organisation` data, staffed as asked."""
    agencies = session.scalars(select(Agency)).all()
    code_of = {a.id: a.code for a in agencies}
    depth: dict[int, int] = {}

    def level(agency: Agency) -> int:
        if agency.id not in depth:
            parent = next((a for a in agencies if a.id == agency.parent_id), None)
            depth[agency.id] = 0 if parent is None else level(parent) + 1
        return depth[agency.id]

    items = [
        {"code": a.code, "name": a.name, "level": a.level, "kind": a.kind, "active": a.active,
         "parent": code_of.get(a.parent_id) if a.parent_id else None}
        for a in sorted(agencies, key=lambda a: (level(a), a.code))
    ]
    holders: dict[tuple[str, str], list[str]] = defaultdict(list)
    for username, agency_id, role in session.execute(
        select(Officer.username, OfficerRole.agency_id, OfficerRole.role)
        .join(OfficerRole, OfficerRole.officer_id == Officer.id)
        .where(Officer.active.is_(True))
        .order_by(Officer.username)
    ):
        holders[(code_of[agency_id], role)].append(username)
    for (agency_code, role), count in staff.items():
        if agency_code not in {a.code for a in agencies}:
            raise InvalidRequest(f"Không có cơ quan mã {agency_code}.")
        if role not in organisation.ROLES:
            raise InvalidRequest(f"Vai trò '{role}' không hợp lệ.")
        if count < 0:
            raise InvalidRequest("Số cán bộ không thể âm.")
        names = holders[(agency_code, role)]
        holders[(agency_code, role)] = names[:count] + [f"mo-phong.{role}.{agency_code}.{i}" for i in range(len(names), count)]
    grants: dict[str, list[dict[str, str]]] = defaultdict(list)
    for (agency_code, role), names in holders.items():
        for name in names:
            grants[name].append({"agency": agency_code, "role": role})
    return {"agencies": items, "officers": [{"username": n, "full_name": n, "roles": g} for n, g in sorted(grants.items())]}


def _files(session: Session, procedure_code: str) -> dict[str, bytes]:
    version = services.get_version(session, procedure_code)
    return {f.filename: f.content for f in session.scalars(select(ProcedureFile).where(ProcedureFile.version_id == version.id))}


def _changed(files: dict[str, bytes], process_id: str, steps: Mapping[str, Any], change: Change) -> dict[str, bytes]:
    values: dict[str, dict[str, dict[str, str]]] = defaultdict(lambda: defaultdict(dict))
    unknown = set(change.allotments) - set(steps)
    if unknown:
        raise InvalidRequest("Thủ tục không có bước: " + ", ".join(sorted(unknown)) + ".")
    for name, content in files.items():
        text = content.decode("utf-8", "replace")
        for step_id, allotment in change.allotments.items():
            if f'id="{step_id}"' in text:
                values[name][step_id]["allotment"] = allotment
        if change.deadline and f'id="{process_id}"' in text:
            values[name][process_id]["deadline"] = change.deadline
    return designer.fill_files(files, {name: dict(v) for name, v in values.items()})


def _arrivals(session: Session, procedure_code: str, start: datetime, end: datetime) -> list[Arrival]:
    rows = session.execute(
        select(Dossier.received_at, Dossier.channel, Dossier.agency_code)
        .join(ProcedureVersion, ProcedureVersion.id == Dossier.procedure_version_id)
        .join(Procedure, Procedure.id == ProcedureVersion.procedure_id)
        .where(Procedure.code == procedure_code, Dossier.received_at >= start, Dossier.received_at < end)
        .order_by(Dossier.received_at, Dossier.id)
    ).all()
    return [Arrival(at=r.received_at, online=r.channel == "online", desk=r.agency_code) for r in rows]


def _observed_hours(session: Session, procedure_code: str, start: datetime, end: datetime) -> dict[str, tuple[list[float], list[float]]]:
    """Per step: the working hours each step waited before a claim, and took from claim to completion."""
    calendar = services.load_calendar(session)
    rows = session.execute(
        select(Task.step_id, Task.started_at, Task.claimed_at, Task.completed_at)
        .join(Dossier, Dossier.id == Task.dossier_id)
        .join(ProcedureVersion, ProcedureVersion.id == Dossier.procedure_version_id)
        .join(Procedure, Procedure.id == ProcedureVersion.procedure_id)
        .where(Procedure.code == procedure_code, Dossier.received_at >= start, Dossier.received_at < end,
               Task.completed_at.is_not(None), Task.claimed_at.is_not(None))
        .order_by(Task.id)
    ).all()
    out: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for step_id, started, claimed, completed in rows:
        if started <= claimed <= completed:
            out[step_id][0].append(calendar.working_time_between(started, claimed).total_seconds() / 3600)
            out[step_id][1].append(calendar.working_time_between(claimed, completed).total_seconds() / 3600)
    return dict(out)


def _simulated(
    org: dict[str, Any], files: dict[str, bytes], procedure_code: str, arrivals: list[Arrival],
    start: datetime, end: datetime, horizon: datetime, seed: int, workdir: Path, name: str, step_hours: Mapping[str, tuple[list[float], list[float]]],
) -> Outcome:
    engine = make_engine(f"sqlite:///{workdir / name}.sqlite3")
    try:
        migrate(engine)
        sessions: sessionmaker[Session] = make_session_factory(engine)
        with sessions() as session:
            organisation.load_organisation(session, org, "what-if", start)
            services.deploy(session, files, "what-if", start)
        plan = SimulationPlan(start=start, end=horizon, dossiers=len(arrivals), seed=seed,
                              mix={procedure_code: 1.0}, arrivals=tuple(arrivals), bottlenecks={},
                              step_hours=step_hours)
        simulate(sessions, plan)
        with sessions() as session:
            return outcome(session, procedure_code, start, end, horizon)
    finally:
        engine.dispose()


def replay(
    session: Session, procedure_code: str, start: datetime, end: datetime, change: Change, now: datetime, seed: int = 1
) -> dict[str, Any]:
    """What happened to the dossiers of [start, end) (as seen at ``now``), what the
    simulation makes of them as they were, and what it predicts with ``change``."""
    if end <= start:
        raise InvalidRequest("Kỳ so sánh phải kết thúc sau khi bắt đầu.")
    version = services.get_version(session, procedure_code)
    files = _files(session, procedure_code)
    arrivals = _arrivals(session, procedure_code, start, end)
    changed_files = _changed(files, version.process_id, version.meta.get("steps", {}), change)
    horizon = min(end + RUN_ON, max(end, now))
    actual = outcome(session, procedure_code, start, end, horizon)
    with tempfile.TemporaryDirectory(prefix="motcua-whatif-") as tmp:
        workdir = Path(tmp)
        # Steps take as long as they did: a shorter allotment does not make anyone faster.
        observed = _observed_hours(session, procedure_code, start, end)
        baseline = _simulated(_organisation(session, {}), files, procedure_code, arrivals, start, end, horizon, seed, workdir,
                              "baseline", observed)
        predicted = _simulated(_organisation(session, change.staff), changed_files, procedure_code, arrivals, start, end, horizon, seed,
                               workdir, "changed", observed)
    return {
        "procedure": procedure_code,
        "period": {"from": start.isoformat(), "to": end.isoformat(), "seen_at": horizon.isoformat()},
        "arrivals": len(arrivals),
        "change": {"allotments": dict(change.allotments), "deadline": change.deadline,
                   "staff": [{"agency": a, "role": r, "officers": n} for (a, r), n in change.staff.items()]},
        "actual": actual.as_dict(),
        "simulated_as_is": baseline.as_dict(),
        "simulated_with_change": predicted.as_dict(),
        "arrivals_by_channel": dict(Counter("online" if a.online else "desk" for a in arrivals)),
    }
