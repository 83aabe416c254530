"""Engine benchmark: persisted dossiers per second against raw SpiffWorkflow.

Run ``motcua bench`` (``--quick`` for a short run, ``--postgres URL`` to add
PostgreSQL). ``motcua bench`` also runs the scale scenarios of
:mod:`engine.bench_scale`; it prints one JSON object, then readable tables. Every figure is
the median of repeated, interleaved runs; a ratio is the median of the
per-run ratios.

Two baselines run the same diagram with stock SpiffWorkflow: purely in memory,
and in memory with the workflow serialized and restored around every step by
SpiffWorkflow's own serializer — the least any engine that keeps state
between steps must do, and the one the persisted figures are held against.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from SpiffWorkflow.bpmn.parser import BpmnParser
from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.util.task import TaskState
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from . import services
from .core.calendar import VN_TZ
from .persistence.db import make_engine, migrate
from .persistence.models import Dossier

_NS = (
    'xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" '
    'xmlns:camunda="http://camunda.org/schema/1.0/bpmn"'
)


def _props(**values: str) -> str:
    inner = "".join(f'<camunda:property name="{k}" value="{v}"/>' for k, v in values.items())
    return f"<bpmn:extensionElements><camunda:properties>{inner}</camunda:properties></bpmn:extensionElements>"


def six_step_diagram() -> bytes:
    """A joint procedure of six human steps across four agencies (benchmark input)."""
    steps = [("s1", "receptionist", "0.5"), ("s2", "officer", "3"), ("s3", "officer", "5"), ("s4", "officer", "3"), ("s5", "leader", "2"), ("s6", "receptionist", "0.5")]
    lanes = "".join(
        f'<bpmn:lane id="lane_{sid}">{_props(role=role)}<bpmn:flowNodeRef>{sid}</bpmn:flowNodeRef></bpmn:lane>' for sid, role, _ in steps
    )
    tasks = "".join(f'<bpmn:userTask id="{sid}" name="Bước {sid}">{_props(allotment=days + " working days")}</bpmn:userTask>' for sid, _, days in steps)
    chain = ["start", *[s[0] for s in steps], "end"]
    flows = "".join(f'<bpmn:sequenceFlow id="f{i}" sourceRef="{a}" targetRef="{b}"/>' for i, (a, b) in enumerate(zip(chain, chain[1:])))
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><bpmn:definitions {_NS} id="bench6" targetNamespace="bench">'
        f'<bpmn:process id="Bench6" name="Liên thông 6 bước" isExecutable="true">{_props(code="BENCH.6", deadline="15 working days")}'
        f'<bpmn:laneSet id="ls">{lanes}</bpmn:laneSet><bpmn:startEvent id="start"/>{tasks}<bpmn:endEvent id="end"/>{flows}'
        "</bpmn:process></bpmn:definitions>"
    ).encode()


def rework_diagram() -> bytes:
    """Handle → review → back to handle while ``rework`` is true (benchmark input)."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><bpmn:definitions {_NS} id="benchloop" targetNamespace="bench">'
        f'<bpmn:process id="BenchLoop" name="Xử lý lại" isExecutable="true">{_props(code="BENCH.LOOP", deadline="10 working days")}'
        f'<bpmn:laneSet id="ls"><bpmn:lane id="lo">{_props(role="officer")}<bpmn:flowNodeRef>handle</bpmn:flowNodeRef></bpmn:lane>'
        f'<bpmn:lane id="ll">{_props(role="leader")}<bpmn:flowNodeRef>review</bpmn:flowNodeRef></bpmn:lane></bpmn:laneSet>'
        f'<bpmn:startEvent id="start"/><bpmn:userTask id="handle" name="Xử lý">{_props(allotment="2 working days")}</bpmn:userTask>'
        f'<bpmn:userTask id="review" name="Duyệt">{_props(allotment="1 working day")}</bpmn:userTask>'
        '<bpmn:exclusiveGateway id="gw" default="ok"/><bpmn:endEvent id="end"/>'
        '<bpmn:sequenceFlow id="a" sourceRef="start" targetRef="handle"/><bpmn:sequenceFlow id="b" sourceRef="handle" targetRef="review"/>'
        '<bpmn:sequenceFlow id="c" sourceRef="review" targetRef="gw"/>'
        '<bpmn:sequenceFlow id="back" sourceRef="gw" targetRef="handle"><bpmn:conditionExpression>rework == True</bpmn:conditionExpression></bpmn:sequenceFlow>'
        '<bpmn:sequenceFlow id="ok" sourceRef="gw" targetRef="end"/></bpmn:process></bpmn:definitions>'
    ).encode()


