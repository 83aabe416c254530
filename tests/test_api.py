"""The JSON API over real HTTP: the app under a real WSGI server on loopback,
on SQLite and PostgreSQL — a full dossier, the authorisation matrix, tokens,
concurrency and errors."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from waitress import create_server

from api import schemas
from api.app import create_app
from engine import auth, organisation, services

from .conftest import FIXTURES, fixture_bytes
from .test_lifecycle import XA, XA2_DESK

PASSWORD = "mat-khau-an-toan"
OFFICERS = ("lan.desk", "hung.xa", "mai.vpdk", "son.vpdk", "tuan.vpdk", "ha.vpdk", "binh.thue", "giam.sat", "long.desk")


@dataclass
class Client:
    base: str

    def call(self, method: str, path: str, token: str | None = None, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                return response.status, _decode(raw, response.headers), response.headers
        except urllib.error.HTTPError as err:
            raw = err.read()
            return err.code, _decode(raw, err.headers), err.headers

    def login(self, username: str, password: str = PASSWORD) -> str:
        status, body, _ = self.call("POST", "/api/v1/auth/login", body={"username": username, "password": password})
        assert status == 200, body
        return body["token"]


def _decode(raw: bytes, headers: Any) -> Any:
    kind = headers.get("Content-Type", "")
    return json.loads(raw) if "json" in kind and raw else raw


@pytest.fixture
def client(db_engine: Engine, now: datetime) -> Iterator[Client]:
    with Session(db_engine, expire_on_commit=False) as session:
        organisation.load_organisation(
            session, organisation.parse_organisation((FIXTURES / "org_two_tier.yaml").read_text(), "org.yaml"), "admin", now
        )
        extra = "officers:\n  - {username: thiet.ke, full_name: Đinh Văn Thiết, roles: [{agency: 000.00.00.H19, role: designer}]}\n" \
                "  - {username: quan.tri, full_name: Mạc Thị Quản, roles: [{agency: 000.00.00.H19, role: administrator}]}\n"
        organisation.load_organisation(session, organisation.parse_organisation(extra), "admin", now)
        for username in (*OFFICERS, "thiet.ke", "quan.tri"):
            auth.set_password(session, username, PASSWORD)
        services.deploy(session, fixture_bytes("land_joint.bpmn"), actor="designer", now=now)
    app = create_app(database_url=db_engine.url.render_as_string(hide_password=False))
    server = create_server(app, host="127.0.0.1", port=0, threads=4)
    stopping = threading.Event()

    def serve() -> None:
        try:
            server.run()
        except OSError:  # closing the listening socket ends waitress' select loop this way
            if not stopping.is_set():
                raise

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield Client(f"http://127.0.0.1:{server.effective_port}")
    finally:
        stopping.set()
        server.task_dispatcher.shutdown()
        server.close()
        thread.join(timeout=10)
        app.extensions["motcua.engine"].dispose()


def _receive(client: Client, token: str, key: str | None = None) -> tuple[int, Any]:
    body = {
        "procedure_code": "1.999010",
        "agency_code": XA,
        "applicant": {"name": "Nguyễn Văn An", "phone": "0987654321"},
        "data": {"thua_dat": "Tờ 12, thửa 345"},
    }
    status, out, _ = client.call("POST", "/api/v1/dossiers", token, body, {"Idempotency-Key": key} if key else None)
    return status, out


def test_full_dossier_over_http(client: Client) -> None:
    desk = client.login("lan.desk")
    key = str(uuid.uuid4())
    status, dossier = _receive(client, desk, key)
    assert status == 201, dossier
    assert dossier["status"] == 2 and dossier["status_label"] == "Được tiếp nhận"
    again_status, again = _receive(client, desk, key)  # the client retried: same dossier, not a second one
    assert (again_status, again["code"]) == (201, dossier["code"])
    code = dossier["code"]
    actors = {"receive": "lan.desk", "confirm": "hung.xa", "survey": "mai.vpdk", "tax": "binh.thue", "give_back": "lan.desk"}
    tokens = {name: client.login(name) for name in set(actors.values())}
    while True:
        status, current, _ = client.call("GET", f"/api/v1/dossiers/{code}", desk)
        if not current["open_tasks"]:
            break
        task = current["open_tasks"][0]
        token = tokens[actors[task["step_id"]]]
        _, inbox, _ = client.call("GET", "/api/v1/tasks/inbox", token)
        assert task["id"] in [t["id"] for t in inbox["queue"]]
        status, claimed, _ = client.call("POST", f"/api/v1/tasks/{task['id']}/claim", token)
        assert (status, claimed["state"]) == (200, "claimed")
        status, after, _ = client.call("POST", f"/api/v1/tasks/{task['id']}/complete", token, {"data": {f"ok_{task['step_id']}": True}})
        assert status == 200, after
        status, twice, _ = client.call("POST", f"/api/v1/tasks/{task['id']}/complete", token, {"data": {}})
        assert status == 409 and twice["status"] == 409
    assert current["status"] == 9
    status, returned, _ = client.call("POST", f"/api/v1/dossiers/{code}/return-result", desk, {"channel": "desk"})
    assert (status, returned["status"]) == (200, 10)
    status, problem, _ = client.call("POST", f"/api/v1/dossiers/{code}/return-result", desk, {"channel": "desk"})
    assert status == 409 and "already returned" in problem["detail"]
    status, history, _ = client.call("GET", f"/api/v1/dossiers/{code}/history", desk)
    assert [e["action"] for e in history][:2] == ["dossier.receive", "task.ready"]
    status, pdf, headers = client.call("GET", f"/api/v1/dossiers/{code}/forms/05", desk)
    assert status == 200 and headers["Content-Type"] == "application/pdf" and pdf.startswith(b"%PDF")
    status, page, _ = client.call("GET", "/api/v1/dossiers?applicant=Nguy%E1%BB%85n&page_size=5", desk)
    assert page["total"] == 1 and page["items"][0]["code"] == code


def test_authorisation_matrix(client: Client) -> None:
    desk = client.login("lan.desk")
    _, dossier = _receive(client, desk)
    code, task_id = dossier["code"], dossier["open_tasks"][0]["id"]
    other_desk = client.login("long.desk")  # a receptionist of another commune
    supervisor = client.login("giam.sat")  # the province's supervising office
    officer = client.login("hung.xa")
    designer = client.login("thiet.ke")
    admin = client.login("quan.tri")
    cases = [
        # (who, method, path, body, expected status)
        (None, "GET", f"/api/v1/dossiers/{code}", None, 401),
        (other_desk, "GET", f"/api/v1/dossiers/{code}", None, 403),
        (other_desk, "POST", f"/api/v1/tasks/{task_id}/claim", None, 403),
        (other_desk, "POST", f"/api/v1/dossiers/{code}/withdraw", {"reason": "x"}, 403),
        (supervisor, "GET", f"/api/v1/dossiers/{code}", None, 200),
        (supervisor, "POST", f"/api/v1/dossiers/{code}/withdraw", {"reason": "x"}, 403),
        (officer, "GET", f"/api/v1/dossiers/{code}", None, 200),
        (officer, "POST", f"/api/v1/tasks/{task_id}/claim", None, 403),  # an officer, not a receptionist
        (desk, "POST", "/api/v1/calendar/overrides", {"day": "2026-12-31", "kind": "day_off"}, 403),
        (admin, "POST", "/api/v1/calendar/overrides", {"day": "2026-12-31", "kind": "day_off", "note": "Nghỉ bù"}, 201),
        (desk, "POST", "/api/v1/procedures", None, 403),
        (officer, "POST", "/api/v1/dossiers", {"procedure_code": "1.999010", "agency_code": XA, "applicant": {"name": "A"}}, 403),
        (other_desk, "POST", "/api/v1/dossiers", {"procedure_code": "1.999010", "agency_code": XA2_DESK, "home_agency_code": XA, "applicant": {"name": "B"}}, 201),
    ]
    for who, method, path, body, expected in cases:
        status, answer, _ = client.call(method, path, who, body)
        assert status == expected, (method, path, answer)
        if status >= 400:
            assert answer["status"] == status and answer["detail"]
    status, page, _ = client.call("GET", "/api/v1/dossiers", other_desk)
    assert code not in [item["code"] for item in page["items"]]  # search never shows other communes' dossiers
    status, deployed, _ = client.call("GET", "/api/v1/procedures/1.999010", designer)
    assert status == 200 and deployed["steps"]


def test_tokens_expire_on_logout_and_failed_logins_slow_down(client: Client) -> None:
    token = client.login("lan.desk")
    assert client.call("GET", "/api/v1/auth/me", token)[0] == 200
    assert client.call("POST", "/api/v1/auth/logout", token)[0] == 204
    status, problem, headers = client.call("GET", "/api/v1/auth/me", token)
    assert status == 401 and headers.get("WWW-Authenticate") == "Bearer"
    statuses = [client.call("POST", "/api/v1/auth/login", body={"username": "hung.xa", "password": "sai"})[0] for _ in range(5)]
    assert statuses[:3] == [401, 401, 401] and 429 in statuses[3:]
    status, problem, headers = client.call("POST", "/api/v1/auth/login", body={"username": "hung.xa", "password": PASSWORD})
    assert status == 429 and int(headers["Retry-After"]) >= 1


def test_two_officers_claim_at_once_over_http(client: Client) -> None:
    desk = client.login("lan.desk")
    _, dossier = _receive(client, desk)
    task_id = dossier["open_tasks"][0]["id"]
    organisation_extra = client.login("lan.desk")  # a second session of a receptionist
    results: list[int] = []
    barrier = threading.Barrier(2)

    def claim(token: str) -> None:
        barrier.wait(timeout=10)
        results.append(client.call("POST", f"/api/v1/tasks/{task_id}/claim", token)[0])

    threads = [threading.Thread(target=claim, args=(t,)) for t in (desk, organisation_extra)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == [200, 409]


def test_bad_requests_get_problem_details_never_500(client: Client) -> None:
    desk = client.login("lan.desk")
    cases = [
        ("POST", "/api/v1/dossiers", {"procedure_code": "1.999010", "agency_code": XA, "applicant": {"name": "A"}, "surprise": 1}, 422, "surprise"),
        ("POST", "/api/v1/dossiers", {"procedure_code": 12, "agency_code": XA, "applicant": {"name": "A"}}, 422, "procedure_code"),
        ("POST", "/api/v1/dossiers", {"procedure_code": "9.999999", "agency_code": XA, "applicant": {"name": "A"}}, 404, None),
        ("GET", "/api/v1/dossiers/NO-SUCH-CODE", None, 404, None),
        ("POST", "/api/v1/tasks/999999/claim", None, 404, None),
        ("GET", "/api/v1/dossiers?status=99", None, 422, "status"),
    ]
    for method, path, body, expected, field in cases:
        status, problem, headers = client.call(method, path, desk, body)
        assert status == expected, (path, problem)
        assert headers["Content-Type"].startswith("application/problem+json")
        assert problem["detail"] and "Traceback" not in json.dumps(problem)
        if field:
            assert field in [e["field"] for e in problem["errors"]]
    request = urllib.request.Request(client.base + "/api/v1/dossiers", data=b"{not json", method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {desk}"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 400
    big = urllib.request.Request(client.base + "/api/v1/dossiers", data=b"x" * (9 * 1024 * 1024), method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {desk}"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(big, timeout=30)
    assert caught.value.code == 413


def test_openapi_document_describes_requests_and_responses(client: Client) -> None:
    status, spec, _ = client.call("GET", "/api/v1/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.")
    receive = spec["paths"]["/api/v1/dossiers"]["post"]
    assert "requestBody" in receive and "201" in receive["responses"]
    body_schema = receive["requestBody"]["content"]["application/json"]["schema"]
    name = body_schema["$ref"].rsplit("/", 1)[-1]
    assert {"procedure_code", "agency_code", "applicant"} <= set(spec["components"]["schemas"][name]["required"])


def test_designer_deploys_over_http_and_sees_the_problems(client: Client) -> None:
    designer = client.login("thiet.ke")
    boundary = "motcua-boundary"

    def multipart(files: dict[str, bytes]) -> bytes:
        parts = b""
        for name, content in files.items():
            parts += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
                      "Content-Type: application/xml\r\n\r\n").encode() + content + b"\r\n"
        return parts + f"--{boundary}--\r\n".encode()

    def deploy(files: dict[str, bytes]) -> tuple[int, Any]:
        request = urllib.request.Request(client.base + "/api/v1/procedures", data=multipart(files), method="POST", headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}", "Authorization": f"Bearer {designer}"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    status, created = deploy(fixture_bytes("parallel_main.bpmn", "parallel_called.bpmn"))
    assert (status, created["code"], created["version"], created["created"]) == (201, "1.999003", 1, True)
    status, again = deploy(fixture_bytes("parallel_main.bpmn", "parallel_called.bpmn"))
    assert (status, again["version"], again["created"]) == (200, 1, False)
    status, rejected = deploy(fixture_bytes("parallel_main.bpmn"))
    assert status == 422
    [problem] = [p for p in rejected["problems"] if p["severity"] == "error"]
    assert problem["element_id"] == "check" and problem["line"] and "Verify" in problem["message"]
    status, xml, _ = client.call("GET", "/api/v1/procedures/1.999003/versions/1/files/parallel_called.bpmn")
    assert status == 200 and b"<bpmn:process" in xml


def test_administrators_manage_the_organisation(client: Client) -> None:
    admin = client.login("quan.tri")
    desk = client.login("lan.desk")
    body = {"agencies": [{"code": "000.17.24.H19", "name": "UBND xã An Phước", "level": "commune", "parent": "000.00.00.H19"}],
            "officers": [{"username": "moi.desk", "full_name": "Tạ Thị Mới", "roles": [{"agency": "000.17.24.H19", "role": "receptionist"}]}]}
    assert client.call("POST", "/api/v1/organisation", desk, body)[0] == 403
    status, counts, _ = client.call("POST", "/api/v1/organisation", admin, body)
    assert (status, counts) == (200, {"agencies": 1, "officers": 1})
    status, officers, _ = client.call("GET", "/api/v1/officers?page_size=200", admin)
    assert {"agency": "000.17.24.H19", "role": "receptionist"} in next(o for o in officers if o["username"] == "moi.desk")["roles"]
    status, agencies, _ = client.call("GET", "/api/v1/agencies?page_size=200")
    assert "000.17.24.H19" in [a["code"] for a in agencies]


def test_the_inbox_answers_exactly_what_its_schema_describes(client: Client, db_engine: Engine) -> None:
    """The inbox skips marshmallow for speed: its JSON must equal the documented schema's dump of the same rows."""
    desk = client.login("lan.desk")
    for _ in range(3):
        assert _receive(client, desk)[0] == 201
    status, page, _ = client.call("GET", "/api/v1/tasks/inbox?page_size=2", desk)
    assert status == 200
    with Session(db_engine) as session:
        expected = schemas.InboxOut().dump(services.inbox(session, "lan.desk", limit=2))
    assert page == json.loads(json.dumps(expected)) and len(page["queue"]) == 2
    claimed = page["queue"][0]["id"]
    assert client.call("POST", f"/api/v1/tasks/{claimed}/claim", desk)[0] == 200
    status, page, _ = client.call("GET", "/api/v1/tasks/inbox", desk)
    with Session(db_engine) as session:
        expected = schemas.InboxOut().dump(services.inbox(session, "lan.desk"))
    assert page == json.loads(json.dumps(expected)) and [t["id"] for t in page["mine"]] == [claimed]
    assert page["mine"][0]["assignee"] == "lan.desk" and page["mine"][0]["due_at"]
