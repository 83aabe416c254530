"""Reports benchmark: the bottleneck query and the yearly report on a year of history.

``run(url, steps)`` fills an empty database with ``steps`` completed steps of a
province's year 2025 — 73 agencies (the province, 12 departments, 60
communes), 8 procedures of 3 to 7 steps (most of them liên thông between a
commune and departments), about 250 officers, some supplement pauses, returns
for rework, late and unfinished work — then times :func:`engine.reports.bottlenecks`
of the largest joint procedure and :func:`engine.reports.periodic_report` of
the province for 2025 (median of 5 runs after one warm-up). The stored report
facts (:func:`engine.reports.refresh_times`) are built first, and that one-off
build is timed on its own; then one bottleneck query is timed right after
1,000 new finished steps, which its refresh adds. The same seed gives
the same rows on every backend, so both backends' answers can be compared.

It is benchmark data: rows are written directly (``executemany`` on SQLite,
``COPY`` on PostgreSQL), not through the use cases. Example::

    python -m engine.bench_reports postgresql+psycopg://postgres@127.0.0.1:54329/motcua_bench --steps 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Sequence

from sqlalchemy import Engine, func, select, text

from . import reports, services
from .core.calendar import VN_TZ, WorkingCalendar
from .persistence.db import make_engine, migrate
from .persistence.models import Dossier

__all__ = ["fill", "run", "table", "time_queries"]

YEAR = 2025
#: The benchmark's "now": the first working Monday after the year.
NOW = datetime(2026, 1, 5, 8, 0, tzinfo=VN_TZ)

#: (code, name, deadline in working days, steps: (step id, name, where, role, allotment)).
#: ``where`` is ``home`` (the dossier's commune) or a department kind.
PROCEDURES: list[tuple[str, str, float, list[tuple[str, str, str, str, float]]]] = [
    ("1.013978", "Đăng ký đất đai, cấp GCN lần đầu", 20, [
        ("receive", "Tiếp nhận hồ sơ", "home", "receptionist", 0.5), ("confirm", "Xác nhận hiện trạng", "home", "officer", 3),
        ("survey", "Thẩm định, lập hồ sơ địa chính", "vpdk", "officer", 8), ("tax", "Xác định nghĩa vụ tài chính", "thue", "officer", 5),
        ("sign", "Ký GCN", "vpdk", "leader", 2), ("update", "Cập nhật cơ sở dữ liệu", "vpdk", "officer", 1),
        ("give_back", "Trả kết quả", "home", "receptionist", 0.5)]),
    ("1.001612", "Đăng ký thành lập hộ kinh doanh", 3, [
        ("receive", "Tiếp nhận hồ sơ", "home", "receptionist", 0.5), ("check", "Thẩm định", "home", "officer", 1.5),
        ("tax", "Cấp mã số thuế", "thue", "officer", 0.5), ("give_back", "Trả kết quả", "home", "receptionist", 0.5)]),
    ("1.001193", "Đăng ký khai sinh", 1, [
        ("receive", "Tiếp nhận hồ sơ", "home", "receptionist", 0.25), ("check", "Kiểm tra, ghi sổ", "home", "officer", 0.5),
        ("sign", "Ký giấy khai sinh", "home", "leader", 0.25)]),
    ("KS-TT-BHYT", "Liên thông khai sinh – thường trú – thẻ BHYT", 8, [
        ("receive", "Tiếp nhận hồ sơ", "home", "receptionist", 0.5), ("birth", "Đăng ký khai sinh", "home", "officer", 1),
        ("residence", "Đăng ký thường trú", "cong_an", "officer", 3), ("insurance", "Cấp thẻ BHYT", "bhxh", "officer", 3),
        ("give_back", "Trả kết quả", "home", "receptionist", 0.5)]),
    ("1.013225", "Cấp giấy phép xây dựng nhà ở riêng lẻ", 15, [
        ("receive", "Tiếp nhận hồ sơ", "home", "receptionist", 0.5), ("appraise", "Thẩm định hồ sơ", "so_xay_dung", "officer", 10),
        ("sign", "Ký giấy phép", "so_xay_dung", "leader", 3), ("give_back", "Trả kết quả", "home", "receptionist", 1.5)]),
    ("2.000815", "Chứng thực bản sao từ bản chính", 1, [
        ("receive", "Tiếp nhận hồ sơ", "home", "receptionist", 0.25), ("certify", "Chứng thực", "home", "officer", 0.5),
        ("give_back", "Trả kết quả", "home", "receptionist", 0.25)]),
    ("LLTP", "Cấp Phiếu lý lịch tư pháp", 10, [
        ("receive", "Tiếp nhận hồ sơ", "home", "receptionist", 0.5), ("verify", "Tra cứu, xác minh", "so_tu_phap", "officer", 6),
        ("police", "Xác minh của công an", "cong_an", "officer", 2), ("sign", "Ký phiếu", "so_tu_phap", "leader", 1),
        ("give_back", "Trả kết quả", "home", "receptionist", 0.5)]),
    ("1.004946", "Cấp bản sao trích lục hộ tịch", 1, [
        ("receive", "Tiếp nhận hồ sơ", "home", "receptionist", 0.25), ("extract", "Trích lục", "home", "officer", 0.5),
        ("sign", "Ký trích lục", "home", "leader", 0.25)]),
]
#: How often each procedure is filed, relative to the others.
WEIGHTS = [10, 8, 14, 6, 4, 30, 5, 9]
DEPARTMENTS = ["vpdk", "thue", "cong_an", "bhxh", "so_xay_dung", "so_tu_phap", "so_gd", "so_yt", "so_ct", "so_nn", "so_tc", "so_khcn"]
COMMUNES = 60


def _utc(value: datetime) -> datetime:
    return value.astimezone(timezone.utc)


class _Writer:
    """Rows into tables: COPY on PostgreSQL, executemany on SQLite; timestamps in UTC."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"

    def write(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], batch: int = 50_000) -> int:
        count = 0
        with self.engine.begin() as conn:
            raw = conn.connection.driver_connection
            if self.postgres:
                with raw.cursor() as cursor, cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row([_pg(v) for v in row])
                        count += 1
            else:
                sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
                cursor = raw.cursor()
                chunk: list[Sequence[Any]] = []
                for row in rows:
                    chunk.append([_sqlite(v) for v in row])
                    if len(chunk) >= batch:
                        cursor.executemany(sql, chunk)
                        count += len(chunk)
                        chunk = []
                if chunk:
                    cursor.executemany(sql, chunk)
                    count += len(chunk)
        return count

    def reset_sequence(self, table: str) -> None:
        if self.postgres:
            with self.engine.begin() as conn:
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"))


