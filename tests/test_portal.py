"""The national public service portal: intake, status feed, ordered delivery.

A real HTTP server on 127.0.0.1 stands in for the portal; the database is the
migrated SQLite file or PostgreSQL of the ``db_engine`` fixture; officers
work through the engine's own use cases. Every feeder and delivery pass runs
with an explicit ``now``.
"""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from flask import g
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from engine import config, lifecycle, notify, portal, services
from engine.core.calendar import VN_TZ
from engine.errors import Conflict
from engine.notify import PortalChannel, channels_from_settings, deliver_due
from engine.persistence.models import AuditEvent, Dossier, OutboxMessage, PortalDossier
from engine.scheduler import build_scheduler, run_portal_feed

from .conftest import load_demo_province

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "cong-dvc-bi-mat-0123456789"
PHUOC_AN, LONG_THO = "000.17.22.H19", "000.17.23.H19"
ACCOUNTS = {
    PHUOC_AN: {"receptionist": "motcua.phuocan", "officer": "chuyenvien.phuocan", "leader": "lanhdao.phuocan"},
    LONG_THO: {"receptionist": "motcua.longtho", "officer": "chuyenvien.longtho", "leader": "lanhdao.longtho"},
}
TO_KHAI = {
    "nguoi_yeu_cau": "Nguyễn Văn Minh", "quan_he": "Cha", "ho_ten_tre": "Nguyễn Ngọc Anh", "ngay_sinh": "2026-02-20",
    "gioi_tinh": "Nữ", "dan_toc": "Kinh", "quoc_tich": "Việt Nam", "noi_sinh": "Bệnh viện Đa khoa Đồng Nai",
    "ho_ten_me": "Trần Thị Hoa", "nam_sinh_me": 1995, "ho_ten_cha": "Nguyễn Văn Minh", "nam_sinh_cha": 1993,
}
FORMS = {
    "tiep_nhan_ks": TO_KHAI,
    "kiem_tra_ghi_so": {"so_dang_ky": "12/2026", "so_dinh_danh": "075226000123", "dung_han": True},
    "ky_giay_khai_sinh": {"tra_lai": False},
    "tra_giay_khai_sinh": {"so_ban_sao": 1, "phi_le_phi_da_thu": 8_000},
}
STEP_NAMES = {
    "tiep_nhan_ks": "Tiếp nhận hồ sơ đăng ký khai sinh",
    "kiem_tra_ghi_so": "Kiểm tra hồ sơ, ghi Sổ hộ tịch, lấy số định danh cá nhân",
    "ky_giay_khai_sinh": "Ký Giấy khai sinh",
    "tra_giay_khai_sinh": "Trả Giấy khai sinh",
}


def vn(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=VN_TZ)


def filing(ma_ho_so: str, agency: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "MaHoSo": ma_ho_so,
        "MaTTHC": "1.001193",
        "NgayTiepNhan": "20260302075500",
        "NgayHenTra": "20260302170000",
        "TrangThaiHoSo": 1,
        "KenhNop": 2,
        "DonViXuLy": {"MaCoQuan": agency, "TenCoQuan": "UBND xã"},
        "ChuHoSo": {"HoTen": "Nguyễn Văn Minh", "SoDienThoai": "0912345678", "Email": "minh@example.vn", "SoCCCD": "075093001234"},
        "TaiLieuNop": [{"TenTaiLieu": "Giấy chứng sinh", "DuongDan": "https://dichvucong.gov.vn/tl/1", "Checksum": "a" * 64}],
        "PhiLePhi": [{"MaPhiLePhi": "LP-KS", "SoTien": 0, "TrangThaiThanhToan": 1}],
        "DuLieuBieuMau": {"ho_ten_tre": "Nguyễn Ngọc Anh", "ngay_sinh": "2026-02-20"},
    }
    body.update(changes)
    return body


# --------------------------------------------------------------------------- the portal stand-in


