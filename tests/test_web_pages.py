"""The pages through Flask's test client, on SQLite and PostgreSQL with the demo
province: sign-in, CSRF, permissions, and the flows of each audience."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from engine import lifecycle, services
from engine.persistence.models import Dossier, Feedback, Rating, Task

from .web_support import (
    KHAI_SINH,
    ROOT,
    LONG_THO,
    PHUOC_AN,
    broken_birth_registration,
    csrf_of,
    login,
    make_app,
    module_engine,
    post,
    receive,
    seed,
    wall_clock,
)

DAI_PHUOC = "000.17.24.H19"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def web(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, Engine]]:
    """One database with the demo province per backend, shared by this module's tests
    (each test works on dossiers of its own)."""
    engines = module_engine(request.param, tmp_path_factory.mktemp("web"))
    engine = next(engines)
    seed(engine)
    yield make_app(engine), engine
    engines.close()


@pytest.fixture
def app(web: tuple[Flask, Engine]) -> Flask:
    return web[0]


@pytest.fixture
def engine(web: tuple[Flask, Engine]) -> Engine:
    return web[1]


def _text(response: Any) -> str:
    return response.get_data(as_text=True)


def _flashes(html: str) -> list[str]:
    return re.findall(r'class="thong-bao [a-z]*" role="status">([^<]*)<', html)


def _run_to(session: Session, code: str, last_step: str | None = None) -> None:
    """Complete the birth registration's steps as the demo accounts, up to ``last_step`` (all by default)."""
    forms = {
        "tiep_nhan_ks": ("motcua.phuocan", {"nguoi_yeu_cau": "Nguyễn Văn Minh", "quan_he": "Cha", "ho_ten_tre": "Nguyễn Ngọc Anh",
                                            "ngay_sinh": "2026-02-20", "gioi_tinh": "Nữ", "noi_sinh": "Bệnh viện Đa khoa Đồng Nai"}),
        "kiem_tra_ghi_so": ("chuyenvien.phuocan", {"so_dang_ky": "12/2026", "so_dinh_danh": "075226000123", "dung_han": True}),
        "ky_giay_khai_sinh": ("lanhdao.phuocan", {"tra_lai": False}),
        "tra_giay_khai_sinh": ("motcua.phuocan", {"so_ban_sao": 1, "phi_le_phi_da_thu": 8000}),
    }
    while True:
        open_rows = services.open_tasks(session, code)
        if not open_rows:
            return
        task = open_rows[0]
        actor, data = forms[task.step_id]
        services.complete_task(session, task.id, data, actor=actor, now=wall_clock())
        if task.step_id == last_step:
            return


# --------------------------------------------------------------------------- sign-in, CSRF, errors


def test_sign_in_shows_name_roles_and_agency_and_sign_out_revokes(app: Flask) -> None:
    client = app.test_client()
    first = client.get("/cong-viec")
    assert first.status_code == 302 and first.location.startswith("/dang-nhap")
    wrong = login(client, "motcua.phuocan", "sai-mat-khau")
    assert wrong.status_code == 401 and "Sai tên đăng nhập hoặc mật khẩu." in _text(wrong)
    signed = login(client, "motcua.phuocan")
    assert signed.status_code == 302 and signed.location == "/lam-viec"
    page = _text(client.get("/tiep-nhan"))
    assert "Nguyễn Thị Lan" in page and "Công chức Bộ phận Một cửa — UBND xã Phước An" in page
    assert "Tiếp nhận hồ sơ" in page and "Tải lên quy trình" not in page  # navigation by role
    cookie = client.get_cookie("motcua_phien")
    assert cookie is not None and cookie.http_only
    out = post(client, "/dang-xuat", {}, page="/tiep-nhan")
    assert out.status_code == 302
    # The old session cookie no longer works: the token behind it is revoked on the server.
    replay = app.test_client()
    replay.set_cookie("motcua_phien", cookie.value)
    assert replay.get("/tiep-nhan").status_code == 302


