"""Supervisors' pages: dashboard, bottleneck heat map with drill-down, periodic reports, what-if."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import datetime, time, timedelta

import openpyxl
import pytest
from flask import Flask
from lxml import html as lxml_html
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from engine import auth, organisation
from engine.core.calendar import VN_TZ
from engine.persistence.db import make_session_factory
from engine.persistence.models import Dossier, Procedure, ProcedureVersion, Task
from engine.simulate import SimulationPlan, simulate

from .conftest import _postgres_engine, _sqlite_engine
from .web_support import PHUOC_AN, login, make_app, seed, wall_clock

PROCEDURES = ("dang-ky-khai-sinh.bpmn", "chung-thuc-ban-sao.bpmn")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def web(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, Engine]]:
    engines = (_sqlite_engine(tmp_path_factory.mktemp("giam-sat")),) if request.param == "sqlite" else None
    generator = None
    if engines is None:
        generator = _postgres_engine()
        engines = (next(generator),)
    engine = engines[0]
    seed(engine, accounts=("giamsat.tinh", "chuyenvien.phuocan"), procedures=PROCEDURES)
    with Session(engine) as session:
        organisation.load_organisation(session, {"officers": [
            {"username": "giamsat.phuocan", "full_name": "Kha Thị Giám", "roles": [{"agency": PHUOC_AN, "role": "supervisor"}]},
        ]}, "admin", wall_clock())
        auth.set_password(session, "giamsat.phuocan", "motcua-demo")
    end = wall_clock()
    plan = SimulationPlan(start=end - timedelta(days=40), end=end, dossiers=60, seed=4,
                          mix={"2.000815": 2, "1.001193": 1}, bottlenecks={"kiem_tra": 3.0})
    assert simulate(make_session_factory(engine), plan).errors == []
    yield make_app(engine), engine
    engine.dispose()
    if generator is not None:
        generator.close()


def _page(app: Flask, username: str, path: str) -> tuple[int, str]:
    client = app.test_client()
    login(client, username)
    reply = client.get(path)
    return reply.status_code, reply.get_data(as_text=True)


def test_dashboard_shows_the_periods_figures_charts_and_tables(web: tuple[Flask, Engine]) -> None:
    app, engine = web
    status, page = _page(app, "giamsat.tinh", "/giam-sat")
    assert status == 200
    doc = lxml_html.fromstring(page)
    figures = {div.findtext("span"): div.findtext("strong") for div in doc.xpath("//div[@class='so-lieu']/div")}
    first = (wall_clock().date().replace(day=1) - timedelta(days=150)).replace(day=1)
    start = datetime.combine(first, time(0), VN_TZ)
    with Session(engine) as session:
        received = session.scalar(select(func.count()).select_from(Dossier).where(Dossier.received_at >= start))
    assert int(figures["Tiếp nhận"]) == received == 60
    assert len(doc.xpath("//svg[contains(@class, 'bieu-do')]")) == 2  # trend and load
    assert "<script" not in page
    assert "UBND xã Phước An" in page and "Mức độ hài lòng" in page


def test_only_supervisors_and_only_their_agencies(web: tuple[Flask, Engine]) -> None:
    app, _engine = web
    assert _page(app, "chuyenvien.phuocan", "/giam-sat")[0] == 403
    assert app.test_client().get("/giam-sat").status_code == 302  # to the sign-in page
    status, page = _page(app, "giamsat.phuocan", "/giam-sat")
    assert status == 200 and "UBND xã Phước An" in page and "UBND xã Long Thọ" not in page
    assert _page(app, "giamsat.phuocan", "/giam-sat?co-quan=000.17.23.H19")[0] == 403


def test_bottleneck_heat_map_and_drill_down_to_the_late_dossiers(web: tuple[Flask, Engine]) -> None:
    app, engine = web
    status, page = _page(app, "giamsat.tinh", "/giam-sat/diem-nghen?thu-tuc=2.000815")
    assert status == 200
    doc = lxml_html.fromstring(page)
    heated = {g.get("data-element-id"): float(g.get("data-heat")) for g in doc.xpath("//*[@data-heat]")}
    assert heated["kiem_tra"] == max(heated.values()) > 0  # the slowed step is the hottest
    link = next(a.get("href") for a in doc.xpath("//a[@href]") if "chi-tieu=late" in (a.get("href") or "") and "buoc=kiem_tra" in a.get("href"))
    status, listing = _page(app, "giamsat.tinh", link.replace("&amp;", "&"))
    assert status == 200
    shown = set(re.findall(r">(000\.\d\d\.\d\d\.H19-\d{6}-\d{4})<", listing))
    with Session(engine) as session:
        late = set(session.scalars(
            select(Dossier.code).join(Task, Task.dossier_id == Dossier.id).where(Task.step_id == "kiem_tra", Task.result == "late")
        ))
    assert shown == late and late


def test_periodic_report_on_screen_and_as_excel_pdf_csv(web: tuple[Flask, Engine]) -> None:
    app, _engine = web
    today = wall_clock().date()
    period = f"Q{(today.month - 1) // 3 + 1}-{today.year}"
    client = app.test_client()
    login(client, "giamsat.tinh")
    page = client.get(f"/giam-sat/bao-cao?ky={period}").get_data(as_text=True)
    assert "Tổng cộng" in page and "UBND xã Phước An" in page
    book = openpyxl.load_workbook(io.BytesIO(client.get(f"/giam-sat/bao-cao?ky={period}&dinh-dang=xlsx").get_data()))
    text = " ".join(str(c.value) for sheet in book for row in sheet.iter_rows() for c in row if c.value is not None)
    assert "UBND xã Phước An" in text
    assert client.get(f"/giam-sat/bao-cao?ky={period}&dinh-dang=pdf").get_data().startswith(b"%PDF")
    rows = list(csv.reader(io.StringIO(client.get(f"/giam-sat/bao-cao?ky={period}&dinh-dang=csv").get_data(as_text=True).lstrip("\ufeff"))))
    assert len(rows) > 2
    table = client.get("/giam-sat/tai-ve?bang=co-quan&dinh-dang=csv")
    assert table.status_code == 200 and "000.17.22.H19" in table.get_data(as_text=True)
    assert client.get("/giam-sat/tai-ve?bang=khong-co&dinh-dang=csv").status_code == 404


def test_what_if_page_compares_the_replay_with_what_happened(web: tuple[Flask, Engine]) -> None:
    app, engine = web
    with Session(engine) as session:  # every copy received in the period, whatever became of it afterwards
        copies = session.scalar(
            select(func.count()).select_from(Dossier)
            .join(ProcedureVersion, ProcedureVersion.id == Dossier.procedure_version_id)
            .join(Procedure, Procedure.id == ProcedureVersion.procedure_id)
            .where(Procedure.code == "2.000815")
        )
    client = app.test_client()
    login(client, "giamsat.tinh")
    form = client.get("/giam-sat/mo-phong?thu-tuc=2.000815").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    first = (wall_clock() - timedelta(days=40)).date().isoformat()
    reply = client.post("/giam-sat/mo-phong", data={
        "csrf_token": token, "thu-tuc": "2.000815", "tu": first, "den": wall_clock().date().isoformat(),
        "phan-bo-kiem_tra": "0.25 giờ làm việc",
    })
    assert reply.status_code == 200
    page = reply.get_data(as_text=True)
    assert "Mô phỏng với thay đổi" in page and f"{copies} hồ sơ tiếp nhận trong kỳ" in page
    bad = client.post("/giam-sat/mo-phong", data={"csrf_token": token, "thu-tuc": "2.000815", "phan-bo-kiem_tra": "5 ngày làm việc"})
    assert bad.status_code == 200 and "không hợp lệ" in bad.get_data(as_text=True)