class Portal:
    """A real HTTP server on loopback: records accepted pushes; can answer 503 or go away."""

    def __init__(self) -> None:
        self.accepted: list[dict[str, Any]] = []
        self.keys: Counter[str] = Counter()
        self.refused = 0
        self.answer = 200
        self.lock = threading.Lock()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/api/hoso/capnhat"
        self.server: ThreadingHTTPServer | None = None
        self.start()

    def start(self) -> None:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with stand_in.lock:
                    status = stand_in.answer
                    if status == 200:
                        key = self.headers.get("Idempotency-Key", "")
                        stand_in.keys[key] += 1
                        if stand_in.keys[key] == 1:
                            stand_in.accepted.append({"key": key, "auth": self.headers.get("Authorization"),
                                                      "json": json.loads(raw.decode("utf-8"))})
                    else:
                        stand_in.refused += 1
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}' if status == 200 else b'{"error": "busy"}')

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Close the port: connections are refused."""
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()
        self.server = None

    def of(self, ma_ho_so: str) -> list[dict[str, Any]]:
        return [item["json"] for item in self.accepted if item["json"]["MaHoSo"] == ma_ho_so]


@pytest.fixture
def stand_in() -> Iterator[Portal]:
    server = Portal()
    yield server
    if server.server is not None:
        server.stop()


@pytest.fixture
def province(session: Session, now: datetime) -> Session:
    load_demo_province(session, now)
    services.deploy(session, {"dang-ky-khai-sinh.bpmn": (ROOT / "processes" / "dang-ky-khai-sinh.bpmn").read_bytes()},
                    actor="designer", now=now)
    return session


class Clock:
    """The instant the web application takes as "now" (``api.security.now``)."""

    def __init__(self, at: datetime) -> None:
        self.at = at


@pytest.fixture
def web(province: Session, db_engine: Engine, stand_in: Portal) -> Iterator[tuple[Any, Clock]]:
    clock = Clock(vn(2, 8))
    app = create_app(database_url=db_engine.url.render_as_string(hide_password=False), portal_token=TOKEN,
                     portal_push_url=stand_in.url)

    @app.before_request
    def fixed_clock() -> None:
        g.now = clock.at

    yield app.test_client(), clock
    app.extensions["motcua.engine"].dispose()


def post(client: Any, body: Any, token: str | None = TOKEN) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post("/api/v1/portal/dossiers", json=body, headers=headers)


def state(client: Any, ma_ho_so: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/portal/dossiers/{ma_ho_so}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def complete(session: Session, code: str, agency: str, step: str, at: datetime) -> None:
    [task] = services.open_tasks(session, code)
    assert task.step_id == step
    services.complete_task(session, task.id, FORMS[step], actor=ACCOUNTS[agency][task.role], now=at)


def deliver(sessions: sessionmaker[Session], url: str, at: datetime) -> notify.DeliveryReport:
    return deliver_due(sessions, {"portal": PortalChannel(url, token="day-len-cong", timeout=5)}, at)


# --------------------------------------------------------------------------- dates


def test_portal_times_are_hanoi_wall_clock_in_yyyymmddhhmmss() -> None:
    # Midnight in Hà Nội is 17:00 UTC of the day before.
    assert portal.format_time(datetime(2026, 3, 1, 17, 0, tzinfo=timezone.utc)) == "20260302000000"
    assert portal.format_time(datetime(2026, 3, 1, 16, 59, 59, tzinfo=timezone.utc)) == "20260301235959"
    assert portal.format_time(vn(2, 23, 59).replace(second=59)) == "20260302235959"
    assert portal.format_time(datetime(2026, 12, 31, 17, 0, tzinfo=timezone.utc)) == "20270101000000"
    parsed = portal.parse_time("20260302000000")
    assert parsed == datetime(2026, 3, 1, 17, 0, tzinfo=timezone.utc)
    assert parsed.utcoffset() == timedelta(hours=7)
    assert portal.parse_time("20240229235959") == datetime(2024, 2, 29, 16, 59, 59, tzinfo=timezone.utc)
    with pytest.raises(ValueError):
        portal.format_time(datetime(2026, 3, 2, 0, 0))  # naive: refused, never guessed
    for bad in ("20260230120000", "20260302240000", "2026030212000", "202603021200000", "2026-03-02 12:00",
                "２０２６０３０２１２００００", 20260302120000, None, "20250229120000"):
        with pytest.raises(portal.PortalPayloadError) as caught:
            portal.parse_time(bad, "NgayTiepNhan")
        assert "NgayTiepNhan" in caught.value.message


# --------------------------------------------------------------------------- intake


def test_intake_is_idempotent_on_ma_ho_so_and_starts_an_online_dossier(web: tuple[Any, Clock], province: Session) -> None:
    client, clock = web
    first = post(client, filing("G22.01-260302-000001", PHUOC_AN))
    assert first.status_code == 201, first.get_json()
    body = first.get_json()
    assert body["MaHoSo"] == "G22.01-260302-000001"
    assert body["MaHoSoDiaPhuong"] == "000.17.22.H19-260302-0001"
    assert (body["TrangThaiHoSo"], body["NgayTiepNhan"], body["NgayHenTra"], body["DaTonTai"]) == (
        2, "20260302080000", "20260302170000", False)
    clock.at = vn(2, 8, 5)
    again = post(client, filing("G22.01-260302-000001", PHUOC_AN))
    assert again.status_code == 200
    assert again.get_json()["MaHoSoDiaPhuong"] == body["MaHoSoDiaPhuong"] and again.get_json()["DaTonTai"] is True
    assert province.scalar(select(func.count()).select_from(Dossier)) == 1
    dossier = services.get_dossier(province, body["MaHoSoDiaPhuong"])
    assert (dossier.channel, dossier.applicant_name, dossier.applicant_phone, dossier.applicant_email) == (
        "online", "Nguyễn Văn Minh", "0912345678", "minh@example.vn")
    assert dossier.data["ho_ten_tre"] == "Nguyễn Ngọc Anh"
    assert dossier.data["chu_ho_so"]["so_cccd"] == "075093001234"
    assert dossier.data["tai_lieu_nop"] == [{"ten": "Giấy chứng sinh", "duong_dan": "https://dichvucong.gov.vn/tl/1", "checksum": "a" * 64}]
    assert dossier.data["phi_le_phi"] == [{"ma": "LP-KS", "so_tien": 0, "da_thanh_toan": True}]
    [task] = services.open_tasks(province, dossier.code)
    assert task.step_id == "tiep_nhan_ks"
    mapping = province.scalar(select(PortalDossier))
    assert (mapping.ma_ho_so, mapping.dossier_code, mapping.state) == ("G22.01-260302-000001", dossier.code, "received")
    # The same MaHoSo with other content is a conflict, not a second dossier.
    changed = post(client, filing("G22.01-260302-000001", PHUOC_AN, DuLieuBieuMau={"ho_ten_tre": "Khác"}))
    assert changed.status_code == 409 and changed.content_type == "application/problem+json"
    assert "nội dung khác" in changed.get_json()["detail"]
    assert province.scalar(select(func.count()).select_from(Dossier)) == 1


def test_intake_refuses_bad_filings_with_vietnamese_problems(web: tuple[Any, Clock], province: Session) -> None:
    client, _ = web
    assert post(client, filing("G22.01-1", PHUOC_AN), token=None).status_code == 401
    wrong = post(client, filing("G22.01-1", PHUOC_AN), token="sai-ma")
    assert wrong.status_code == 401 and "mã xác thực" in wrong.get_json()["detail"]

    unknown_procedure = post(client, filing("G22.01-2", PHUOC_AN, MaTTHC="9.999999"))
    assert unknown_procedure.status_code == 422
    assert unknown_procedure.content_type == "application/problem+json"
    assert unknown_procedure.get_json()["errors"] == [
        {"field": "MaTTHC", "message": "Tỉnh chưa triển khai thủ tục hành chính mã 9.999999."}]

    unknown_agency = post(client, filing("G22.01-3", "000.99.99.H19"))
    assert unknown_agency.status_code == 422
    assert unknown_agency.get_json()["errors"][0]["field"] == "DonViXuLy.MaCoQuan"
    assert "000.99.99.H19" in unknown_agency.get_json()["detail"]

    bad_date = post(client, filing("G22.01-4", PHUOC_AN, NgayTiepNhan="2026-03-02T08:00:00"))
    assert bad_date.status_code == 400
    assert bad_date.get_json()["errors"] == [{"field": "NgayTiepNhan", "message": "Sai định dạng yyyyMMddHHmmss."}]
    assert "yyyyMMddHHmmss" in bad_date.get_json()["detail"]
    impossible = post(client, filing("G22.01-5", PHUOC_AN, NgayHenTra="20260231170000"))
    assert impossible.status_code == 400 and impossible.get_json()["errors"][0]["field"] == "NgayHenTra"

    several = post(client, {"MaHoSo": "", "MaTTHC": "1.001193", "DonViXuLy": {"MaCoQuan": PHUOC_AN},
                            "ChuHoSo": {"HoTen": "A", "SoCCCD": "12345", "Email": "khong-phai-thu"},
                            "KenhNop": 1, "PhiLePhi": [{"MaPhiLePhi": "X", "SoTien": -5}],
                            "DuLieuBieuMau": {"ma_ho_so_dvcqg": "gia-mao"}})
    assert several.status_code == 400
    fields = {e["field"] for e in several.get_json()["errors"]}
    assert fields == {"MaHoSo", "KenhNop", "ChuHoSo.Email", "ChuHoSo.SoCCCD", "PhiLePhi[0].SoTien",
                      "DuLieuBieuMau.ma_ho_so_dvcqg"}
    not_json = client.post("/api/v1/portal/dossiers", data="MaHoSo=1", headers={"Authorization": f"Bearer {TOKEN}"})
    assert not_json.status_code == 400 and "JSON" in not_json.get_json()["detail"]
    assert post(client, [1, 2]).status_code == 400
    assert province.scalar(select(func.count()).select_from(Dossier)) == 0
    assert province.scalar(select(func.count()).select_from(PortalDossier)) == 0


def test_intake_is_off_without_a_portal_token(province: Session, db_engine: Engine) -> None:
    app = create_app(database_url=db_engine.url.render_as_string(hide_password=False))
    try:
        response = app.test_client().post("/api/v1/portal/dossiers", json=filing("G22.01-1", PHUOC_AN),
                                          headers={"Authorization": "Bearer "})
        assert response.status_code == 403 and "MOTCUA_PORTAL_TOKEN" in response.get_json()["detail"]
    finally:
        app.extensions["motcua.engine"].dispose()


# --------------------------------------------------------------------------- feed and push


def expected_trail(agency_name: str, person: dict[str, str], *, paused: bool = False) -> list[tuple[int, str, str, str]]:
    """(TrangThai, NguoiXuLy, PhongBanXuLy, NoiDungXuLy) the portal must see for a khai sinh dossier, in order."""
    desk, officer, leader = person["receptionist"], person["officer"], person["leader"]
    trail = [
        (2, "Cổng Dịch vụ công quốc gia", agency_name, "Tiếp nhận hồ sơ trực tuyến từ Cổng Dịch vụ công quốc gia"),
        (2, "Cổng Dịch vụ công quốc gia", agency_name, f"Chuyển đến bước «{STEP_NAMES['tiep_nhan_ks']}»"),
        (2, desk, agency_name, f"Hoàn thành bước «{STEP_NAMES['tiep_nhan_ks']}» (đúng hạn)"),
        (2, desk, agency_name, f"Chuyển đến bước «{STEP_NAMES['kiem_tra_ghi_so']}»"),
        (4, desk, agency_name, "Chuyển trạng thái: Đang xử lý"),
    ]
    if paused:
        trail += [
            (5, officer, agency_name, "Yêu cầu bổ sung hồ sơ: Bản sao giấy chứng nhận kết hôn"),
            (4, desk, agency_name, "Tiếp tục xử lý sau khi công dân đã bổ sung hồ sơ"),
        ]
    trail += [
        (4, officer, agency_name, f"Hoàn thành bước «{STEP_NAMES['kiem_tra_ghi_so']}» (đúng hạn)"),
        (4, officer, agency_name, f"Chuyển đến bước «{STEP_NAMES['ky_giay_khai_sinh']}»"),
        (4, leader, agency_name, f"Hoàn thành bước «{STEP_NAMES['ky_giay_khai_sinh']}» (đúng hạn)"),
        (4, leader, agency_name, f"Chuyển đến bước «{STEP_NAMES['tra_giay_khai_sinh']}»"),
        (4, desk, agency_name, f"Hoàn thành bước «{STEP_NAMES['tra_giay_khai_sinh']}» (đúng hạn)"),
        (9, desk, agency_name, "Chuyển trạng thái: Đã xử lý xong"),
        (10, desk, agency_name, "Chuyển trạng thái: Đã trả kết quả"),
    ]
    return trail


def seen(documents: list[dict[str, Any]]) -> list[tuple[int, str, str, str]]:
    return [(d["TrangThai"], d["NguoiXuLy"], d["PhongBanXuLy"], d["NoiDungXuLy"]) for d in documents]


def test_every_change_reaches_the_portal_in_order_once_even_across_an_outage(
    web: tuple[Any, Clock], province: Session, db_engine: Engine, stand_in: Portal
) -> None:
    client, clock = web
    session = province
    sessions = sessionmaker(db_engine, expire_on_commit=False)
    a, b = "G22.01-260302-000001", "G22.01-260302-000002"
    assert post(client, filing(a, PHUOC_AN)).status_code == 201
    clock.at = vn(2, 8, 1)
    assert post(client, filing(b, LONG_THO)).status_code == 201
    code_a = session.scalar(select(PortalDossier.dossier_code).where(PortalDossier.ma_ho_so == a))
    code_b = session.scalar(select(PortalDossier.dossier_code).where(PortalDossier.ma_ho_so == b))
    # A dossier received at the desk is not the portal's business.
    services.start_dossier(session, "1.001193", {}, actor="motcua.phuocan", now=vn(2, 8, 2), agency_code=PHUOC_AN)

    report = portal.feed(sessions, vn(2, 8, 3))
    assert report.queued == 4 and not report.waiting
    assert state(client, a)["pending"] == 2 and state(client, a)["pushed"] == 0
    assert deliver(sessions, stand_in.url, vn(2, 8, 3)).sent == 4
    assert [d["MaSuKien"] for d in stand_in.of(a)] == sorted(d["MaSuKien"] for d in stand_in.of(a))
    assert stand_in.accepted[0]["auth"] == "Bearer day-len-cong"
    now_a = state(client, a)
    assert (now_a["pushed"], now_a["pending"], now_a["failed"], now_a["last_error"]) == (2, 0, 0, None)
    assert now_a["dossier_code"] == code_a and now_a["status"] == 2
    assert now_a["last_pushed"]["NoiDungXuLy"] == f"Chuyển đến bước «{STEP_NAMES['tiep_nhan_ks']}»"
    # Nothing new: a second pass queues nothing.
    assert portal.feed(sessions, vn(2, 8, 4)).queued == 0

    # Officers work, interleaved across the two communes.
    complete(session, code_a, PHUOC_AN, "tiep_nhan_ks", vn(2, 8, 30))
    complete(session, code_b, LONG_THO, "tiep_nhan_ks", vn(2, 8, 40))
    assert portal.feed(sessions, vn(2, 8, 41)).queued == 6
    assert deliver(sessions, stand_in.url, vn(2, 8, 41)).sent == 6

    # The portal goes down (503): changes pile up, the first of each dossier is retried.
    stand_in.answer = 503
    lifecycle.request_supplement(session, code_b, ["Bản sao giấy chứng nhận kết hôn"], actor="chuyenvien.longtho", now=vn(2, 9))
    complete(session, code_a, PHUOC_AN, "kiem_tra_ghi_so", vn(2, 9, 30))
    assert portal.feed(sessions, vn(2, 9, 31)).queued == 3
    outage = deliver(sessions, stand_in.url, vn(2, 9, 31))
    assert (outage.sent, outage.retried) == (0, 2)  # one head per dossier; the later ones wait behind it
    down_a = state(client, a)
    assert (down_a["pushed"], down_a["pending"], down_a["failed"]) == (5, 2, 0)
    assert "503" in down_a["last_error"] and down_a["next_attempt_at"] is not None
    assert state(client, b)["pending"] == 1 and state(client, b)["status"] == 5

    # … then the port closes altogether, and work goes on.
    stand_in.stop()
    lifecycle.resume(session, code_b, actor="motcua.longtho", now=vn(2, 10))
    complete(session, code_a, PHUOC_AN, "ky_giay_khai_sinh", vn(2, 10, 30))
    complete(session, code_b, LONG_THO, "kiem_tra_ghi_so", vn(2, 11))
    assert portal.feed(sessions, vn(2, 11, 1)).queued == 5
    closed = deliver(sessions, stand_in.url, vn(2, 11, 1))
    assert (closed.sent, closed.retried) == (0, 2)
    closed_a = state(client, a)
    assert (closed_a["pushed"], closed_a["pending"], closed_a["failed"]) == (5, 4, 0)
    assert "unreachable" in closed_a["last_error"]
    assert state(client, b)["pending"] == 4
    complete(session, code_a, PHUOC_AN, "tra_giay_khai_sinh", vn(2, 11, 15))
    complete(session, code_b, LONG_THO, "ky_giay_khai_sinh", vn(2, 14))
    complete(session, code_b, LONG_THO, "tra_giay_khai_sinh", vn(2, 14, 30))
    lifecycle.return_result(session, code_a, "online", actor="motcua.phuocan", now=vn(2, 15))
    lifecycle.return_result(session, code_b, "online", actor="motcua.longtho", now=vn(2, 15, 5))
    assert portal.feed(sessions, vn(2, 15, 6)).queued == 8
    assert deliver(sessions, stand_in.url, vn(2, 15, 6)).sent == 0

    # The portal comes back: passes run as the clock moves, until nothing is left.
    stand_in.answer = 200
    stand_in.start()
    at = vn(2, 15, 10)
    for _ in range(40):
        deliver(sessions, stand_in.url, at)
        if state(client, a)["pending"] == 0 and state(client, b)["pending"] == 0:
            break
        at += timedelta(minutes=10)
    for ma_ho_so, agency, name in ((a, PHUOC_AN, "UBND xã Phước An"), (b, LONG_THO, "UBND xã Long Thọ")):
        people = {role: session.scalar(text("SELECT full_name FROM officers WHERE username = :u"), {"u": u})
                  for role, u in ACCOUNTS[agency].items()}
        documents = stand_in.of(ma_ho_so)
        assert seen(documents) == expected_trail(name, people, paused=ma_ho_so == b)
        ids = [d["MaSuKien"] for d in documents]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        times = [d["ThoiDiemXuLy"] for d in documents]
        assert times == sorted(times) and times[0] == ("20260302080000" if ma_ho_so == a else "20260302080100")
        final = state(client, ma_ho_so)
        assert (final["pushed"], final["pending"], final["failed"], final["last_error"]) == (len(documents), 0, 0, None)
        assert final["status"] == 10 and final["last_pushed"]["TrangThai"] == 10
    # Each change exactly once, by key; only the two portal dossiers were pushed.
    assert all(count == 1 for count in stand_in.keys.values())
    assert len(stand_in.accepted) == len(stand_in.keys) == 12 + 14
    assert {d["json"]["MaHoSo"] for d in stand_in.accepted} == {a, b}
    assert stand_in.refused == 2  # the 503s; a closed port answers nothing


def test_a_failed_change_holds_the_later_ones_until_it_is_retried(
    web: tuple[Any, Clock], province: Session, db_engine: Engine, stand_in: Portal
) -> None:
    client, _ = web
    sessions = sessionmaker(db_engine, expire_on_commit=False)
    a = "G22.01-260302-000009"
    assert post(client, filing(a, PHUOC_AN)).status_code == 201
    code = province.scalar(select(PortalDossier.dossier_code))
    complete(province, code, PHUOC_AN, "tiep_nhan_ks", vn(2, 8, 30))
    assert portal.feed(sessions, vn(2, 8, 31)).queued == 5
    stand_in.answer = 400  # the portal refuses the document: a permanent error
    failed = deliver(sessions, stand_in.url, vn(2, 8, 31))
    assert (failed.sent, failed.failed) == (0, 1)
    stand_in.answer = 200
    for minutes in (40, 60, 600):  # later changes stay behind the failed one however long we wait
        assert deliver(sessions, stand_in.url, vn(2, 8, 31) + timedelta(minutes=minutes)).claimed == 0
    held = state(client, a)
    assert (held["pushed"], held["pending"], held["failed"]) == (0, 4, 1) and "HTTP 400" in held["last_error"]
    assert stand_in.accepted == []
    # A held dossier does not hold the others, however small the batch.
    b = "G22.01-260302-000010"
    assert post(client, filing(b, LONG_THO)).status_code == 201
    assert portal.feed(sessions, vn(2, 8, 50)).queued == 2
    other = deliver_due(sessions, {"portal": PortalChannel(stand_in.url)}, vn(2, 8, 50), batch=2)
    assert other.sent == 2 and [d["MaHoSo"] for d in stand_in.of(b)] == [b, b]
    assert stand_in.of(a) == []
    retried = client.post(f"/api/v1/portal/dossiers/{a}/retry", headers={"Authorization": f"Bearer {TOKEN}"})
    assert retried.status_code == 200 and retried.get_json()["requeued"] == 1
    assert deliver(sessions, stand_in.url, vn(2, 9)).sent == 5
    assert len(stand_in.of(a)) == 5
    assert [d["MaSuKien"] for d in stand_in.of(a)] == sorted(d["MaSuKien"] for d in stand_in.of(a))
    assert state(client, a)["pushed"] == 5
    assert client.get("/api/v1/portal/dossiers/KHONG-CO", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404
    assert client.get(f"/api/v1/portal/dossiers/{a}").status_code == 401


def test_feeders_at_once_queue_each_change_once(province: Session, db_engine: Engine) -> None:
    sessions = sessionmaker(db_engine, expire_on_commit=False)
    for number in range(1, 6):
        portal.receive(province, filing(f"G22.01-{number}", PHUOC_AN), vn(2, 8, number))
    reports: list[portal.FeedReport] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for _ in range(3):
                reports.append(portal.feed(sessions, vn(2, 9), batch=3))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    while portal.feed(sessions, vn(2, 9), batch=3).read:
        pass
    bodies = [json.loads(b) for b in province.scalars(select(OutboxMessage.body).where(OutboxMessage.channel == "portal"))]
    events = Counter(body["MaSuKien"] for body in bodies)
    assert len(bodies) == 10 and set(events.values()) == {1}
    receipts = province.scalars(select(AuditEvent.id).where(AuditEvent.action.in_(("dossier.receive", "task.ready")))).all()
    assert sorted(events) == sorted(receipts)


def test_the_feeder_never_steps_over_a_change_not_yet_committed(province: Session, db_engine: Engine) -> None:
    sessions = sessionmaker(db_engine, expire_on_commit=False)
    record = portal.receive(province, filing("G22.01-7", PHUOC_AN), vn(2, 8))
    dossier_id = province.scalar(select(Dossier.id).where(Dossier.code == record.dossier_code))
    assert portal.feed(sessions, vn(2, 8, 1)).queued == 2

    def event(connection: Any, minute: int) -> None:
        connection.execute(
            AuditEvent.__table__.insert(),
            {"at": vn(2, 9, minute), "actor": "chuyenvien.phuocan", "action": "dossier.status", "dossier_id": dossier_id,
             "subject": record.dossier_code, "from_state": "2", "to_state": "4", "details": {"reason": f"phút {minute}"}},
        )

    slow = db_engine.connect()
    slow_tx = slow.begin()
    event(slow, 1)  # takes the next audit id, not committed yet
    if db_engine.dialect.name == "postgresql":
        with db_engine.begin() as fast:
            event(fast, 2)  # a higher id, committed first
        waiting = portal.feed(sessions, vn(2, 9, 3))
        assert waiting.waiting and waiting.queued == 0
        assert portal.feed(sessions, vn(2, 9, 4)).queued == 0  # still running: still waiting
    else:
        # SQLite holds one writer at a time: the id is simply not visible yet.
        assert portal.feed(sessions, vn(2, 9, 3)).queued == 0
    slow_tx.commit()
    slow.close()
    if db_engine.dialect.name != "postgresql":
        with db_engine.begin() as fast:
            event(fast, 2)
    done = portal.feed(sessions, vn(2, 9, 5))
    assert done.queued == 2 and not done.waiting
    reasons = [json.loads(b)["NoiDungXuLy"] for b in province.scalars(
        select(OutboxMessage.body).where(OutboxMessage.channel == "portal").order_by(OutboxMessage.id))]
    assert reasons[-2:] == ["Chuyển trạng thái: Đang xử lý. Lý do: phút 1", "Chuyển trạng thái: Đang xử lý. Lý do: phút 2"]

    # A rolled-back id leaves a hole for good: the feeder steps over it once the transaction is over.
    lost = db_engine.connect()
    lost_tx = lost.begin()
    event(lost, 6)
    if db_engine.dialect.name == "postgresql":
        with db_engine.begin() as fast:
            event(fast, 7)
        assert portal.feed(sessions, vn(2, 9, 8)).waiting
    lost_tx.rollback()
    lost.close()
    if db_engine.dialect.name != "postgresql":
        with db_engine.begin() as fast:
            event(fast, 7)
    after = settled(sessions, vn(2, 9, 9))
    assert after.queued == 1 and not after.waiting
    last = json.loads(province.scalars(select(OutboxMessage.body).order_by(OutboxMessage.id.desc())).first())
    assert last["NoiDungXuLy"].endswith("phút 7")


def settled(sessions: sessionmaker[Session], at: datetime) -> portal.FeedReport:
    """Feed until no hole is waiting (a transaction of another database may hold PostgreSQL's horizon a moment)."""
    report = portal.feed(sessions, at)
    for _ in range(100):
        if not report.waiting:
            break
        threading.Event().wait(0.1)
        report = portal.feed(sessions, at)
    return report


def test_push_all_reports_desk_dossiers_by_their_local_code(province: Session, db_engine: Engine, stand_in: Portal) -> None:
    sessions = sessionmaker(db_engine, expire_on_commit=False)
    record = services.start_dossier(province, "1.001193", {}, actor="motcua.phuocan", now=vn(2, 8),
                                    agency_code=PHUOC_AN, channel="in_person")
    # The worker's job drains the trail in passes (here of 1 event each).
    drained = run_portal_feed(sessions, lambda: vn(2, 8, 1), push_all=True, batch=1)
    assert (drained.queued, drained.waiting) == (2, False) and drained.read >= 2
    assert deliver(sessions, stand_in.url, vn(2, 8, 1)).sent == 2
    first = stand_in.accepted[0]["json"]
    assert (first["MaHoSo"], first["MaHoSoDiaPhuong"], first["NguoiXuLy"], first["NoiDungXuLy"]) == (
        record.code, record.code, "Nguyễn Thị Lan", "Tiếp nhận hồ sơ")
    assert portal.push_state(province, record.code).pushed == 2


def test_the_worker_runs_the_feeder_and_sends_through_the_portal_channel(tmp_path: Path) -> None:
    settings = config.load({}, instance_path=str(tmp_path), portal_push_url="https://dvc.example.vn/hoso", portal_push_token="t",
                           portal_interval="30")
    scheduler = build_scheduler(lambda: None, deliver=lambda now: None, settings=settings)  # type: ignore[arg-type,return-value]
    assert {job.id for job in scheduler.get_jobs()} == {"escalation-sweep", "outbox-sender", "portal-feeder", "report-refresh"}
    plain = build_scheduler(lambda: None, settings=config.load({}, instance_path=str(tmp_path)))  # type: ignore[arg-type,return-value]
    assert {job.id for job in plain.get_jobs()} == {"escalation-sweep", "report-refresh"}
    channels = channels_from_settings(settings)
    assert isinstance(channels["portal"], PortalChannel) and channels["portal"].url == "https://dvc.example.vn/hoso"
    assert channels["portal"].token == "t"
    assert "portal" not in channels_from_settings(config.load({}, instance_path=str(tmp_path)))


def test_a_filing_interrupted_after_the_dossier_started_is_finished_by_its_retry(province: Session, db_engine: Engine) -> None:
    sessions = sessionmaker(db_engine, expire_on_commit=False)
    body = filing("G22.01-260302-000042", PHUOC_AN)
    parsed = portal.parse_filing(body)
    # What a filing leaves behind when its process dies between starting the dossier and linking it.
    province.add(PortalDossier(ma_ho_so=parsed.ma_ho_so, procedure_code=parsed.procedure_code, agency_code=PHUOC_AN,
                               state="receiving", request_hash="x" * 64, payload=body, created_at=vn(2, 8)))
    province.commit()
    started = services.start_dossier(province, "1.001193", parsed.data, actor=portal.PORTAL_ACTOR, now=vn(2, 8),
                                     agency_code=PHUOC_AN, home_agency_code=PHUOC_AN, applicant=parsed.applicant, channel="online")
    # The feeder already knows it as a portal dossier (its data names the MaHoSo).
    assert portal.feed(sessions, vn(2, 8, 1)).queued == 2
    pushed = province.scalars(select(OutboxMessage.body).where(OutboxMessage.channel == "portal")).all()
    assert [json.loads(b)["MaHoSo"] for b in pushed] == [parsed.ma_ho_so] * 2
    again = portal.receive(province, body, vn(2, 8, 2))
    assert (again.created, again.dossier_code) == (False, started.code)
    assert province.scalar(select(func.count()).select_from(Dossier)) == 1
    assert province.scalar(select(PortalDossier.state)) == "received"

    # A reservation with no dossier: refused while fresh (the first filing may still be running) …
    other = filing("G22.01-260302-000043", PHUOC_AN)
    province.add(PortalDossier(ma_ho_so="G22.01-260302-000043", procedure_code="1.001193", agency_code=PHUOC_AN,
                               state="receiving", request_hash="y" * 64, payload=other, created_at=vn(2, 9)))
    province.commit()
    with pytest.raises(Conflict) as busy:
        portal.receive(province, other, vn(2, 9, 1))
    assert "đang được tiếp nhận" in busy.value.message
    # … and taken over once stale.
    late = portal.receive(province, other, vn(2, 9, 5))
    assert late.created and late.dossier_code == "000.17.22.H19-260302-0002"
    assert province.scalar(select(func.count()).select_from(Dossier)) == 2


# --------------------------------------------------------------------------- a restart mid-delivery


class _HeldPortal(BaseHTTPRequestHandler):
    """A stand-in portal that keeps its second request waiting (the sender is killed meanwhile)."""

    received: list[tuple[str, dict[str, Any]]] = []
    holding = threading.Event()
    release = threading.Event()

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).received.append((self.headers.get("Idempotency-Key", ""), json.loads(raw.decode("utf-8"))))
        if len(type(self).received) == 2:
            type(self).holding.set()
            type(self).release.wait(60)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"ok": true}')

    def log_message(self, *_args: Any) -> None:
        pass