def _pg(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return value


def _sqlite(value: Any) -> Any:
    if isinstance(value, datetime):
        return _utc(value).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return value


def fill(engine: Engine, steps: int, seed: int = 2025) -> dict[str, int]:
    """Write the organisation, procedures and a year of dossiers until ``steps`` steps are completed."""
    rng = random.Random(seed)
    calendar = WorkingCalendar()
    writer = _Writer(engine)
    created = datetime(2024, 12, 1, 8, tzinfo=VN_TZ)
    # Organisation: the province, its departments and communes; officers per agency and role.
    agencies = [(1, "000.00.00.H99", "UBND tỉnh Bình An", "province", "ubnd", None)]
    kinds: dict[str, int] = {}
    for i, kind in enumerate(DEPARTMENTS):
        agencies.append((2 + i, f"000.00.{30 + i:02d}.H99", f"Sở/ngành {kind} tỉnh Bình An", "department", kind, 1))
        kinds[kind] = 2 + i
    communes = []
    for i in range(COMMUNES):
        agency_id = 2 + len(DEPARTMENTS) + i
        agencies.append((agency_id, f"000.{20 + i // 10:02d}.{i % 10 + 10:02d}.H99", f"UBND xã số {i + 1}", "commune", "ubnd", 1))
        communes.append(agency_id)
    writer.write("agencies", ["id", "code", "name", "level", "kind", "parent_id", "active"], [(*a, True) for a in agencies])
    code_of = {a[0]: a[1] for a in agencies}
    officers: list[tuple[int, str, str]] = []
    staff: dict[tuple[int, str], list[str]] = {}
    speed: dict[str, float] = {}
    for agency_id, *_ in agencies:
        for role, count in (("receptionist", 2), ("officer", 3), ("leader", 1)):
            for n in range(count):
                username = f"{role[:2]}{n}.{agency_id}"
                officers.append((len(officers) + 1, username, f"Cán bộ {role} {n + 1} – cơ quan {agency_id}"))
                staff.setdefault((agency_id, role), []).append(username)
                speed[username] = rng.choice((0.6, 0.8, 0.9, 1.0, 1.0, 1.1, 1.3))
    writer.write("officers", ["id", "username", "full_name", "active", "failed_logins"], [(*o, True, 0) for o in officers])
    writer.write("officer_roles", ["id", "officer_id", "agency_id", "role"],
                 [(i + 1, oid, int(u.split(".")[1]), {"re": "receptionist", "of": "officer", "le": "leader"}[u[:2]]) for i, (oid, u, _) in enumerate(officers)])
    writer.write("procedures", ["id", "code", "name", "latest_version", "created_at"],
                 [(i + 1, p[0], p[1], 1, created) for i, p in enumerate(PROCEDURES)])
    writer.write("procedure_versions", ["id", "procedure_id", "version", "content_hash", "process_id", "meta", "spec_json", "deployed_at", "deployed_by"],
                 [(i + 1, i + 1, 1, f"{i:064d}", f"P{i}", {"code": p[0]}, "{}", created, "bench") for i, p in enumerate(PROCEDURES)])
    # Working instants of the year to receive dossiers at.
    days = [date(YEAR, 1, 1) + timedelta(days=n) for n in range(365)]
    working = [d for d in days if calendar.is_working_day(d)]
    counters: dict[tuple[int, date], int] = {}
    dossiers: list[tuple[Any, ...]] = []
    tasks: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    completed_steps = 0
    dossier_id = task_id = event_id = 0
    while completed_steps < steps:
        dossier_id += 1
        p_index = rng.choices(range(len(PROCEDURES)), WEIGHTS)[0]
        code, _name, deadline, plan = PROCEDURES[p_index]
        home = rng.choice(communes)
        day = rng.choice(working)
        received = datetime(day.year, day.month, day.day, 7, 30, tzinfo=VN_TZ) + timedelta(minutes=rng.randrange(0, 9 * 60))
        received = calendar.next_working_instant(received)
        number = counters[(home, day)] = counters.get((home, day), 0) + 1
        due = calendar.add_working_days(received, deadline)
        supplements = 0
        paused_step = rng.randrange(1, len(plan)) if rng.random() < 0.06 else -1
        at = received
        finished = None
        for k, (step_id, step_name, where, role, allot) in enumerate(plan):
            agency_id = home if where == "home" else kinds[where]
            officer = rng.choice(staff[(agency_id, role)])
            task_id += 1
            started = at
            step_due = calendar.add_working_days(started, allot)
            wait = timedelta(hours=allot * 8 * rng.random() * 0.3)
            work = timedelta(hours=allot * 8 * rng.random() * 1.15 * speed[officer] * (1.25 if where == "so_xay_dung" else 1.0))
            if k == paused_step:  # a supplement request in the middle of the step
                supplements = 2 if rng.random() < 0.15 else 1
                paused_at = calendar.add_working_time(started, wait / 2)
                resumed = calendar.add_working_time(paused_at, timedelta(hours=rng.choice((4, 8, 16, 24))))
                step_due = calendar.resume_due(step_due, paused_at, resumed)
                due = calendar.resume_due(due, paused_at, resumed)
                event_id += 1
                events.append((event_id, resumed, "applicant", "dossier.resume", dossier_id, None, None, "5", "4",
                               {"paused_at": paused_at.isoformat(), "reason": "supplement"}))
                started_work = resumed
            else:
                started_work = started
            claimed = calendar.add_working_time(started_work, wait)
            completed = calendar.add_working_time(claimed, work)
            if completed > NOW:  # still open at the benchmark's "now"
                state = "claimed" if claimed <= NOW else "ready"
                tasks.append((task_id, dossier_id, f"{task_id:036d}", step_id, step_name, f"P{p_index}", state,
                              officer if state == "claimed" else None, started, step_due, None, None, agency_id,
                              code_of[agency_id], role, claimed if state == "claimed" else None, None))
                break
            result = services.judge(completed, step_due)
            tasks.append((task_id, dossier_id, f"{task_id:036d}", step_id, step_name, f"P{p_index}", "completed", officer,
                          started, step_due, completed, officer, agency_id, code_of[agency_id], role, claimed, result))
            completed_steps += 1
            event_id += 1
            events.append((event_id, completed, officer, "task.complete", dossier_id, task_id, step_id, "claimed", "completed", {}))
            if k > 0 and rng.random() < 0.02:  # sent back once to the previous step
                event_id += 1
                events.append((event_id, completed, officer, "task.return", dossier_id, task_id, step_id, "claimed", "returned",
                               {"reason": "Thiếu giấy tờ", "to_step": plan[k - 1][0]}))
            at = completed
            if k == len(plan) - 1:
                finished = completed
            if completed_steps >= steps:
                break
        status = 10 if finished is not None else 4
        dossiers.append((dossier_id, f"{code_of[home]}-{day:%y%m%d}-{number:04d}", p_index + 1, code_of[home], home, home,
                         "online" if rng.random() < 0.35 else "in_person", supplements, status,
                         "returned" if finished else "processing", {}, "", received, due, finished,
                         finished or NOW, 1, finished))
    columns_d = ["id", "code", "procedure_version_id", "agency_code", "home_agency_id", "receiving_agency_id", "channel",
                 "supplement_requests", "status", "sub_status", "data", "workflow_state", "received_at", "due_at",
                 "finished_at", "updated_at", "revision", "returned_at"]
    writer.write("dossiers", columns_d, dossiers)
    columns_t = ["id", "dossier_id", "spiff_task_id", "step_id", "step_name", "process_id", "state", "assignee", "started_at",
                 "due_at", "completed_at", "completed_by", "agency_id", "agency", "role", "claimed_at", "result"]
    writer.write("tasks", columns_t, tasks)
    writer.write("audit_events", ["id", "at", "actor", "action", "dossier_id", "task_id", "subject", "from_state", "to_state", "details"], events)
    for table_name in ("agencies", "officers", "officer_roles", "procedures", "procedure_versions", "dossiers", "tasks", "audit_events"):
        writer.reset_sequence(table_name)
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    return {"dossiers": len(dossiers), "tasks": len(tasks), "completed_steps": completed_steps, "audit_events": len(events)}


def _median_seconds(function: Callable[[], Any], runs: int = 5) -> tuple[float, Any]:
    result = function()  # warm-up
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        result = function()
        timings.append(time.perf_counter() - started)
    return round(statistics.median(timings), 3), result


def run(url: str, steps: int = 1_000_000) -> dict[str, Any]:
    """Fill the empty database at ``url`` with ``steps`` completed steps, then time the
    bottleneck query and the yearly report (median of 5). Returns the figures."""
    engine = make_engine(url)
    migrate(engine)
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        if session.scalar(select(func.count()).select_from(Dossier)):
            raise SystemExit(f"{engine.url.render_as_string()} already holds dossiers; give an empty database.")
    started = time.perf_counter()
    counts = fill(engine, steps)
    fill_seconds = round(time.perf_counter() - started, 1)
    figures: dict[str, Any] = {"backend": engine.dialect.name, "steps": steps, **counts, "fill_seconds": fill_seconds}
    engine.dispose()
    return figures | time_queries(url)


def time_queries(url: str) -> dict[str, Any]:
    """Time the reports on a database :func:`run` filled (median of 5 after a warm-up)."""
    from sqlalchemy.orm import Session

    engine = make_engine(url)
    migrate(engine)
    figures: dict[str, Any] = {"backend": engine.dialect.name}
    start, end = datetime(YEAR, 1, 1, tzinfo=VN_TZ), datetime(YEAR + 1, 1, 1, tzinfo=VN_TZ)
    # Finished steps and handling times are stored once (then incrementally): build them before
    # timing, then let the database note the new rows as autovacuum would after a bulk insert.
    with Session(engine) as session:
        calendar = services.load_calendar(session)
    started = time.perf_counter()
    reports.refresh_times(engine, calendar)
    figures["times_refresh_seconds"] = round(time.perf_counter() - started, 1)
    _vacuum(engine)
    with Session(engine) as session:
        bottleneck_s, bottleneck = _median_seconds(lambda: reports.bottlenecks(session, PROCEDURES[0][0], start, end, now=NOW))
        report_s, report = _median_seconds(lambda: reports.periodic_report(session, "000.00.00.H99", str(YEAR), now=NOW))
        on_time_s, _ = _median_seconds(lambda: reports.on_time(session, start, end, "officer", now=NOW))
        # A report right after 1,000 new steps: the latest 1,000 finished steps (and the dossiers
        # finished meanwhile) are taken out of the stored facts, so its refresh adds them again.
        since = _forget_latest(engine, 1000)
        started = time.perf_counter()
        after = reports.bottlenecks(session, PROCEDURES[0][0], start, end, now=NOW)
        after_s = round(time.perf_counter() - started, 3)
        assert after == bottleneck, "the refreshed facts give other figures"
    figures |= {
        "bottleneck_seconds": bottleneck_s,
        "bottleneck_after_1000_new_steps_seconds": after_s,
        "new_steps_since": since.isoformat(),
        "yearly_report_seconds": report_s,
        "on_time_per_officer_seconds": on_time_s,
        "bottleneck_top_step": bottleneck["steps"][0]["step_id"] + "@" + str(bottleneck["steps"][0]["agency_code"]),
        "report_totals": {k: report.totals[k] for k in ("total", "finished", "early", "on_time", "late", "in_progress", "overdue", "on_time_rate", "avg_days")},
    }
    if hasattr(os, "getloadavg"):
        figures["load_average_1min"] = round(os.getloadavg()[0], 2)
    engine.dispose()
    return figures


def _vacuum(engine: Engine) -> None:
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE report_steps, report_dossier_times"))
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))