def test_a_post_without_csrf_token_gets_the_400_page(app: Flask) -> None:
    client = app.test_client()
    login(client, "motcua.phuocan")
    for path in ("/tiep-nhan?thu-tuc=" + KHAI_SINH, "/dang-xuat", "/tra-cuu"):
        response = client.post(path, data={"name": "X", "phone": "0912345678"})
        assert response.status_code == 400, path
        assert "Yêu cầu không hợp lệ" in _text(response) and "CSRF" in _text(response)
    assert client.post("/dang-nhap", data={"username": "motcua.phuocan", "password": "motcua-demo"}).status_code == 400
    # The JSON API keeps its bearer tokens and needs no CSRF token.
    api = client.post("/api/v1/auth/login", json={"username": "motcua.phuocan", "password": "motcua-demo"})
    assert api.status_code == 200 and "token" in api.get_json()


def test_permissions_and_vietnamese_error_pages(app: Flask, engine: Engine) -> None:
    with Session(engine) as session:
        code = receive(session)
    officer = app.test_client()
    login(officer, "chuyenvien.phuocan")
    forbidden = officer.get("/tiep-nhan")
    assert forbidden.status_code == 403 and "Không có quyền truy cập" in _text(forbidden)
    assert officer.get("/thu-tuc/tai-len").status_code == 403
    assert officer.get(f"/ho-so/{code}").status_code == 200
    other_commune = app.test_client()
    login(other_commune, "motcua.longtho")
    assert other_commune.get(f"/ho-so/{code}").status_code == 403
    assert other_commune.get(f"/ho-so/{code}/mau/01").status_code == 403
    assert post(other_commune, f"/ho-so/{code}/rut-ho-so", {"ly_do": "x"}).status_code == 403
    missing = officer.get("/ho-so/000.17.22.H19-000000-9999")
    assert missing.status_code == 404 and "Không tìm thấy" in _text(missing)
    nowhere = officer.get("/khong-co-trang-nay")
    assert nowhere.status_code == 404 and "<html lang=\"vi\">" in _text(nowhere)
    assert app.test_client().get("/api/v1/khong-co").content_type.startswith("application/problem+json")
    assert officer.get("/cong-viec/99999999999").status_code == 404
    assert officer.get("/ho-so/" + "9" * 300).status_code == 404
    nul = officer.get("/ho-so?q=a%00b")
    assert nul.status_code == 400 and "Yêu cầu không hợp lệ" in _text(nul)
    anonymous = app.test_client()
    home = anonymous.get("/")
    assert KHAI_SINH in _text(home) and "Đăng ký khai sinh" in _text(home)  # the public catalog
    assert "script-src 'none'" in home.headers["Content-Security-Policy"]
    assert anonymous.get(f"/thu-tuc/{KHAI_SINH}").status_code == 200
    assert anonymous.get(f"/ho-so/{code}").status_code == 302  # to the sign-in page
    assert officer.get(f"/ho-so/{code}").headers["Cache-Control"] == "no-store"
    supervisor = app.test_client()
    login(supervisor, "giamsat.tinh")
    assert supervisor.get(f"/ho-so/{code}").status_code == 200  # sees the agencies below the province
    assert supervisor.get("/cong-viec").status_code == 403


# --------------------------------------------------------------------------- reception


