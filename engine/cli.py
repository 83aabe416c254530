"""The ``motcua`` command line.

Every command reads the database from ``MOTCUA_DATABASE_URL`` (default: an
SQLite file in ``./instance``).
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

import click
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from . import config, services
from .core import bpmn
from .core.calendar import VN_TZ, WorkingCalendar
from .errors import DeploymentRejected, EngineError
from .persistence.db import make_engine, make_session_factory, migrate
from .persistence.models import Dossier

PROCESSES_DIR = Path(__file__).resolve().parent.parent / "processes"


def _now() -> datetime:
    return datetime.now(VN_TZ).replace(microsecond=0)


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@click.group()
@click.option("--database-url", envvar="MOTCUA_DATABASE_URL", default=None, help="SQLAlchemy URL (default: SQLite in ./instance).")
@click.pass_context
def main(ctx: click.Context, database_url: str | None) -> None:
    """Một Cửa — BPMN engine for one-stop administrative procedures."""
    ctx.obj = config.load(database_url=database_url)


@contextmanager
def _session(ctx: click.Context) -> Iterator[Session]:
    settings: config.Settings = ctx.obj
    engine = make_engine(settings.database_url)
    session = make_session_factory(engine)()
    try:
        yield session
    finally:
        session.close()
        engine.dispose()


def _fail(message: str) -> None:
    click.echo(message, err=True)
    sys.exit(1)


@main.command("init-db")
@click.pass_context
def init_db(ctx: click.Context) -> None:
    """Create or upgrade the database schema."""
    settings: config.Settings = ctx.obj
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
    finally:
        engine.dispose()
    click.echo(f"Database ready: {_safe_url(settings.database_url)}")


def _read_files(paths: tuple[str, ...]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for raw in paths:
        path = Path(raw)
        targets = sorted(path.glob("*.bpmn")) if path.is_dir() else [path]
        for target in targets:
            try:
                files[target.name] = target.read_bytes()
            except OSError as err:
                _fail(f"Cannot read {target}: {err.strerror}")
    if not files:
        _fail("No BPMN file found.")
    return files


def _print_problems(problems: list[Any]) -> None:
    for problem in problems:
        click.echo(str(problem), err=problem.severity == "error")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--each", is_flag=True, help="Deploy every file as its own procedure instead of one set.")
@click.option("--actor", default="cli", show_default=True, help="Who deploys (recorded in the audit trail).")
@click.pass_context
def deploy(ctx: click.Context, paths: tuple[str, ...], each: bool, actor: str) -> None:
    """Deploy BPMN files (one procedure and the processes it calls)."""
    files = _read_files(paths)
    batches = [{name: content} for name, content in files.items()] if each else [files]
    failed = False
    with _session(ctx) as session:
        for batch in batches:
            try:
                result = services.deploy(session, batch, actor=actor, now=_now())
            except DeploymentRejected as err:
                failed = True
                click.echo(f"Rejected {', '.join(batch)}:", err=True)
                _print_problems(err.problems)
                continue
            except EngineError as err:
                failed = True
                click.echo(f"{', '.join(batch)}: {err.message}", err=True)
                continue
            state = "new version" if result.created else "unchanged"
            click.echo(f"{result.code} version {result.version} ({state}): {result.name}")
            _print_problems(result.warnings)
    if failed:
        sys.exit(1)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
def validate(paths: tuple[str, ...]) -> None:
    """Check BPMN files without deploying them."""
    files = _read_files(paths)
    problems = services.validate(files)
    _print_problems(problems)
    if any(p.severity == "error" for p in problems):
        sys.exit(1)
    click.echo(f"OK: {', '.join(files)} can be deployed.")


@main.group()
def calendar() -> None:
    """Working-day calendar."""


def _parse_instant(value: str) -> datetime:
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"'{value}' is not an ISO 8601 date-time such as 2026-02-13T10:00+07:00.") from None
    return instant if instant.tzinfo else instant.replace(tzinfo=VN_TZ)


def _calendar(ctx: click.Context) -> WorkingCalendar:
    try:
        with _session(ctx) as session:
            return services.load_calendar(session)
    except (OperationalError, ProgrammingError):
        click.echo("warning: database not initialised (motcua init-db); no calendar overrides applied", err=True)
        return WorkingCalendar()


@calendar.command("due")
@click.option("--start", "start", required=True, help="ISO 8601 instant; without an offset it is taken in Asia/Ho_Chi_Minh.")
@click.option("--working-days", type=click.FloatRange(min=0), default=None)
@click.option("--working-hours", type=click.FloatRange(min=0), default=None)
@click.pass_context
def calendar_due(ctx: click.Context, start: str, working_days: float | None, working_hours: float | None) -> None:
    """Print when a deadline starting at --start falls due."""
    if (working_days is None) == (working_hours is None):
        raise click.UsageError("Give exactly one of --working-days or --working-hours.")
    instant = _parse_instant(start)
    cal = _calendar(ctx)
    due = cal.add_working_days(instant, working_days) if working_days is not None else cal.add_working_hours(instant, working_hours or 0)
    click.echo(due.astimezone(VN_TZ).isoformat())


@calendar.command("override")
@click.argument("day", type=click.DateTime(formats=["%Y-%m-%d"]))
@click.option("--day-off", "kind", flag_value="day_off", help="An extra day off (e.g. a bridge day).")
@click.option("--working-day", "kind", flag_value="working_day", help="An extra working day (làm bù).")
@click.option("--note", default=None)
@click.pass_context
def calendar_override(ctx: click.Context, day: datetime, kind: str | None, note: str | None) -> None:
    """Add an extra day off or working day."""
    if kind is None:
        raise click.UsageError("Give --day-off or --working-day.")
    with _session(ctx) as session:
        services.add_calendar_override(session, day.date(), kind, note, actor="cli", now=_now())
    click.echo(f"{day.date().isoformat()}: {kind}")


@main.group()
def dossier() -> None:
    """Dossiers: start one, show it."""


def _json_option(value: str) -> dict[str, Any]:
    try:
        data = json.loads(value)
    except json.JSONDecodeError as err:
        raise click.BadParameter(f"not valid JSON: {err.msg}") from None
    if not isinstance(data, dict):
        raise click.BadParameter("must be a JSON object")
    return data


@dossier.command("start")
@click.argument("procedure_code")
@click.option("--data", default="{}", help="Dossier data as a JSON object.")
@click.option("--agency", default=None, help="Code of the receiving agency.")
@click.pass_context
def dossier_start(ctx: click.Context, procedure_code: str, data: str, agency: str | None) -> None:
    """Receive a dossier for PROCEDURE_CODE."""
    with _session(ctx) as session:
        try:
            d = services.start_dossier(
                session, procedure_code, _json_option(data), actor="cli", now=_now(), agency_code=agency or ctx.obj.default_agency_code
            )
        except EngineError as err:
            _fail(err.message)
        _show(session, d.code)


@dossier.command("show")
@click.argument("code")
@click.pass_context
def dossier_show(ctx: click.Context, code: str) -> None:
    """Show a dossier and its open steps."""
    with _session(ctx) as session:
        try:
            _show(session, code)
        except EngineError as err:
            _fail(err.message)


def _show(session: Session, code: str) -> None:
    d = services.get_dossier(session, code)
    due = d.due_at.astimezone(VN_TZ).isoformat() if d.due_at else "-"
    click.echo(f"{d.code}  {services.DossierStatus.LABELS[d.status]}  due {due}")
    for task in services.open_tasks(session, code):
        task_due = task.due_at.astimezone(VN_TZ).isoformat() if task.due_at else "-"
        click.echo(f"  task {task.id}: {task.step_name} [{task.role or '-'}] due {task_due}")


@dossier.command("form")
@click.argument("code")
@click.argument("form", type=click.Choice(["01", "02", "03", "04", "05"]))
@click.option("--output", "-o", type=click.Path(dir_okay=False), required=True, help="File to write; .pdf gives a PDF, else HTML.")
@click.pass_context
def dossier_form(ctx: click.Context, code: str, form: str, output: str) -> None:
    """Print form 01–05 of a dossier (receipt, supplement, refusal, apology, control slip)."""
    from . import documents

    with _session(ctx) as session:
        try:
            content = documents.render(session, code, form, ctx.obj.public_url, pdf=output.lower().endswith(".pdf"))
        except EngineError as err:
            _fail(err.message)
    Path(output).write_bytes(content)
    click.echo(f"Form {form} of {code} written to {output}")


@main.command("complete")
@click.argument("task_id", type=int)
@click.option("--data", default="{}", help="Form data as a JSON object.")
@click.option("--actor", default="cli", show_default=True)
@click.pass_context
def complete(ctx: click.Context, task_id: int, data: str, actor: str) -> None:
    """Complete an open step."""
    with _session(ctx) as session:
        try:
            d = services.complete_task(session, task_id, _json_option(data), actor=actor, now=_now())
        except EngineError as err:
            _fail(err.message)
        _show(session, d.code)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--threads", default=8, show_default=True, type=int)
@click.option("--with-worker", is_flag=True, help="Also run the background jobs (deadline sweep, outbox sender) in this process.")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, threads: int, with_worker: bool) -> None:
    """Serve the web application with a production WSGI server (waitress)."""
    from waitress import serve as waitress_serve

    from api.app import create_app

    app = create_app(ctx.obj)
    scheduler = None
    if with_worker:
        from . import notify
        from .scheduler import build_scheduler

        sessions = app.extensions["motcua.sessions"]
        channels = notify.channels_from_settings(ctx.obj)
        scheduler = build_scheduler(
            sessions, deliver=lambda now: notify.deliver_due(sessions, channels, now),
            deliver_seconds=int(ctx.obj.outbox_interval or 15), background=True,
        )
        scheduler.start()
    click.echo(f"Một Cửa on http://{host}:{port}/ (database {_safe_url(ctx.obj.database_url)})"
               + (", with the deadline sweep and the outbox sender" if with_worker else ""))
    try:
        waitress_serve(app, host=host, port=port, threads=threads)
    finally:
        if scheduler is not None:
            scheduler.shutdown(wait=False)


@main.command("backup")
@click.argument("target", type=click.Path(dir_okay=False, writable=True))
@click.pass_context
def backup_command(ctx: click.Context, target: str) -> None:
    """Back the database up to TARGET (SQLite: online backup; PostgreSQL: pg_dump custom format)."""
    from . import backup

    try:
        written = backup.backup(ctx.obj.database_url, Path(target))
    except EngineError as err:
        _fail(str(err))
    click.echo(f"Backup written: {written} ({written.stat().st_size:,} bytes)")


@main.command("restore")
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@click.option("--yes", is_flag=True, help="Replace the current database without asking.")
@click.pass_context
def restore_command(ctx: click.Context, source: str, yes: bool) -> None:
    """Restore SOURCE into the database (replacing what it holds), upgrade its schema, and check it."""
    from . import backup

    if not yes:
        click.confirm(f"Replace the database {_safe_url(ctx.obj.database_url)} with {source}?", abort=True)
    try:
        found = backup.restore(Path(source), ctx.obj.database_url)
    except EngineError as err:
        _fail(str(err))
    click.echo(f"Restored: {found.dossiers} dossiers, {found.open_tasks} open steps, last dossier {found.last_dossier or '—'}")


@main.group()
def org() -> None:
    """Organisation: agencies, officers and their roles."""


@org.command("load")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.pass_context
def org_load(ctx: click.Context, path: str) -> None:
    """Create or update agencies and officers from a YAML or CSV file."""
    from . import organisation

    with _session(ctx) as session:
        try:
            data = organisation.parse_organisation(Path(path).read_text(encoding="utf-8"), path)
            counts = organisation.load_organisation(session, data, actor="cli", now=_now())
        except EngineError as err:
            _fail(err.message)
    click.echo(f"{counts['agencies']} agencies, {counts['officers']} officers loaded.")


@main.command()
@click.option("--at", "at", default=None, help="Sweep as of this ISO 8601 instant (default: now).")
@click.pass_context
def sweep(ctx: click.Context, at: str | None) -> None:
    """Run one deadline sweep: fire the escalations that are due."""
    from . import escalation

    instant = _parse_instant(at) if at else _now()
    engine = make_engine(ctx.obj.database_url)
    try:
        report = escalation.sweep(make_session_factory(engine), instant)
    finally:
        engine.dispose()
    click.echo(f"{report.fired} escalations fired, {report.messages} messages queued, {report.failed} failed.")


@main.command()
@click.option("--sweep-seconds", default=60, show_default=True, type=int)
@click.pass_context
def worker(ctx: click.Context, sweep_seconds: int) -> None:
    """Run the background jobs (deadline sweep, outbox sender) until stopped."""
    from . import notify
    from .scheduler import build_scheduler

    settings: config.Settings = ctx.obj
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    channels = notify.channels_from_settings(settings)
    scheduler = build_scheduler(
        sessions,
        deliver=lambda now: notify.deliver_due(sessions, channels, now),
        sweep_seconds=sweep_seconds,
        deliver_seconds=int(settings.outbox_interval or 15),
    )
    click.echo(f"Worker running (sweep every {sweep_seconds} s); Ctrl+C to stop.")
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        engine.dispose()


@main.command()
@click.option("--quick", is_flag=True, help="Smaller data: the same figures in about two minutes.")
@click.option("--postgres", "postgres_url", envvar="MOTCUA_BENCH_POSTGRES_URL", default=None, metavar="URL",
              help="PostgreSQL server to measure on as well; the benchmark creates its own databases there (motcua_bench_*, "
                   "motcua_scale_*) and drops them afterwards.")
@click.option("--scale/--no-scale", default=True,
              help="Also the scale scenarios: calendar, deadline sweep and inbox over a million open steps, HTTP under "
                   "gunicorn (PostgreSQL), a web worker's memory (default: on).")
def bench(quick: bool, postgres_url: str | None, scale: bool) -> None:
    """Benchmark the engine: one JSON object of medians, then tables with the targets."""
    from . import bench as bench_module

    bench_module.main(quick=quick, postgres_url=postgres_url, scale=scale)


@main.command("bench-reports")
@click.argument("url")
@click.option("--steps", default=1_000_000, show_default=True, type=click.IntRange(1), help="Completed steps to write.")
@click.option("--time-only", is_flag=True, help="Only time the reports on a database filled before.")
def bench_reports_command(url: str, steps: int, time_only: bool) -> None:
    """Time the bottleneck query and the yearly report over a year of history written into the empty database URL."""
    from . import bench_reports

    bench_reports.main([url, "--steps", str(steps), *(["--time-only"] if time_only else [])])


def _run_simulation(ctx: click.Context, dossiers: int, months: float, end: datetime, seed: int) -> None:
    from . import simulate as simulator

    settings: config.Settings = ctx.obj
    engine = make_engine(settings.database_url)
    start = end - timedelta(days=round(months * 30.44))
    plan = simulator.SimulationPlan(start=start, end=end, dossiers=dossiers, seed=seed)
    click.echo(f"Mô phỏng {dossiers} hồ sơ từ {start:%d/%m/%Y} đến {end:%d/%m/%Y} (seed {seed})…", err=True)

    def progress(done: int, total: int, now: datetime) -> None:
        click.echo(f"\r  {done}/{total} hồ sơ ({100 * done // max(total, 1)} %), đến {now:%d/%m/%Y}", nl=False, err=True)

    try:
        report = simulator.simulate(make_session_factory(engine), plan, progress=progress)
    except EngineError as err:
        _fail(str(err))
    finally:
        engine.dispose()
    click.echo("", err=True)
    click.echo(json.dumps(report.as_dict(), ensure_ascii=False))


@main.command("simulate")
@click.option("--dossiers", default=400, show_default=True, type=click.IntRange(0), help="How many dossiers arrive.")
@click.option("--months", default=3.0, show_default=True, type=click.FloatRange(0.1, 120), help="Length of the period.")
@click.option("--end", "end_text", default=None, metavar="ISO", help="End of the period (default: now).")
@click.option("--seed", default=2026, show_default=True, type=int, help="The same seed gives the same history.")
@click.pass_context
def simulate_command(ctx: click.Context, dossiers: int, months: float, end_text: str | None, seed: int) -> None:
    """Generate months of history through the engine's use cases (needs the organisation and procedures)."""
    _run_simulation(ctx, dossiers, months, _parse_instant(end_text) if end_text else _now(), seed)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--no-serve", is_flag=True, help="Set up the demo data and stop.")