def _rate(count: int, once: Callable[[], None]) -> float:
    started = time.perf_counter()
    once()
    return count / (time.perf_counter() - started)


def _raw_spec() -> tuple[Any, dict[str, Any]]:
    parser = BpmnParser()
    parser.add_bpmn_str(six_step_diagram())
    return parser.get_spec("Bench6"), parser.get_subprocess_specs("Bench6")


def raw_in_memory(count: int) -> Callable[[], None]:
    """Stock SpiffWorkflow, start → every step → end, all in memory."""
    spec, subs = _raw_spec()

    def once() -> None:
        for _i in range(count):
            wf = BpmnWorkflow(spec, subs)
            wf.do_engine_steps()
            while tasks := wf.get_tasks(state=TaskState.READY, manual=True):
                tasks[0].run()
                wf.do_engine_steps()
            assert wf.is_completed()

    return once


def raw_with_serializer(count: int) -> Callable[[], None]:
    """Stock SpiffWorkflow in memory, state serialized and restored (spec included) around every step."""
    spec, subs = _raw_spec()
    serializer = BpmnWorkflowSerializer()

    def once() -> None:
        for _i in range(count):
            wf = BpmnWorkflow(spec, subs)
            wf.do_engine_steps()
            state = serializer.serialize_json(wf)
            while True:
                wf = serializer.deserialize_json(state)
                tasks = wf.get_tasks(state=TaskState.READY, manual=True)
                if not tasks:
                    break
                tasks[0].run()
                wf.do_engine_steps()
                state = serializer.serialize_json(wf)
            assert wf.is_completed()

    return once


def persisted(engine: Engine, count: int) -> Callable[[], None]:
    """Through the service layer: receive, then find and complete each step, each its own transaction."""
    now = datetime(2026, 3, 2, 8, 0, tzinfo=VN_TZ)
    with Session(engine, expire_on_commit=False) as session:
        services.deploy(session, {"bench6.bpmn": six_step_diagram()}, actor="bench", now=now)
    runs = iter(range(1_000_000))

    def once() -> None:
        agency = f"B{next(runs)}"
        with Session(engine, expire_on_commit=False) as session:
            for i in range(count):
                dossier = services.start_dossier(session, "BENCH.6", {"i": i}, actor="bench", now=now, agency_code=agency)
                while tasks := services.open_tasks(session, dossier.code):
                    dossier = services.complete_task(session, tasks[0].id, {}, actor="bench", now=now)
                assert dossier.status == services.DossierStatus.PROCESSED

    return once


