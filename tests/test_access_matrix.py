"""Every role against every endpoint and page: who may, who gets 401/403.

The policy below is the specification: for each endpoint, the demo accounts
that may use it. Everyone else signed in gets 403, and nobody signed in gets
401 (pages: a redirect to the sign-in page). Allowed accounts may still be
told 404/409/422 by the use case (the dossier is in the wrong state, the body
is incomplete) — what matters here is that the door was opened. Each case
runs the refused accounts first, on a dossier prepared for it, so no allowed
call changes the state a refused one is judged in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from engine import auth, lifecycle, services

from .conftest import _sqlite_engine
from .web_support import PASSWORD, PHUOC_AN, csrf_of, login, make_app, seed, wall_clock

DESK, OFFICER, HEAD, LEADER = "motcua.phuocan", "chuyenvien.phuocan", "truongphong.phuocan", "lanhdao.phuocan"
OTHER_COMMUNE = "chuyenvien.longtho"
SUPERVISOR, DESIGNER, ADMIN = "giamsat.tinh", "thietke.tinh", "admin.tinh"
ACCOUNTS = (DESK, OFFICER, HEAD, LEADER, OTHER_COMMUNE, SUPERVISOR, DESIGNER, ADMIN)
EVERYONE = frozenset(ACCOUNTS)
PHUOC_AN_STAFF = frozenset({DESK, OFFICER, HEAD, LEADER})
SEES_PHUOC_AN = PHUOC_AN_STAFF | {SUPERVISOR}
CODE = "2.000815"  # chứng thực: desk → officer checks → officer records → leader signs → desk returns
PUBLIC = None  # no sign-in needed


@dataclass
class World:
    app: Flask
    engine: Engine
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    engine = _sqlite_engine(tmp_path_factory.mktemp("quyen"))
    seed(engine, accounts=ACCOUNTS, procedures=("chung-thuc-ban-sao.bpmn",))
    with Session(engine) as session:
        tokens = {name: auth.login(session, name, PASSWORD, wall_clock())[0] for name in ACCOUNTS}
    yield World(make_app(engine), engine, tokens)
    engine.dispose()


def _dossier(world: World, until: str | None = "kiem_tra", claimed: bool = False) -> tuple[str, int]:
    """A fresh dossier at Phước An, moved on until step ``until`` is open (claimed by its officer if asked)."""
    now = wall_clock()
    with Session(world.engine, expire_on_commit=False) as session:
        code = services.start_dossier(session, CODE, {}, DESK, now, agency_code=PHUOC_AN,
                                      applicant={"name": "Lương Văn Tín", "phone": "0905111222"}).code
        forms = {"tiep_nhan": {"so_ban_sao": 1, "so_trang": 1}, "kiem_tra": {"hop_le": True}, "ghi_loi_chung": {"so_chung_thuc": "1"},
                 "ky_chung_thuc": {"nguoi_ky": "Phạm Văn Sơn"}, "tra_ket_qua": {"phi_da_thu": 2000}}
        who = {"receptionist": DESK, "officer": OFFICER, "leader": LEADER}
        while True:
            tasks = services.open_tasks(session, code)
            if not tasks:
                return code, 0
            task = tasks[0]
            if task.step_id == until:
                if claimed and not task.assignee:
                    lifecycle.claim(session, task.id, who[task.role], now)
                return code, task.id
            if not task.assignee:
                lifecycle.claim(session, task.id, who[task.role], now)
            now += timedelta(minutes=5)
            services.complete_task(session, task.id, forms[task.step_id], who[task.role], now)


@dataclass
class Case:
    name: str
    allowed: frozenset[str] | None  # None: public
    prepare: Callable[[World], dict[str, Any]]  # → format values for the path and body
    method: str
    path: str
    body: dict[str, Any] | None = None


def _none(world: World) -> dict[str, Any]:
    return {}


def _open(until: str | None = "kiem_tra", claimed: bool = False) -> Callable[[World], dict[str, Any]]:
    def prepare(world: World) -> dict[str, Any]:
        code, task = _dossier(world, until, claimed)
        return {"code": code, "task": task}
    return prepare


API_CASES = [
    Case("me", EVERYONE, _none, "GET", "/api/v1/auth/me"),
    Case("agencies", PUBLIC, _none, "GET", "/api/v1/agencies"),
    Case("calendar", PUBLIC, _none, "GET", "/api/v1/calendar/overrides"),
    Case("calendar-add", frozenset({ADMIN}), _none, "POST", "/api/v1/calendar/overrides", {"day": "2027-12-31", "kind": "day_off"}),
    Case("officers", frozenset({ADMIN, SUPERVISOR}), _none, "GET", "/api/v1/officers"),
    Case("organisation", frozenset({ADMIN}), _none, "POST", "/api/v1/organisation", {"agencies": []}),
    Case("procedures", PUBLIC, _none, "GET", "/api/v1/procedures"),
    Case("procedure", PUBLIC, _none, "GET", f"/api/v1/procedures/{CODE}"),
    Case("deploy", frozenset({DESIGNER}), _none, "POST", "/api/v1/procedures"),
    Case("receive", frozenset({DESK}), _none, "POST", "/api/v1/dossiers",
         {"procedure_code": CODE, "agency_code": PHUOC_AN, "applicant": {"name": "Mai Văn Tư", "phone": "0901000111"}}),
    Case("search", EVERYONE, _none, "GET", "/api/v1/dossiers"),
    Case("dossier", SEES_PHUOC_AN, _open(), "GET", "/api/v1/dossiers/{code}"),
    Case("history", SEES_PHUOC_AN, _open(), "GET", "/api/v1/dossiers/{code}/history"),
    Case("form-01", SEES_PHUOC_AN, _open(), "GET", "/api/v1/dossiers/{code}/forms/01"),
    Case("supplement", PHUOC_AN_STAFF, _open(), "POST", "/api/v1/dossiers/{code}/supplement-request", {"items": ["Bản sao"]}),
    Case("supplement-in", PHUOC_AN_STAFF, _open(), "POST", "/api/v1/dossiers/{code}/supplement-received", {}),
    Case("payment", PHUOC_AN_STAFF, _open(), "POST", "/api/v1/dossiers/{code}/payment-request", {"items": ["Lệ phí"]}),
    Case("payment-in", PHUOC_AN_STAFF, _open(), "POST", "/api/v1/dossiers/{code}/payment-received", {}),
    Case("withdraw", frozenset({DESK}), _open(), "POST", "/api/v1/dossiers/{code}/withdraw", {"reason": "Rút"}),
    Case("stop", frozenset({HEAD, LEADER}), _open(), "POST", "/api/v1/dossiers/{code}/stop", {"reason": "Dừng"}),
    Case("recall", PHUOC_AN_STAFF, _open(), "POST", "/api/v1/dossiers/{code}/recall", {"reason": "Nhầm"}),
    Case("apology", PHUOC_AN_STAFF, _open(), "POST", "/api/v1/dossiers/{code}/apology",
         {"new_due_at": "2030-01-02T10:00:00+07:00", "reason": "Cần xác minh thêm", "agency_code": PHUOC_AN, "approved_by": LEADER}),
    Case("reset", frozenset({HEAD, LEADER}), _open("ky_chung_thuc"), "POST", "/api/v1/dossiers/{code}/reset",
         {"step_id": "kiem_tra", "reason": "Xem lại"}),
    Case("return-result", frozenset({DESK}), _open(None), "POST", "/api/v1/dossiers/{code}/return-result", {"channel": "desk"}),
    Case("inbox", EVERYONE, _none, "GET", "/api/v1/tasks/inbox"),
    Case("claim", frozenset({OFFICER}), _open(), "POST", "/api/v1/tasks/{task}/claim"),
    Case("unclaim", frozenset({OFFICER, HEAD, LEADER}), _open(claimed=True), "POST", "/api/v1/tasks/{task}/unclaim"),  # the holder, or a leader there
    Case("complete", frozenset({OFFICER}), _open(claimed=True), "POST", "/api/v1/tasks/{task}/complete", {"data": {"hop_le": True}}),
    Case("return", frozenset({OFFICER}), _open("ghi_loi_chung", claimed=True), "POST", "/api/v1/tasks/{task}/return", {"reason": "Sai"}),
    Case("transfer", frozenset({OFFICER}), _open(claimed=True), "POST", "/api/v1/tasks/{task}/transfer", {"to": OFFICER}),
    Case("reassign", frozenset({HEAD, LEADER}), _open(claimed=True), "POST", "/api/v1/tasks/{task}/reassign", {"to": OFFICER}),
    Case("report-on-time", frozenset({SUPERVISOR}), _none, "GET", "/api/v1/reports/on-time"),
    Case("report-bottlenecks", frozenset({SUPERVISOR}), _none, "GET", f"/api/v1/reports/bottlenecks?procedure={CODE}"),
    Case("report-drill-down", frozenset({SUPERVISOR}), _none, "GET", "/api/v1/reports/drill-down?metric=late"),
    Case("report-satisfaction", frozenset({SUPERVISOR}), _none, "GET", "/api/v1/reports/satisfaction"),
    Case("report-periodic", frozenset({SUPERVISOR}), _none, "GET", "/api/v1/reports/periodic?period=2026"),
    Case("fees", SEES_PHUOC_AN, _open(), "GET", "/api/v1/dossiers/{code}/fees"),
    Case("payment-desk", frozenset({DESK}), _open(), "POST", "/api/v1/dossiers/{code}/payments",
         {"fee_code": "le_phi", "amount": 1000, "receipt_number": "BL-1", "method": "desk"}),
    Case("results", SEES_PHUOC_AN, _open(), "GET", "/api/v1/dossiers/{code}/results"),
    Case("result-upload", frozenset({OFFICER}), _open(claimed=True), "POST", "/api/v1/tasks/{task}/result"),
    Case("public-lookup", PUBLIC, _open(), "GET", "/api/v1/public/dossiers/{code}?secret=1222"),
]


def _call(client: FlaskClient, case: Case, token: str | None, values: dict[str, Any]) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    path = case.path.format(**values)
    if case.method == "GET":
        return client.get(path, headers=headers).status_code
    return client.post(path, json=case.body, headers=headers).status_code


@pytest.mark.parametrize("case", API_CASES, ids=lambda c: c.name)
def test_api_endpoint_admits_exactly_its_roles(world: World, case: Case) -> None:
    client = world.app.test_client()
    values = case.prepare(world)
    if case.allowed is PUBLIC:
        assert _call(client, case, None, values) not in (401, 403)
        return
    assert _call(client, case, None, values) == 401, "anonymous"
    refused = [name for name in ACCOUNTS if name not in case.allowed]
    wrong = {name: status for name in refused if (status := _call(client, case, world.tokens[name], values)) != 403}
    assert wrong == {}, f"{case.name}: these should get 403"
    for name in sorted(case.allowed):
        status = _call(client, case, world.tokens[name], values)
        assert status not in (401, 403), f"{case.name}: {name} was refused"


def test_every_api_route_is_in_the_matrix(world: World) -> None:
    """A new endpoint must be added to the policy above (or to the list of other suites' routes)."""
    covered = {(c.method, c.path.split("?")[0].replace("{code}", "<code>").replace("{task}", "<int:task_id>")
                .replace("/forms/01", "/forms/<form>").replace(f"/procedures/{CODE}", "/procedures/<code>")) for c in API_CASES}
    covered |= {("POST", "/api/v1/auth/login"), ("POST", "/api/v1/auth/logout"),  # tested in test_auth / test_api
                ("GET", "/api/v1/openapi.json"), ("POST", "/api/v1/public/dossiers/<code>/rating"), ("POST", "/api/v1/public/feedback"),
                ("GET", "/api/v1/procedures/<code>/versions"), ("GET", "/api/v1/procedures/<code>/versions/<int:version>/files/<filename>"),
                ("GET", "/api/v1/procedures/<code>"),
                # signed by the portal's or the payment gateway's secret, not by an officer: test_portal, test_fees
                ("POST", "/api/v1/portal/dossiers"), ("GET", "/api/v1/portal/dossiers/<string:ma_ho_so>"),
                ("POST", "/api/v1/portal/dossiers/<string:ma_ho_so>/retry"), ("POST", "/api/v1/payments/callback")}
    routes = {(method, rule.rule.replace("<string:code>", "<code>")) for rule in world.app.url_map.iter_rules()
              if rule.rule.startswith("/api/v1") for method in rule.methods - {"HEAD", "OPTIONS"}}
    missing = {r for r in routes if r not in covered}
    assert missing == set()


PAGES = [
    ("/lam-viec", EVERYONE),
    ("/ho-so", EVERYONE),
    ("/cong-viec", PHUOC_AN_STAFF | {OTHER_COMMUNE}),
    ("/tiep-nhan", frozenset({DESK})),
    ("/thu-tuc/tai-len", frozenset({DESIGNER})),
    ("/giam-sat", frozenset({SUPERVISOR})),
    ("/giam-sat/diem-nghen", frozenset({SUPERVISOR})),
    ("/giam-sat/bao-cao", frozenset({SUPERVISOR})),
    ("/giam-sat/mo-phong", frozenset({SUPERVISOR})),
    ("/ho-so/{code}", SEES_PHUOC_AN),
    ("/ho-so/{code}/mau/01", SEES_PHUOC_AN),
    ("/cong-viec/{task}", PHUOC_AN_STAFF),
]


def _signed_in(world: World, name: str) -> FlaskClient:
    client = world.app.test_client()
    assert login(client, name).status_code == 302
    return client


@pytest.fixture(scope="module")
def clients(world: World) -> dict[str, FlaskClient]:
    return {name: _signed_in(world, name) for name in ACCOUNTS}


@pytest.mark.parametrize(("path", "allowed"), PAGES, ids=[p for p, _ in PAGES])
def test_page_admits_exactly_its_roles(world: World, clients: dict[str, FlaskClient], path: str, allowed: frozenset[str]) -> None:
    code, task = _dossier(world)
    target = path.format(code=code, task=task)
    anonymous = world.app.test_client().get(target)
    assert anonymous.status_code == 302 and "/dang-nhap" in anonymous.headers["Location"]
    answers = {name: clients[name].get(target).status_code for name in ACCOUNTS}
    assert {n: s for n, s in answers.items() if n not in allowed and s != 403} == {}
    assert {n: s for n, s in answers.items() if n in allowed and s in (401, 403)} == {}


def test_page_actions_check_the_role_too(world: World, clients: dict[str, FlaskClient]) -> None:
    """A form posted by someone whose role does not allow it is refused, with the CSRF token valid."""
    code, task = _dossier(world)
    client = clients[SUPERVISOR]
    token = csrf_of(client.get("/giam-sat").get_data(as_text=True))
    for path, data in ((f"/cong-viec/{task}/nhan", {}), (f"/ho-so/{code}/rut-ho-so", {"ly-do": "x", "reason": "x"})):
        assert client.post(path, data={**data, "csrf_token": token}).status_code == 403
    with Session(world.engine) as session:
        assert services.open_tasks(session, code)[0].assignee is None  # nothing changed