@click.option("--simulated", default=400, show_default=True, type=click.IntRange(0),
              help="Dossiers of the simulated last quarter (0: none); skipped when dossiers exist.")
@click.pass_context
def demo(ctx: click.Context, host: str, port: int, no_serve: bool, simulated: int) -> None:
    """Set up the embedded database with the demo province and the bundled procedures, then serve."""
    from . import organisation

    ctx.invoke(init_db)
    with _session(ctx) as session:
        for path in sorted((PROCESSES_DIR / "demo").glob("*.yaml")):
            counts = organisation.load_organisation(
                session, organisation.parse_organisation(path.read_text(encoding="utf-8"), path.name), actor="demo", now=_now()
            )
            click.echo(f"{path.name}: {counts['agencies']} agencies, {counts['officers']} officers (password: motcua-demo)")
        files = {path.name: path.read_bytes() for path in sorted(PROCESSES_DIR.glob("*.bpmn"))}
        for bundle in bpmn.procedure_bundles(files):
            try:
                result = services.deploy(session, bundle, actor="demo", now=_now())
                click.echo(f"{result.code} version {result.version}: {result.name}")
            except DeploymentRejected as err:
                click.echo(f"Skipped {', '.join(bundle)}:", err=True)
                _print_problems(err.problems)
        has_dossiers = session.scalar(select(func.count()).select_from(Dossier)) or 0
    if simulated and not has_dossiers:
        _run_simulation(ctx, simulated, 3.0, _now(), 2026)
    click.echo("Demo accounts (password motcua-demo): motcua.phuocan (receptionist), chuyenvien.phuocan (officer), "
               "lanhdao.phuocan (leader), chuyenvien.vpdk, chuyenvien.thue, chuyenvien.congan, chuyenvien.bhxh, "
               "giamsat.tinh (supervisor), thietke.tinh (designer), admin.tinh (administrator) — see processes/demo/dong-nai.yaml")
    if not no_serve:
        ctx.invoke(serve, host=host, port=port, with_worker=True)