def _forget_latest(engine: Engine, steps: int) -> datetime:
    """Take the latest ``steps`` finished steps, and the dossiers finished since the first of
    them, out of the stored report facts, as if they had not been refreshed yet."""
    with engine.begin() as conn:
        latest = select(reports.REPORT_STEPS.c.completed_at).order_by(reports.REPORT_STEPS.c.completed_at.desc()).limit(steps).subquery()
        since = conn.execute(select(func.min(latest.c.completed_at))).scalar_one()
        conn.execute(reports.REPORT_STEPS.delete().where(reports.REPORT_STEPS.c.completed_at >= since))
        conn.execute(reports.DOSSIER_TIMES.delete().where(reports.DOSSIER_TIMES.c.finished_at >= since))
        conn.execute(reports.TIMES_STATE.update().values(watermark=since))
    return since


def table(figures: dict[str, Any]) -> str:
    """The figures as aligned ``name  value`` lines."""
    lines = []
    for key, value in figures.items():
        if isinstance(value, dict):
            for sub, sub_value in value.items():
                lines.append(f"{key}.{sub:<24} {sub_value}")
        else:
            lines.append(f"{key:<37} {value}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Benchmark of the supervisors' reports on a year of history.")
    parser.add_argument("url", help="an empty database (SQLite file URL or PostgreSQL URL)")
    parser.add_argument("--steps", type=int, default=1_000_000, help="completed steps to write (default 1 000 000)")
    parser.add_argument("--time-only", action="store_true", help="only time the reports on a database filled before")
    args = parser.parse_args(argv)
    figures = time_queries(args.url) if args.time_only else run(args.url, args.steps)
    print(json.dumps(figures, ensure_ascii=False))
    print()
    print(table(figures))


if __name__ == "__main__":
    main()