_SENDER = """
import sys
from datetime import datetime, timedelta
from engine import portal
from engine.core.calendar import VN_TZ
from engine.notify import PortalChannel, deliver_due
from engine.persistence.db import make_engine, make_session_factory
sessions = make_session_factory(make_engine(sys.argv[1]))
now = datetime(2026, 3, 2, 12, 0, tzinfo=VN_TZ) + timedelta(minutes=int(sys.argv[3]))
portal.feed(sessions, now)
print(deliver_due(sessions, {"portal": PortalChannel(sys.argv[2], timeout=90)}, now).sent)
"""


def test_a_sender_killed_mid_delivery_restarts_and_everything_arrives_once_in_order(province: Session, db_engine: Engine) -> None:
    import os
    import signal
    import subprocess
    import sys

    session = province
    _HeldPortal.received, _HeldPortal.holding, _HeldPortal.release = [], threading.Event(), threading.Event()
    a = "G22.01-260302-000009"
    result = portal.receive(session, filing(a, PHUOC_AN), vn(2, 8))
    code = result.dossier_code
    complete(session, code, PHUOC_AN, "tiep_nhan_ks", vn(2, 8, 30))
    complete(session, code, PHUOC_AN, "kiem_tra_ghi_so", vn(2, 9))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HeldPortal)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/api/hoso/capnhat"
    database = db_engine.url.render_as_string(hide_password=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        sender = subprocess.Popen([sys.executable, "-c", _SENDER, database, url, "0"], env=env, cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert _HeldPortal.holding.wait(60), sender.communicate()
        os.kill(sender.pid, signal.SIGKILL)  # the process dies between sending a change and recording it
        sender.wait(timeout=30)
        _HeldPortal.release.set()
        session.rollback()  # see what the other processes committed
        states = session.scalars(select(OutboxMessage.state).where(OutboxMessage.channel == "portal").order_by(OutboxMessage.id)).all()
        # Claimed (or still queued), none recorded as sent after the first: nothing lost, nothing falsely done.
        assert len(states) >= 4 and states[0] == "sent" and states[1] == "sending" and set(states[2:]) <= {"sending", "pending"}
        # The restarted sender waits for the dead one's lease (5 minutes), then sends the rest, in order.
        restarted = subprocess.run([sys.executable, "-c", _SENDER, database, url, "6"], env=env, cwd=ROOT,
                                   capture_output=True, text=True, timeout=120)
        assert restarted.returncode == 0, restarted.stderr[-3000:]
    finally:
        server.shutdown()
    session.rollback()
    rows = session.execute(select(OutboxMessage.id, OutboxMessage.state).where(OutboxMessage.channel == "portal")
                           .order_by(OutboxMessage.id).execution_options(populate_existing=True)).all()
    assert {state for _, state in rows} == {"sent"}
    keys = [key for key, _ in _HeldPortal.received]
    first_seen = list(dict.fromkeys(keys))
    assert first_seen == [f"outbox-{id_}" for id_, _ in rows]  # every change, in the order it happened
    assert len(keys) == len(rows) + 1 and keys.count(keys[1]) == 2  # only the one in flight came twice, same key
    events = [body["MaSuKien"] for _key, body in _HeldPortal.received]
    assert list(dict.fromkeys(events)) == sorted(set(events))