def test_receptionist_finds_the_procedure_receives_and_prints_form_01(app: Flask, engine: Engine) -> None:
    client = app.test_client()
    login(client, "motcua.phuocan")
    found = _text(client.get("/tiep-nhan?q=khai sinh"))
    assert KHAI_SINH in found and "2.000815" not in found
    assert "2.000815" in _text(client.get("/tiep-nhan?q=2.000815"))
    page = _text(client.get(f"/tiep-nhan?thu-tuc={KHAI_SINH}"))
    assert "Bưu chính công ích" in page and "Trực tuyến" in page
    bad = client.post(f"/tiep-nhan?thu-tuc={KHAI_SINH}", data={"csrf_token": csrf_of(page), "desk": LONG_THO, "home": PHUOC_AN,
                                                              "name": "", "phone": "12", "channel": "by_pigeon"})
    assert bad.status_code == 400 and "Nhập họ và tên người nộp." in _text(bad) and "Số điện thoại không hợp lệ." in _text(bad)
    assert _text(bad).count("Lựa chọn không hợp lệ.") == 2  # another commune's desk, an unknown channel
    done = client.post(f"/tiep-nhan?thu-tuc={KHAI_SINH}", data={
        "csrf_token": csrf_of(page), "desk": PHUOC_AN, "home": DAI_PHUOC, "name": "<script>alert(1)</script> Lê Thị B",
        "id_number": "075226000123", "phone": "0912 345 678", "email": "b@example.vn", "address": "Ấp 3, Phước An",
        "channel": "post", "other_documents": "Tờ khai đăng ký khai sinh\nGiấy chứng sinh", "hanh_dong": "tiep_nhan",
    })
    assert done.status_code == 302
    code = done.location.rsplit("/", 1)[-1]
    assert code.startswith(PHUOC_AN + "-")
    shown = _text(client.get(done.location))
    assert f"Đã tiếp nhận hồ sơ {code}." in _flashes(shown)[0]
    assert "<script>alert(1)</script>" not in shown and "&lt;script&gt;alert(1)&lt;/script&gt; Lê Thị B" in shown
    assert "Bưu chính công ích" in shown and "Giấy chứng sinh (1 bản)" in shown
    form01 = client.get(f"/ho-so/{code}/mau/01")
    assert form01.status_code == 200 and form01.mimetype == "text/html"
    assert "GIẤY TIẾP NHẬN HỒ SƠ" in _text(form01).upper() and code in _text(form01) and "<svg" in _text(form01)
    assert client.get(f"/ho-so/{code}/mau/02").status_code == 404  # no supplement was requested
    pdf = client.get(f"/ho-so/{code}/mau/01?dinh-dang=pdf")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf" and pdf.data.startswith(b"%PDF")
    with Session(engine) as session:
        dossier = session.scalar(select(Dossier).where(Dossier.code == code))
        assert dossier.channel == "post" and dossier.applicant_email == "b@example.vn"
        assert dossier.data["nguoi_nop"]["so_dinh_danh"] == "075226000123"
        assert [d["name"] for d in dossier.data["documents"]] == ["Tờ khai đăng ký khai sinh", "Giấy chứng sinh"]
        assert dossier.home_agency_id != dossier.receiving_agency_id  # received for another commune


def test_the_checklist_comes_from_the_procedures_documents_property(app: Flask, engine: Engine) -> None:
    text = (ROOT / "processes" / "chung-thuc-ban-sao.bpmn").read_text(encoding="utf-8")
    text = text.replace('<camunda:property name="code" value="2.000815" />', '<camunda:property name="code" value="9.000815" />')
    text = re.sub(r'<camunda:property name="documents" value="[^"]*" />',
                  '<camunda:property name="documents" value="Bản chính giấy tờ; Bản sao cần chứng thực" />', text)
    with Session(engine) as session:
        services.deploy(session, {"ct.bpmn": text.encode("utf-8")}, actor="thietke.tinh", now=wall_clock())
    client = app.test_client()
    login(client, "motcua.phuocan")
    page = _text(client.get("/tiep-nhan?thu-tuc=9.000815"))
    assert 'for="giay_to_0">Bản chính giấy tờ</label>' in page and 'for="giay_to_1">Bản sao cần chứng thực</label>' in page
    done = client.post("/tiep-nhan?thu-tuc=9.000815", data={
        "csrf_token": csrf_of(page), "desk": PHUOC_AN, "home": PHUOC_AN, "name": "Võ Văn E", "phone": "0911000111",
        "channel": "in_person", "giay_to_1": "co", "other_documents": "Giấy ủy quyền", "hanh_dong": "tiep_nhan"})
    code = done.location.rsplit("/", 1)[-1]
    with Session(engine) as session:
        assert [d["name"] for d in services.get_dossier(session, code).data["documents"]] == ["Bản sao cần chứng thực", "Giấy ủy quyền"]