@main.command("soak")
@click.option("--url", default="http://127.0.0.1:5000", show_default=True, help="The running server (http://127.0.0.1 only).")
@click.option("--seconds", default=60.0, show_default=True, type=click.FloatRange(min=1, max=86_400), help="Length of the run.")
@click.option("--clients", default=6, show_default=True, type=click.IntRange(1, 64), help="Client threads.")
@click.option("--seed", default=2026, show_default=True, type=int)
@click.option("--password", envvar="MOTCUA_SOAK_PASSWORD", default="motcua-demo", show_default=True,
              help="Password of the demo accounts.")
def soak_command(url: str, seconds: float, clients: int, seed: int, password: str) -> None:
    """Drive one-stop work over HTTP against a running server; print the report as JSON.

    Exit 1 on any 5xx, unexpected 4xx or broken connection.
    """
    from . import soak

    def progress(elapsed: float, requests: int, dossiers: int) -> None:
        click.echo(f"{elapsed:6.0f} s {requests:8d} requests {dossiers:6d} dossiers", err=True)

    try:
        report = soak.run(url, password, seconds, seed, clients=clients, progress=progress)
    except (ValueError, RuntimeError) as err:
        _fail(str(err))
    click.echo(report.table(), err=True)
    click.echo(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
    if not report.ok:
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
