"""The public API (no login): lookup by code and secret, ratings, feedback — on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import statistics
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from werkzeug.serving import make_server

from api.app import create_app
from engine import lifecycle, organisation, public, services
from engine.auth import TooManyAttempts
from engine.persistence.models import Agency, AuditEvent, Feedback, Rating

from .conftest import FIXTURES, fixture_bytes

XA = "000.17.22.H19"  # UBND xã Phước An
APPLICANT = {"name": "Nguyễn Văn An", "phone": "0987654321", "email": "an@example.vn"}
DATA = {"so_cmnd": "012345678901"}
SECRET, WRONG = "4321", "1234"
#: Who completes each step of land_joint.bpmn (receive, confirm, survey, tax, give back).
OFFICERS = ("lan.desk", "hung.xa", "son.vpdk", "binh.thue", "lan.desk")
OFFICER_NAMES = ("Nguyễn Thị Lan", "Trần Văn Hùng", "Phạm Văn Sơn", "Hoàng Văn Bình")
PERSONAL = (APPLICANT["name"], APPLICANT["phone"], APPLICANT["phone"][1:], APPLICANT["email"], DATA["so_cmnd"], "so_cmnd",
            *OFFICERS, *OFFICER_NAMES)
NOT_FOUND = "Không tìm thấy hồ sơ với mã và mã bí mật này"
SCORES = {"tiep_can": 5, "thu_tuc": 4, "thoi_gian": "Hài lòng", "chi_phi": "rất hài lòng", "cong_chuc": 4, "ket_qua": 5}


@dataclass
class World:
    app: Flask
    client: FlaskClient
    returned: str  # returned to the applicant (status 10)
    returned2: str
    pending: str  # first step done, second under way
    no_phone: str  # received without a phone number
    engine: Engine


def _dossier(session: Session, at: datetime, steps: int, applicant: dict[str, Any] = APPLICANT) -> str:
    record = services.start_dossier(session, "1.999010", DATA, actor="lan.desk", now=at, agency_code=XA, applicant=applicant)
    for i, actor in enumerate(OFFICERS[:steps]):
        [task] = services.open_tasks(session, record.code)
        services.complete_task(session, task.id, {}, actor=actor, now=at + timedelta(hours=i + 1))
    if steps == len(OFFICERS):
        lifecycle.return_result(session, record.code, "desk", "lan.desk", at + timedelta(hours=steps + 1))
    return record.code


@pytest.fixture
def world(db_engine: Engine, tmp_path: Path, now: datetime) -> Iterator[World]:
    with Session(db_engine, expire_on_commit=False) as session:
        text = (FIXTURES / "org_two_tier.yaml").read_text()
        organisation.load_organisation(session, organisation.parse_organisation(text, "org_two_tier.yaml"), actor="admin", now=now)
        services.deploy(session, fixture_bytes("land_joint.bpmn"), actor="designer", now=now)
        returned = _dossier(session, now, 5)
        returned2 = _dossier(session, now, 5)
        pending = _dossier(session, now, 1)
        no_phone = _dossier(session, now, 0, {"name": "Trần Thị Bích"})
    app = create_app(database_url=db_engine.url.render_as_string(hide_password=False), instance_path=str(tmp_path))
    app.config["TESTING"] = True
    try:
        yield World(app, app.test_client(), returned, returned2, pending, no_phone, db_engine)
    finally:
        app.extensions["motcua.engine"].dispose()


def _lookup(client: FlaskClient, code: str, secret: str | None, addr: str = "127.0.0.1") -> Any:
    query = "" if secret is None else f"?secret={quote(secret)}"
    return client.get(f"/api/v1/public/dossiers/{quote(code)}{query}", environ_base={"REMOTE_ADDR": addr})


def _assert_problem(response: Any, *statuses: int) -> dict[str, Any]:
    assert response.status_code in statuses, (response.status_code, response.get_data(as_text=True))
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == response.status_code and body["title"] and body["detail"]
    return body


# --------------------------------------------------------------------------- lookup


def test_lookup_shows_status_and_steps(world: World) -> None:
    response = _lookup(world.client, world.pending, SECRET)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["code"] == world.pending
    assert (body["procedure_code"], body["status"], body["status_label"]) == ("1.999010", 4, "Đang xử lý")
    assert body["procedure_name"] == "Đăng ký đất đai liên thông xã – VPĐK – thuế"
    # The same instant as 01:00 UTC, shown in Hà Nội time as citizens read it.
    assert body["received_at"] == "2026-03-02T08:00:00+07:00" and body["due_at"].endswith("+07:00")
    assert body["returned_at"] is None and body["finished_at"] is None and body["new_appointment_at"] is None
    assert [(s["name"], s["state"], s["agency"]) for s in body["steps"]] == [
        ("Tiếp nhận, chuyển hồ sơ", "done", "UBND xã Phước An"),
        ("Xác nhận hiện trạng, nguồn gốc", "current", "UBND xã Phước An"),
    ]
    done, current = body["steps"]
    assert (done["result"], done["result_label"], done["state_label"]) == ("on_time", "Đúng hạn", "Đã xử lý")
    assert done["completed_at"] and current["completed_at"] is None and current["result"] is None
    assert (body["rated"], body["can_rate"]) == (False, False)

    finished = _lookup(world.client, world.returned, SECRET).get_json()
    assert (finished["status"], finished["status_label"], finished["can_rate"]) == (10, "Đã trả kết quả", True)
    assert finished["returned_at"] and finished["finished_at"]
    assert [s["agency"] for s in finished["steps"]] == [
        "UBND xã Phước An", "UBND xã Phước An", "Văn phòng Đăng ký đất đai tỉnh", "Thuế tỉnh Đồng Nai", "UBND xã Phước An"]
    assert all(s["state"] == "done" and s["result"] in ("early", "on_time", "late") for s in finished["steps"])


def test_lookup_reveals_no_personal_data(world: World) -> None:
    for code in (world.pending, world.returned):
        raw = _lookup(world.client, code, SECRET).get_data(as_text=True)
        assert json.loads(raw)["code"] == code
        for value in PERSONAL:
            assert value not in raw, value
        for key in ("applicant", "phone", "email", "address", "data", "assignee", "completed_by", "actor"):
            assert f'"{key}' not in raw, key


def test_wrong_secret_and_unknown_code_answer_alike(world: World) -> None:
    wrong = _lookup(world.client, world.returned, WRONG)
    unknown = _lookup(world.client, "000.17.22.H19-260302-9999", SECRET)
    no_phone = _lookup(world.client, world.no_phone, "0000")
    nul = _lookup(world.client, "abc\x00def", SECRET)  # NUL never reaches PostgreSQL: refused for any code alike
    assert "NUL" in _assert_problem(nul, 400)["detail"]
    long = _lookup(world.client, "9" * 500, SECRET)
    body = _assert_problem(wrong, 404)
    assert body["detail"] == NOT_FOUND
    for other in (unknown, no_phone, long):
        assert other.status_code == 404
        assert other.get_data() == wrong.get_data()
        assert other.headers["Content-Type"] == wrong.headers["Content-Type"]
    assert world.returned not in wrong.get_data(as_text=True)
    # Rating and feedback with a wrong secret fail the same way.
    rating = world.client.post(f"/api/v1/public/dossiers/{world.returned}/rating", json={"secret": WRONG, "scores": SCORES})
    feedback = world.client.post("/api/v1/public/feedback", json={"subject": "Hỏi", "content": "Vì sao chậm?",
                                                                  "dossier_code": world.pending, "secret": WRONG})
    unknown_feedback = world.client.post("/api/v1/public/feedback", json={"subject": "Hỏi", "content": "Vì sao chậm?",
                                                                          "dossier_code": "nope", "secret": SECRET})
    for other in (rating, feedback, unknown_feedback):
        assert (other.status_code, other.get_data()) == (404, wrong.get_data())


def test_wrong_secret_and_unknown_code_take_comparable_time(world: World) -> None:
    world.app.extensions["motcua.public_limiter"] = public.FailureLimiter(limit=10_000)
    unknown_code = world.returned[:-4] + "9999"
    timings: dict[str, list[float]] = {"wrong": [], "unknown": []}
    for _ in range(25):
        for kind, code in (("wrong", world.returned), ("unknown", unknown_code)):
            start = time.perf_counter()
            assert _lookup(world.client, code, WRONG).status_code == 404
            timings[kind].append(time.perf_counter() - start)
    wrong, unknown = statistics.median(timings["wrong"]), statistics.median(timings["unknown"])
    assert abs(wrong - unknown) < max(0.5 * max(wrong, unknown), 0.003), (wrong, unknown)


def test_failed_lookups_are_rate_limited_per_address(world: World) -> None:
    for _ in range(10):
        assert _lookup(world.client, world.returned, WRONG).status_code == 404
    blocked = _lookup(world.client, world.returned, WRONG)
    body = _assert_problem(blocked, 429)
    assert 0 < int(blocked.headers["Retry-After"]) <= 600 and body["retry_after"] == int(blocked.headers["Retry-After"])
    assert "thử lại sau" in body["detail"]
    # Blocked means blocked: even the right secret, and rating or feedback about a dossier.
    assert _lookup(world.client, world.returned, SECRET).status_code == 429
    assert world.client.post(f"/api/v1/public/dossiers/{world.returned}/rating",
                             json={"secret": SECRET, "scores": SCORES}).status_code == 429
    assert world.client.post("/api/v1/public/feedback", json={"subject": "A", "content": "B", "dossier_code": world.returned,
                                                              "secret": SECRET}).status_code == 429
    # Feedback without a dossier carries no secret: still accepted.
    assert world.client.post("/api/v1/public/feedback", json={"subject": "A", "content": "B"}).status_code == 201
    # Another address has its own count.
    assert _lookup(world.client, world.returned, SECRET, addr="10.0.0.2").status_code == 200
    # Failed ratings and feedback count too.
    for _ in range(5):
        assert world.client.post(f"/api/v1/public/dossiers/{world.returned}/rating", json={"secret": WRONG, "scores": SCORES},
                                 environ_base={"REMOTE_ADDR": "10.0.0.3"}).status_code == 404
        assert world.client.post("/api/v1/public/feedback", json={"subject": "A", "content": "B", "dossier_code": "x",
                                                                  "secret": WRONG},
                                 environ_base={"REMOTE_ADDR": "10.0.0.3"}).status_code == 404
    assert _lookup(world.client, world.returned, SECRET, addr="10.0.0.3").status_code == 429
    # Successes do not count.
    for _ in range(15):
        assert _lookup(world.client, world.returned, SECRET, addr="10.0.0.4").status_code == 200


def test_the_window_slides() -> None:
    clock = [1000.0]
    limiter = public.FailureLimiter(limit=3, window=60, clock=lambda: clock[0])
    for _ in range(3):
        limiter.check("a")
        limiter.fail("a")
        clock[0] += 10
    # Failures at 1000, 1010, 1020; now 1030: the first leaves the window at 1060.
    assert limiter.retry_after("a") == 30
    with pytest.raises(TooManyAttempts) as caught:
        limiter.check("a")
    assert caught.value.retry_after == 30
    limiter.check("b")
    clock[0] = 1060.5
    limiter.check("a")  # one slot is free again
    limiter.fail("a")
    assert limiter.retry_after("a") == 10  # until 1070, when the failure of 1010 leaves
    clock[0] = 2000
    assert limiter.retry_after("a") == 0
    small = public.FailureLimiter(limit=1, window=60, max_keys=2, clock=lambda: clock[0])
    for key in ("x", "y", "z"):
        small.fail(key)
    assert (small.retry_after("x"), small.retry_after("z")) == (0, 60)  # the stalest address is forgotten


def test_parallel_attempts_cannot_slip_past_the_limit() -> None:
    limiter = public.FailureLimiter(limit=10, window=600)
    gate, admitted, refused = threading.Barrier(40), [], []

    def attempt() -> None:
        gate.wait()
        try:
            admitted.append(limiter.begin("a"))  # counted as a failure until forgiven
        except TooManyAttempts:
            refused.append(1)

    threads = [threading.Thread(target=attempt) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (len(admitted), len(refused)) == (10, 30)
    for token in admitted:  # they all succeeded
        limiter.forgive("a", token)
    assert limiter.retry_after("a") == 0


# --------------------------------------------------------------------------- ratings


def test_rating_once_after_return(world: World) -> None:
    client = world.client
    early = client.post(f"/api/v1/public/dossiers/{world.pending}/rating", json={"secret": SECRET, "scores": SCORES})
    assert "chưa trả kết quả" in _assert_problem(early, 409)["detail"]

    response = client.post(f"/api/v1/public/dossiers/{world.returned}/rating",
                           json={"secret": SECRET, "scores": SCORES, "comment": "  Cán bộ hướng dẫn tận tình.\nCảm ơn. "})
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.get_json()
    assert body["scores"] == {"tiep_can": 5, "thu_tuc": 4, "thoi_gian": 4, "chi_phi": 5, "cong_chuc": 4, "ket_qua": 5}
    assert body["satisfied"] is True and body["code"] == world.returned and "Cảm ơn" in body["message"]

    again = client.post(f"/api/v1/public/dossiers/{world.returned}/rating", json={"secret": SECRET, "scores": SCORES})
    assert "đã được đánh giá" in _assert_problem(again, 409)["detail"]
    assert _lookup(client, world.returned, SECRET).get_json()["can_rate"] is False

    unhappy = {**SCORES, "thoi_gian": "Không hài lòng"}
    assert client.post(f"/api/v1/public/dossiers/{world.returned2}/rating",
                       json={"secret": SECRET, "scores": unhappy}).get_json()["satisfied"] is False

    with Session(world.engine) as session:
        rows = session.execute(select(Rating.dossier_id, Rating.satisfied, Rating.comment, Rating.scores).order_by(Rating.id)).all()
        assert [(r.satisfied, r.comment) for r in rows] == [(True, "Cán bộ hướng dẫn tận tình.\nCảm ơn."), (False, None)]
        assert rows[1].scores["thoi_gian"] == 2
        assert session.scalar(select(AuditEvent.action).where(AuditEvent.dossier_id == rows[0].dossier_id,
                                                              AuditEvent.action == "dossier.rating")) == "dossier.rating"


def test_scores_and_satisfaction_rule() -> None:
    assert set(public.CRITERIA) == {"tiep_can", "thu_tuc", "thoi_gian", "chi_phi", "cong_chuc", "ket_qua"}
    assert [public.parse_score(v) for v in (1, 5, "3", " Rất  HÀI lòng ", "bình thường")] == [1, 5, 3, 5, 3]
    for bad in (0, 6, True, 2.5, "tuyệt vời", None, [4]):
        with pytest.raises(ValueError):
            public.parse_score(bad)
    assert public.is_satisfied(dict.fromkeys(public.CRITERIA, 3))
    assert not public.is_satisfied({**dict.fromkeys(public.CRITERIA, 5), "chi_phi": 2})
    assert (public.secret_of("+84 987.654-321"), public.secret_of("123"), public.secret_of(None)) == ("4321", None, None)


# --------------------------------------------------------------------------- feedback


def test_feedback_with_and_without_a_dossier(world: World) -> None:
    client = world.client
    plain = client.post("/api/v1/public/feedback", json={"subject": "Bãi đỗ xe", "content": "Nơi tiếp nhận thiếu chỗ để xe."})
    assert plain.status_code == 201, plain.get_data(as_text=True)
    body = plain.get_json()
    assert body["id"] and body["dossier_code"] is None and "Đã tiếp nhận phản ánh, kiến nghị" in body["message"]

    linked = client.post("/api/v1/public/feedback", json={
        "subject": "Hồ sơ chậm", "content": "Hồ sơ của tôi quá hạn chưa có kết quả.", "name": "Nguyễn Văn An",
        "contact": "an@example.vn", "dossier_code": world.pending, "secret": SECRET})
    assert linked.status_code == 201, linked.get_data(as_text=True)
    assert linked.get_json()["dossier_code"] == world.pending
    with Session(world.engine) as session:
        rows = session.scalars(select(Feedback).order_by(Feedback.id)).all()
        assert [(f.dossier_id, f.agency_id, f.state) for f in rows[:1]] == [(None, None, "new")]
        second = rows[1]
        assert (second.id, second.subject, second.name, second.contact) == (
            linked.get_json()["id"], "Hồ sơ chậm", "Nguyễn Văn An", "an@example.vn")
        assert session.get(Agency, second.agency_id).code == XA
        assert second.dossier_id == services.get_dossier(session, world.pending).id


# --------------------------------------------------------------------------- bad requests


def test_bad_requests_are_problem_details_never_500(world: World) -> None:
    client = world.client
    rating = f"/api/v1/public/dossiers/{world.returned}/rating"
    cases: list[tuple[str, Any, dict[str, Any]]] = [
        (rating, "{not json", {"content_type": "application/json"}),
        (rating, [1, 2], {}),
        (rating, {"secret": SECRET, "scores": SCORES, "extra": 1}, {}),
        (rating, {"secret": SECRET, "scores": {**SCORES, "gia_ca": 5}}, {}),
        (rating, {"secret": SECRET, "scores": {**SCORES, "ket_qua": 6}}, {}),
        (rating, {"secret": SECRET, "scores": {**SCORES, "ket_qua": 0}}, {}),
        (rating, {"secret": SECRET, "scores": {**SCORES, "ket_qua": True}}, {}),
        (rating, {"secret": SECRET, "scores": {**SCORES, "ket_qua": "tuyệt vời"}}, {}),
        (rating, {"secret": SECRET, "scores": {k: v for k, v in SCORES.items() if k != "chi_phi"}}, {}),
        (rating, {"secret": SECRET, "scores": "5"}, {}),
        (rating, {"secret": "43210", "scores": SCORES}, {}),
        (rating, {"scores": SCORES}, {}),
        (rating, {"secret": SECRET, "scores": SCORES, "comment": "x" * 2001}, {}),
        ("/api/v1/public/feedback", {"subject": "", "content": "B"}, {}),
        ("/api/v1/public/feedback", {"subject": "   ", "content": "B"}, {}),
        ("/api/v1/public/feedback", {"subject": "A" * 301, "content": "B"}, {}),
        ("/api/v1/public/feedback", {"subject": "A", "content": "B" * 5001}, {}),
        ("/api/v1/public/feedback", {"subject": "A", "content": "nul \x00 byte"}, {}),
        ("/api/v1/public/feedback", {"subject": "A", "content": "B", "dossier_code": world.pending}, {}),
        ("/api/v1/public/feedback", {"subject": "A", "content": "B", "secret": SECRET}, {}),
        ("/api/v1/public/feedback", {"subject": "A", "content": "B", "phone": "1"}, {}),
        ("/api/v1/public/feedback", {"subject": 5, "content": "B"}, {}),
        ("/api/v1/public/feedback", "plain text", {"content_type": "text/plain"}),
    ]
    for url, payload, kwargs in cases:
        if isinstance(payload, str):
            response = client.post(url, data=payload, **kwargs)
        else:
            response = client.post(url, json=payload)
        body = _assert_problem(response, 400, 422)
        if response.status_code == 422:
            assert body["errors"], (payload, body)
    unknown = _assert_problem(client.post(rating, json={"secret": SECRET, "scores": SCORES, "extra": 1}), 422)
    assert {"field": "extra", "message": "Trường không được chấp nhận."} in unknown["errors"]
    out_of_range = _assert_problem(client.post(rating, json={"secret": SECRET, "scores": {**SCORES, "ket_qua": 6}}), 422)
    assert any(e["field"] == "scores.ket_qua" and "từ 1 đến 5" in e["message"] for e in out_of_range["errors"])
    for secret in (None, "12a4", "123", ""):
        _assert_problem(_lookup(client, world.returned, secret), 422)
    assert client.put(f"/api/v1/public/dossiers/{world.returned}?secret={SECRET}").status_code == 405
    with Session(world.engine) as session:  # nothing was written
        assert session.scalars(select(Rating)).all() == [] and session.scalars(select(Feedback)).all() == []
    assert _lookup(client, world.returned, SECRET).status_code == 200  # none of this counted as a failed secret


# --------------------------------------------------------------------------- real HTTP and OpenAPI


def test_lookup_over_real_http(world: World) -> None:
    server = make_server("127.0.0.1", 0, world.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}/api/v1/public/dossiers/{quote(world.returned)}"
    try:
        with urllib.request.urlopen(f"{base}?secret={SECRET}", timeout=10) as response:
            assert response.status == 200 and response.headers["Cache-Control"] == "no-store"
            raw = response.read().decode("utf-8")
        body = json.loads(raw)
        assert (body["code"], body["status_label"], len(body["steps"])) == (world.returned, "Đã trả kết quả", 5)
        assert not any(value in raw for value in PERSONAL)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"{base}?secret={WRONG}", timeout=10)
        assert caught.value.code == 404 and caught.value.headers["Content-Type"].startswith("application/problem+json")
        assert json.loads(caught.value.read().decode("utf-8"))["detail"] == NOT_FOUND
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_openapi_documents_the_public_api(tmp_path: Path) -> None:
    app = create_app(database_url=f"sqlite:///{tmp_path / 'spec.sqlite3'}", instance_path=str(tmp_path))
    spec = app.test_client().get("/api/v1/openapi.json").get_json()
    app.extensions["motcua.engine"].dispose()
    paths, schemas = spec["paths"], spec["components"]["schemas"]
    lookup = paths["/api/v1/public/dossiers/{code}"]["get"]
    assert [p["name"] for p in lookup["parameters"]] == ["secret"]
    assert lookup["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/PublicDossierOut")
    assert {"404", "429"} <= set(lookup["responses"])
    rating = paths["/api/v1/public/dossiers/{code}/rating"]["post"]
    assert rating["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/RatingIn")
    assert rating["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith("/RatingOut")
    feedback = paths["/api/v1/public/feedback"]["post"]
    assert feedback["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/FeedbackIn")
    assert feedback["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith("/FeedbackOut")
    assert set(schemas["ScoresIn"]["required"]) == set(public.CRITERIA)
    for name in ("ScoresIn", "RatingIn", "FeedbackIn"):
        assert schemas[name]["additionalProperties"] is False
    assert schemas["FeedbackIn"]["properties"]["content"]["maxLength"] == 5000
    dossier_fields = set(schemas["PublicDossierOut"]["properties"]) | set(schemas["PublicStepOut"]["properties"])
    assert not {"applicant_name", "applicant_phone", "applicant_email", "data", "assignee", "completed_by"} & dossier_fields