def test_refusal_at_the_desk_prints_form_03(app: Flask) -> None:
    client = app.test_client()
    login(client, "motcua.phuocan")
    page = _text(client.get(f"/tiep-nhan?thu-tuc={KHAI_SINH}"))
    refused = client.post(f"/tiep-nhan?thu-tuc={KHAI_SINH}", data={
        "csrf_token": csrf_of(page), "desk": PHUOC_AN, "home": PHUOC_AN, "name": "Trần Văn C", "phone": "0987654321",
        "channel": "in_person", "refusal_reasons": "Thiếu Giấy chứng sinh", "hanh_dong": "tu_choi"})
    assert refused.status_code == 302
    code = refused.location.rsplit("/", 1)[-1]
    shown = _text(client.get(refused.location))
    assert "Không được tiếp nhận" in shown and "/mau/03" in shown and "/mau/01" not in shown
    assert "Thiếu Giấy chứng sinh" in _text(client.get(f"/ho-so/{code}/mau/03"))


def test_desk_returns_the_result_records_withdrawal_and_apology(app: Flask, engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        finished = receive(session)
        _run_to(session, finished)
        late = receive(session, now=wall_clock() - timedelta(days=10))
        leaving = receive(session)
    client = app.test_client()
    login(client, "motcua.phuocan")
    page = f"/ho-so/{finished}"
    returned = post(client, f"/ho-so/{finished}/tra-ket-qua", {"kenh": "desk"}, page=page)
    assert returned.status_code == 302
    assert "Đã trả kết quả." in _flashes(_text(client.get(page)))
    again = post(client, f"/ho-so/{finished}/tra-ket-qua", {"kenh": "desk"}, page=page)
    assert "Không thể trả kết quả: hồ sơ đã trả kết quả." in _flashes(_text(client.get(again.location)))
    post(client, f"/ho-so/{leaving}/rut-ho-so", {"ly_do": "Công dân xin rút"}, page=page)
    assert "Công dân yêu cầu rút hồ sơ" in _text(client.get(f"/ho-so/{leaving}"))
    late_page = _text(client.get(f"/ho-so/{late}"))
    assert 'class="nhan overdue">Quá hạn' in late_page and "lanhdao.phuocan|000.17.22.H19" in late_page
    new_day = (wall_clock() + timedelta(days=7)).date().isoformat()
    post(client, f"/ho-so/{late}/xin-loi", {"ngay_hen": new_day, "gio_hen": "15:30", "nguoi_ky": f"lanhdao.phuocan|{PHUOC_AN}",
                                          "ly_do": "Thiếu cán bộ"}, page=page)
    after = _text(client.get(f"/ho-so/{late}"))
    assert "(đã hẹn lại)" in after and "/mau/04" in after
    assert "Thiếu cán bộ" in _text(client.get(f"/ho-so/{late}/mau/04"))
    with Session(engine) as session:
        assert services.get_dossier(session, late).new_appointment_at is not None
        assert services.get_dossier(session, finished).status == 10


def test_dossier_search_by_code_or_applicant_and_status(app: Flask, engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        codes = [receive(session, name=f"Hoàng Tìm Kiếm {i}") for i in range(3)]
    client = app.test_client()
    login(client, "giamsat.tinh")
    by_name = _text(client.get("/ho-so?q=hoàng tìm"))
    assert all(code in by_name for code in codes) and "3 mục." in by_name
    by_code = _text(client.get(f"/ho-so?q={codes[1]}"))
    assert codes[1] in by_code and codes[0] not in by_code
    assert "Không có hồ sơ nào." in _text(client.get("/ho-so?q=%25"))  # a LIKE wildcard is just a character
    assert "Không có hồ sơ nào." in _text(client.get("/ho-so?q=hoàng tìm&trang-thai=10"))


# --------------------------------------------------------------------------- officers


def test_officer_claims_completes_with_the_step_form_and_returns(app: Flask, engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        code = receive(session)
        _run_to(session, code, last_step="tiep_nhan_ks")
        task_id = services.open_tasks(session, code)[0].id
    client = app.test_client()
    login(client, "chuyenvien.phuocan")
    inbox = _text(client.get("/cong-viec"))
    assert code in inbox.split('id="hang-cho"')[1]
    claimed = post(client, f"/cong-viec/{task_id}/nhan", {}, page="/cong-viec")
    assert claimed.status_code == 302 and claimed.location == f"/cong-viec/{task_id}"
    step = _text(client.get(claimed.location))
    assert "Số đăng ký trong Sổ hộ tịch *" in step and 'name="f_dung_han"' in step
    assert "<dt>Họ, chữ đệm, tên người được khai sinh</dt><dd>Nguyễn Ngọc Anh</dd>" in step  # what the desk recorded
    assert code in _text(client.get("/cong-viec")).split('id="hang-cho"')[0]
    missing = post(client, f"/cong-viec/{task_id}/hoan-thanh", {"f_so_dang_ky": ""}, page=claimed.location)
    assert missing.status_code == 400 and "chưa điền các trường bắt buộc: Số đăng ký trong Sổ hộ tịch" in _text(missing)
    done = post(client, f"/cong-viec/{task_id}/hoan-thanh",
                {"f_so_dang_ky": "12/2026", "f_so_dinh_danh": "075226000123", "f_dung_han": "co"}, page=claimed.location)
    assert done.status_code == 302
    with Session(engine) as session:
        row = session.get(Task, task_id)
        assert row.state == "completed" and row.completed_by == "chuyenvien.phuocan"
        assert services.get_dossier(session, code).data["dung_han"] is True
        leader_task = services.open_tasks(session, code)[0]
    history = _text(client.get(f"/ho-so/{code}"))
    assert "Hoàn thành bước" in history and "Nhận xử lý bước" in history
    assert "<td data-nhan=\"Người\">Trần Văn Hùng</td>" in history  # officers by name
    assert "Kiểm tra hồ sơ, ghi Sổ hộ tịch, lấy số định danh cá nhân</td></tr>" in history  # steps by name
    leader = app.test_client()
    login(leader, "lanhdao.phuocan")
    post(leader, f"/cong-viec/{leader_task.id}/nhan", {}, page="/cong-viec")
    no_reason = post(leader, f"/cong-viec/{leader_task.id}/tra-lai", {"ly_do": " "}, page="/cong-viec")
    assert "Ghi rõ lý do trả lại." in _flashes(_text(leader.get(no_reason.location)))
    back = post(leader, f"/cong-viec/{leader_task.id}/tra-lai", {"ly_do": "Sai tên người mẹ"}, page="/cong-viec")
    assert back.status_code == 302
    with Session(engine) as session:
        again = services.open_tasks(session, code)[0]
        assert again.step_id == "kiem_tra_ghi_so" and again.assignee == "chuyenvien.phuocan"
    assert "Sai tên người mẹ" in _text(client.get(f"/ho-so/{code}"))


def test_supplement_pause_resume_reassign_and_stop(app: Flask, engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        code = receive(session)
        _run_to(session, code, last_step="tiep_nhan_ks")
        task_id = services.open_tasks(session, code)[0].id
        other = receive(session)
    officer = app.test_client()
    login(officer, "chuyenvien.phuocan")
    page = f"/ho-so/{code}"
    assert "yeu-cau-nghia-vu-tai-chinh" not in _text(officer.get(page))  # birth registration declares no fees to wait for
    post(officer, f"/ho-so/{code}/yeu-cau-bo-sung", {"noi_dung": "Bản sao CCCD của mẹ\nGiấy chứng sinh bản chính"}, page=page)
    shown = _text(officer.get(page))
    assert "<strong>Yêu cầu bổ sung</strong>" in shown and "/mau/02" in shown
    assert "Bản sao CCCD của mẹ" in _text(officer.get(f"/ho-so/{code}/mau/02"))
    paused = post(officer, f"/cong-viec/{task_id}/hoan-thanh", {"f_so_dang_ky": "1", "f_so_dinh_danh": "2"}, page=page)
    assert paused.status_code == 400 and "hồ sơ đang tạm dừng" in _text(paused)
    post(officer, f"/ho-so/{code}/da-bo-sung", {}, page=page)
    assert "<strong>Đang xử lý</strong>" in _text(officer.get(page))
    leader = app.test_client()
    login(leader, "lanhdao.phuocan")
    assert 'value="chuyenvien.phuocan"' in _text(leader.get(f"/cong-viec/{task_id}"))
    assert 'name="nguoi_nhan"' not in _text(officer.get(f"/cong-viec/{task_id}"))  # only leaders hand steps out
    given = post(leader, f"/cong-viec/{task_id}/giao-lai", {"nguoi_nhan": "chuyenvien.phuocan"}, page=page)
    assert "Đã giao bước cho chuyenvien.phuocan." in _flashes(_text(leader.get(given.location)))
    assert post(officer, f"/ho-so/{other}/dung-xu-ly", {"ly_do": "x"}, page=page).status_code == 403
    post(leader, f"/ho-so/{other}/dung-xu-ly", {"ly_do": "Theo đề nghị của cơ quan công an"}, page=page)
    with Session(engine) as session:
        assert session.get(Task, task_id).assignee == "chuyenvien.phuocan"
        assert services.get_dossier(session, other).status == 8
        assert services.get_dossier(session, code).supplement_requests == 1


def test_inbox_is_sorted_by_urgency_coloured_and_paginated(app: Flask, engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        for i in range(22):
            receive(session, name=f"Người nộp {i:02d}", agency=LONG_THO, actor="motcua.longtho")
        overdue = receive(session, name="Người trễ hạn", agency=LONG_THO, actor="motcua.longtho", now=wall_clock() - timedelta(days=20))
    client = app.test_client()
    login(client, "motcua.longtho")
    first = _text(client.get("/cong-viec"))
    assert "Hàng chờ của vai trò (23)" in first and "Trang 1 / 2 (23 mục)" in first
    rows = re.findall(r'<tr class="(overdue|soon|normal|)">.*?/ho-so/([^"]+)"', first, re.S)
    assert rows[0] == ("overdue", overdue)  # most urgent first
    assert len(rows) == 20
    second = _text(client.get("/cong-viec?trang-cho=2"))
    assert "Trang 2 / 2 (23 mục)" in second and len(re.findall(r'<tr class="', second)) == 3
    assert overdue not in second


# --------------------------------------------------------------------------- designers


def test_designer_sees_catalog_and_procedure_with_diagram_and_metadata(app: Flask) -> None:
    client = app.test_client()
    login(client, "thietke.tinh")
    catalog = _text(client.get("/thu-tuc?q=khai"))
    assert KHAI_SINH in catalog and "Hộ tịch" in catalog and "2.000815" not in catalog
    page = _text(client.get(f"/thu-tuc/{KHAI_SINH}"))
    assert "Công chức Tư pháp – Hộ tịch" in page and "Chuyên viên" in page and "2 giờ làm việc" in page
    assert "trong ngày" in page and "15:00" in page
    assert 'data-element-id="kiem_tra_ghi_so"' in page or "Sơ đồ chưa có" in page
    assert client.get(f"/thu-tuc/{KHAI_SINH}?phien-ban=7").status_code == 404


def test_designer_uploads_a_procedure_made_of_two_files(app: Flask) -> None:
    import io

    client = app.test_client()
    login(client, "thietke.tinh")
    token = csrf_of(_text(client.get("/thu-tuc/tai-len")))
    main, called = (ROOT / "processes" / n for n in ("dang-ky-dat-dai-lan-dau.bpmn", "xac-dinh-nghia-vu-tai-chinh.bpmn"))
    alone = client.post("/thu-tuc/tai-len", data={"csrf_token": token, "files": [(io.BytesIO(main.read_bytes()), main.name)]},
                        content_type="multipart/form-data")
    assert alone.status_code == 422 and "Quy trình được gọi chưa có trong các tệp tải lên" in _text(alone)
    both = client.post("/thu-tuc/tai-len", data={"csrf_token": token, "files": [(io.BytesIO(main.read_bytes()), main.name),
                                                                                (io.BytesIO(called.read_bytes()), called.name)]},
                       content_type="multipart/form-data")
    assert both.status_code == 302 and both.location.startswith("/thu-tuc/1.013978?phien-ban=")
    page = _text(client.get(both.location))
    assert "Đã triển khai thủ tục 1.013978" in page and main.name in page and called.name in page
    assert "Văn phòng đăng ký đất đai phụ trách nơi quản lý hồ sơ" in page  # lane agency "named:vpdk" in words
    empty = client.post("/thu-tuc/tai-len", data={"csrf_token": token}, content_type="multipart/form-data")
    assert empty.status_code == 400 and "Chọn ít nhất một tệp BPMN" in _text(empty)


def test_designer_uploads_a_broken_diagram_fills_the_gaps_and_deploys(app: Flask, engine: Engine) -> None:
    import io

    client = app.test_client()
    login(client, "thietke.tinh")
    token = csrf_of(_text(client.get("/thu-tuc/tai-len")))
    rejected = client.post("/thu-tuc/tai-len", data={"csrf_token": token, "files": (io.BytesIO(broken_birth_registration()), "khai-sinh.bpmn")},
                           content_type="multipart/form-data")
    assert rejected.status_code == 422
    html = _text(rejected)
    assert 'id="loi-1"' in html and "Chưa có thời hạn giải quyết" in html
    assert "Làn “Công chức Tư pháp – Hộ tịch” chưa có vai trò" in html
    assert 'name="gt-0-lane_ks_tu_phap-role"' in html and 'name="gt-0-kiem_tra_ghi_so-allotment"' in html
    assert 'name="gt-0-DangKyKhaiSinh-deadline"' in html
    carried = re.findall(r'name="noi_dung" value="([^"]+)"', html)[0]
    show = client.post("/thu-tuc/tai-len/xem", data={"csrf_token": token, "ten_tep": "khai-sinh.bpmn", "noi_dung": carried,
                                                     "phan_tu": "kiem_tra_ghi_so", "tep": "khai-sinh.bpmn"})
    assert show.status_code == 422 and "đang tô đậm <code>kiem_tra_ghi_so</code>" in _text(show)
    wrong = client.post("/thu-tuc/tai-len/bo-sung", data={"csrf_token": token, "ten_tep": "khai-sinh.bpmn", "noi_dung": carried,
                                                         "gt-0-kiem_tra_ghi_so-allotment": "mai"})
    assert wrong.status_code == 400 and "không phải là thời hạn" in _text(wrong)
    filled = client.post("/thu-tuc/tai-len/bo-sung", data={
        "csrf_token": token, "ten_tep": "khai-sinh.bpmn", "noi_dung": carried,
        "gt-0-DangKyKhaiSinh-deadline": "trong ngày", "gt-0-lane_ks_tu_phap-role": "officer",
        "gt-0-kiem_tra_ghi_so-allotment": "2 giờ làm việc"})
    assert filled.status_code == 302 and filled.location == "/thu-tuc/9.000001?phien-ban=1"
    page = _text(client.get(filled.location))
    assert "Đã triển khai thủ tục 9.000001" in page and "trong ngày" in page
    with Session(engine) as session:
        version = services.get_version(session, "9.000001")
        assert version.meta["steps"]["kiem_tra_ghi_so"]["role"] == "officer"
    # A receptionist may not upload.
    desk = app.test_client()
    login(desk, "motcua.phuocan")
    assert desk.post("/thu-tuc/tai-len", data={"csrf_token": csrf_of(_text(desk.get("/tra-cuu")))}).status_code == 403


# --------------------------------------------------------------------------- citizens


def test_citizen_lookup_reveals_nothing_for_a_wrong_secret(app: Flask, engine: Engine) -> None:
    with Session(engine) as session:
        code = receive(session, name="Phạm Thị Riêng Tư", phone="0912345678")
    client = app.test_client()
    qr = client.get(f"/tra-cuu?ma={code}")
    assert qr.status_code == 200 and f'value="{code}"' in _text(qr)
    form01 = app.test_client()
    login(form01, "motcua.phuocan")
    assert f"/tra-cuu?ma={code}" in _text(form01.get(f"/ho-so/{code}/mau/01"))  # what the QR code encodes
    token = csrf_of(_text(qr))
    unknown_code = code[:-4] + "9999"
    wrong = client.post("/tra-cuu", data={"csrf_token": token, "ma": code, "ma_bi_mat": "0000"})
    unknown = client.post("/tra-cuu", data={"csrf_token": token, "ma": unknown_code, "ma_bi_mat": "5678"})
    assert wrong.status_code == unknown.status_code == 404
    assert _text(wrong).replace(code, "X") == _text(unknown).replace(unknown_code, "X")
    right = client.post("/tra-cuu", data={"csrf_token": token, "ma": code, "ma_bi_mat": "5678"})
    html = _text(right)
    assert right.status_code == 200 and "Được tiếp nhận" in html and "Hẹn trả kết quả" in html
    assert "Phạm Thị Riêng Tư" not in html and "0912345678" not in html
    assert "Đánh giá mức độ hài lòng" not in html  # not returned yet


def test_citizen_rates_a_returned_dossier_once_and_sends_feedback(app: Flask, engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        code = receive(session)
        _run_to(session, code)
        lifecycle.return_result(session, code, "desk", "motcua.phuocan", wall_clock())
    client = app.test_client()
    token = csrf_of(_text(client.get("/tra-cuu")))
    result = _text(client.post("/tra-cuu", data={"csrf_token": token, "ma": code, "ma_bi_mat": "5678"}))
    assert "Đánh giá mức độ hài lòng" in result and "Rất hài lòng" in result
    scores = {f"diem_{key}": "5" for key in ("tiep_can", "thu_tuc", "thoi_gian", "chi_phi", "cong_chuc", "ket_qua")}
    rated = client.post("/tra-cuu/danh-gia", data={"csrf_token": token, "ma": code, "ma_bi_mat": "5678", "y_kien": "Tốt", **scores})
    assert rated.status_code == 200 and "Cảm ơn ông/bà đã đánh giá" in _text(rated) and "Ông/bà đã đánh giá hồ sơ này" in _text(rated)
    twice = client.post("/tra-cuu/danh-gia", data={"csrf_token": token, "ma": code, "ma_bi_mat": "5678", **scores})
    assert twice.status_code == 400
    sent = client.post("/phan-anh", data={"csrf_token": token, "subject": "Góp ý", "content": "Nơi chờ quá nóng", "ma": code, "ma_bi_mat": "5678"})
    assert sent.status_code == 200 and "Đã gửi phản ánh, kiến nghị." in _text(sent)
    hidden = client.post("/phan-anh", data={"csrf_token": token, "subject": "Góp ý", "content": "x", "ma": code, "ma_bi_mat": "1111"})
    assert hidden.status_code == 404
    with Session(engine) as session:
        assert session.scalar(select(Rating.satisfied)) is True
        assert [f.content for f in session.scalars(select(Feedback))] == ["Nơi chờ quá nóng"]