def writes_only(engine: Engine, count: int, state_bytes: int = 3700) -> Callable[[], None]:
    """The rows a dossier of the benchmark procedure writes, with no engine at all.

    Receipt inserts the dossier, its first step and their audit rows; each of
    the six steps then commits, in its own transaction, the workflow state
    (the size the engine stores for this procedure), the step completed, the
    next step and their audit rows — a subset of what the engine writes. Plain SQL on the driver's connection (one round
    trip per transaction on PostgreSQL, pipeline mode); no reads, no workflow,
    no calendar: the floor under any engine that commits every step to this
    schema, on this machine.
    """
    now = datetime(2026, 3, 2, 8, 0, tzinfo=VN_TZ)
    with Session(engine, expire_on_commit=False) as session:
        services.deploy(session, {"bench6.bpmn": six_step_diagram()}, actor="bench", now=now)
        version_id = services.get_version(session, "BENCH.6").id
    postgres = engine.dialect.name == "postgresql"
    at: Any = now if postgres else now.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")

    def sql(text_: str) -> str:  # ":name" placeholders in the driver's style
        return re.sub(r":(\w+)", r"%(\1)s", text_) if postgres else text_

    new_dossier = sql(
        "INSERT INTO dossiers (code, procedure_version_id, agency_code, channel, status, data, workflow_state, received_at, "
        "due_at, updated_at, revision, supplement_requests) VALUES (:code, :v, 'W', 'in_person', 2, '{}', :state, :at, :at, :at, 1, 0) "
        "RETURNING id"
    )
    new_task = sql(
        "INSERT INTO tasks (dossier_id, spiff_task_id, step_id, step_name, process_id, lane, role, agency, state, started_at, "
        "due_at, escalation_level, escalation_at) VALUES (:d, :spiff, :step, :step, 'Bench6', 'lane', 'officer', 'W', 'ready', "
        ":at, :at, 'warning', :at) RETURNING id"
    )
    new_audit = sql(
        "INSERT INTO audit_events (at, actor, action, dossier_id, task_id, subject, from_state, to_state, details) "
        "VALUES (:at, 'bench', :action, :d, :t, 's', 'ready', 'completed', :details)"
    )
    by_code = "(SELECT id FROM dossiers WHERE code = :code)"
    new_task_by_code = new_task.replace(sql(":d,"), f"{sql(by_code)},", 1)
    new_audit_by_code = new_audit.replace(sql(":d,"), f"{sql(by_code)},", 1)
    save = sql("UPDATE dossiers SET workflow_state = :state, revision = revision + 1, updated_at = :at WHERE id = :d")
    finish = sql("UPDATE tasks SET state = 'completed', completed_at = :at, completed_by = 'bench', result = 'on_time' WHERE id = :t")
    state, details = "x" * state_bytes, '{"data": {}, "result": "on_time"}'
    numbers = iter(range(10**9))

    def transaction(raw: Any, statements: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        """Run ``statements`` and commit; what each RETURNING statement gave, in order."""
        returned = []
        if postgres:
            cursors = []
            with raw.pipeline():
                for statement, params in statements:
                    cursors.append(raw.cursor())
                    cursors[-1].execute(statement, params)
                raw.commit()
            for cursor, (statement, _) in zip(cursors, statements):
                if "RETURNING" in statement:
                    returned.append(cursor.fetchone()[0])
                cursor.close()
            return returned
        for statement, params in statements:
            cursor = raw.cursor()
            cursor.execute(statement, params)
            if "RETURNING" in statement:
                returned.append(cursor.fetchone()[0])
            cursor.close()
        raw.commit()
        return returned

    def once() -> None:
        pooled = engine.raw_connection()
        try:
            raw = pooled.driver_connection
            for _ in range(count):
                code = f"W-{next(numbers)}"
                dossier_id, task_id = transaction(raw, [
                    (new_dossier, {"code": code, "v": version_id, "state": state, "at": at}),
                    (new_audit_by_code, {"at": at, "action": "dossier.receive", "code": code, "t": None, "details": details}),
                    (new_task_by_code, {"code": code, "spiff": "0" * 36, "step": "s1", "at": at}),
                    (new_audit_by_code, {"at": at, "action": "task.ready", "code": code, "t": None, "details": details}),
                ])
                for step in range(1, 7):
                    statements = [
                        (save, {"state": state, "at": at, "d": dossier_id}),
                        (finish, {"at": at, "t": task_id}),
                        (new_audit, {"at": at, "action": "task.complete", "d": dossier_id, "t": task_id, "details": details}),
                    ]
                    if step < 6:
                        statements.append((new_task, {"d": dossier_id, "spiff": f"{step:036d}", "step": f"s{step + 1}", "at": at}))
                        statements.append((new_audit, {"at": at, "action": "task.ready", "d": dossier_id, "t": None, "details": details}))
                    task_id = (transaction(raw, statements) or [task_id])[0]
        finally:
            pooled.close()

    return once


def rework_growth(engine: Engine, rounds: int, dossiers: int) -> dict[str, float]:
    """Cost and state size of a step at round 1 against round ``rounds`` of a rework loop."""
    now = datetime(2026, 3, 2, 8, 0, tzinfo=VN_TZ)
    first, last, size_first, size_last = [], [], [], []
    with Session(engine, expire_on_commit=False) as session:
        services.deploy(session, {"loop.bpmn": rework_diagram()}, actor="bench", now=now)
        for _ in range(dossiers):
            dossier = services.start_dossier(session, "BENCH.LOOP", {}, actor="bench", now=now, agency_code="LOOP")
            for round_ in range(1, rounds + 1):
                [handle] = services.open_tasks(session, dossier.code)
                started = time.perf_counter()
                services.complete_task(session, handle.id, {"note": f"lần {round_}"}, actor="bench", now=now)
                elapsed = time.perf_counter() - started
                size = len(session.scalar(select(Dossier.workflow_state).where(Dossier.id == dossier.id)))
                if round_ == 1:
                    first.append(elapsed)
                    size_first.append(size)
                elif round_ == rounds:
                    last.append(elapsed)
                    size_last.append(size)
                [review] = services.open_tasks(session, dossier.code)
                services.complete_task(session, review.id, {"rework": round_ < rounds}, actor="bench", now=now)
    step1, stepn = statistics.median(first), statistics.median(last)
    return {
        "step_1_ms": round(step1 * 1000, 3),
        f"step_{rounds}_ms": round(stepn * 1000, 3),
        f"step_{rounds}_over_step_1": round(stepn / step1, 3),
        "state_bytes_step_1": int(statistics.median(size_first)),
        f"state_bytes_step_{rounds}": int(statistics.median(size_last)),
    }


#: Targets of the engine scenarios: (comparison, bound).
TARGETS = {
    "sqlite_over_raw_in_memory": (">=", 0.5),
    "postgres_over_raw_in_memory": (">=", 0.5),
    "postgres_per_s": (">=", 100.0),
    "rework_sqlite.step_50_over_step_1": ("<=", 1.5),
    "rework_postgres.step_50_over_step_1": ("<=", 1.5),
}


def _targets(figures: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each targeted figure present in ``figures`` with its target and whether it is met."""
    out = {}
    for name, (op, bound) in TARGETS.items():
        head, _, tail = name.partition(".")
        value = figures.get(head, {}).get(tail) if tail else figures.get(head)
        if value is None:
            continue
        met = value >= bound if op == ">=" else value <= bound
        out[name] = {"value": value, "target": f"{'≥' if op == '>=' else '≤'} {bound:g}", "met": met}
    return out


def run(quick: bool = False, postgres_url: str | None = None, count: int | None = None, runs: int | None = None) -> dict[str, Any]:
    """Run every scenario and return the figures.

    ``postgres_url`` names a PostgreSQL server (any database on it): the
    benchmark creates its own database there and drops it afterwards.

    The throughput scenarios are interleaved: each run measures every one of
    them once, so a ratio compares figures taken moments apart; the medians
    over the runs are reported.
    """
    from .bench_scale import create_database

    default_count, default_runs = (30, 5) if quick else (150, 7)
    count, runs = count or default_count, runs or default_runs
    rounds, loop_dossiers = (50, 3) if quick else (50, 9)
    result: dict[str, Any] = {"quick": quick, "dossiers_per_run": count, "runs": runs, "procedure_steps": 6}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        sqlite_engine = make_engine(f"sqlite:///{Path(tmp) / 'bench.sqlite3'}")
        migrate(sqlite_engine)
        pg_engine = None
        if postgres_url:
            pg_engine = make_engine(stack.enter_context(create_database(postgres_url, prefix="motcua_bench")))
            stack.callback(pg_engine.dispose)
            migrate(pg_engine)
        scenarios: dict[str, Callable[[], None]] = {
            "raw_in_memory": raw_in_memory(count),
            "raw_with_serializer": raw_with_serializer(count),
            "sqlite": persisted(sqlite_engine, count),
            "sqlite_writes_only": writes_only(sqlite_engine, count),
        }
        if pg_engine is not None:
            scenarios["postgres"] = persisted(pg_engine, count)
            scenarios["postgres_writes_only"] = writes_only(pg_engine, count)
        for once in scenarios.values():
            once()  # warm-up: caches, prepared statements, first pages of the files
        rates: dict[str, list[float]] = {name: [] for name in scenarios}
        for _ in range(runs):
            for name, once in scenarios.items():
                rates[name].append(_rate(count, once))
        for name, values in rates.items():
            result[f"{name}_per_s"] = round(statistics.median(values), 1)
        for name in ("sqlite", "postgres"):
            if name not in rates:
                continue
            for base in ("raw_in_memory", "raw_with_serializer"):
                ratios = [a / b for a, b in zip(rates[name], rates[base])]
                result[f"{name}_over_{base}"] = round(statistics.median(ratios), 3)
            # The best ratio an engine could reach whose only cost beyond SpiffWorkflow were these writes.
            bounds = [(1 / raw) / (1 / raw + 1 / floor) for raw, floor in zip(rates["raw_in_memory"], rates[f"{name}_writes_only"])]
            result[f"{name}_bound_over_raw_in_memory"] = round(statistics.median(bounds), 3)
        result["rework_sqlite"] = rework_growth(sqlite_engine, rounds, loop_dossiers)
        sqlite_engine.dispose()
        if pg_engine is not None:
            with pg_engine.connect() as conn:
                result["postgres_settings"] = {
                    name: conn.execute(text(f"SHOW {name}")).scalar() for name in ("server_version", "fsync", "synchronous_commit")
                }
            result["rework_postgres"] = rework_growth(pg_engine, rounds, loop_dossiers)
    result["targets"] = _targets(result)
    return result


def table(figures: dict[str, Any]) -> str:
    """The figures as aligned ``name  value`` lines, the targets first."""
    lines = [f"{'engine scenario':<40} {'median':>10}  {'target':<8} met"]
    for name, figure in figures.get("targets", {}).items():
        lines.append(f"{name:<40} {figure['value']:>10}  {figure['target']:<8} {'yes' if figure['met'] else 'NO'}")
    lines.append("")
    for key, value in figures.items():
        if key == "targets":
            continue
        if isinstance(value, dict):
            for sub, sub_value in value.items():
                lines.append(f"{key}.{sub:<28} {sub_value}")
        else:
            lines.append(f"{key:<37} {value}")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    memory_kb = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")), 0) if Path("/proc/meminfo").exists() else 0
    return {
        "cpus": os.cpu_count(), "cpu": cpu, "memory_gb": round(memory_kb / 1024 / 1024, 1),
        "python": platform.python_version(), "system": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def main(quick: bool, postgres_url: str | None, scale: bool = True) -> None:
    """Every scenario (engine, then scale), one JSON object, then the tables."""
    figures: dict[str, Any] = {"machine": machine(), "engine": run(quick=quick, postgres_url=postgres_url)}
    if scale:
        from . import bench_scale

        figures["scale"] = bench_scale.run(quick=quick, postgres_url=postgres_url)
    print(json.dumps(figures, ensure_ascii=False, default=str))
    print()
    print(table(figures["engine"]))
    if scale:
        print()
        print(bench_scale.table(figures["scale"]))
