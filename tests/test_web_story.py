"""The whole story of one procedure in a real browser (headless Chromium driven by
Playwright) against the app under a real WSGI server on loopback: a designer uploads
1.001612 Đăng ký thành lập hộ kinh doanh, the desk of xã Phước An receives a dossier,
officers of the commune and of the provincial tax office handle their steps from their
inbox, the desk returns the result, and the citizen looks the dossier up on a phone and
rates it once. Screenshots of every stage go to ``instance/screenshots/cau-chuyen-*.png``."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from waitress import create_server

from engine import public
from engine.persistence.models import Dossier, Rating

from .web_support import PASSWORD, PHUOC_AN, ROOT, make_app, module_engine, seed

CHROMIUM = "/usr/bin/chromium"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
SHOTS = ROOT / "instance" / "screenshots"
BPMN = ROOT / "processes" / "dang-ky-ho-kinh-doanh.bpmn"
CODE = "1.001612"
NAME = "Đăng ký thành lập hộ kinh doanh"
ACCOUNTS = ("thietke.tinh", "motcua.phuocan", "chuyenvien.phuocan", "truongphong.phuocan", "chuyenvien.thue")
STEPS = ("tiep_nhan", "tham_dinh", "cap_giay_chung_nhan", "tra_ket_qua", "thue_tiep_nhan")
APPLICANT = "Trần Thị Hoa"
PHONE_NUMBER = "0987 654 321"
BUSINESS = "Hộ kinh doanh Tạp hóa Hoa"
APPLICATION = "Giấy đề nghị đăng ký hộ kinh doanh (Phụ lục 2, Thông tư 68/2025/TT-BTC)"


@dataclass
class Site:
    engine: Engine
    base: str


@pytest.fixture(params=["sqlite", "postgresql"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    """The app on the demo province (birth registration deployed,
    the household business procedure not yet) under waitress on a free port."""
    engines = module_engine(request.param, tmp_path)
    engine = next(engines)
    seed(engine, accounts=ACCOUNTS, procedures=("dang-ky-khai-sinh.bpmn",))
    app = make_app(engine, public_url="http://127.0.0.1")
    server = create_server(app, host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield Site(engine, f"http://127.0.0.1:{server.effective_port}")
    finally:
        server.close()
        engines.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


def _shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"cau-chuyen-{name}.png"), full_page=True)


def _signed_in(browser: Browser, base: str, username: str) -> tuple[BrowserContext, Page]:
    """A desktop browser of its own, signed in as ``username``."""
    context = browser.new_context(viewport=DESKTOP, locale="vi-VN")
    page = context.new_page()
    page.goto(f"{base}/dang-nhap")
    page.get_by_label("Tên đăng nhập").fill(username)
    page.get_by_label("Mật khẩu").fill(PASSWORD)
    page.get_by_role("button", name="Đăng nhập").click()
    expect(page.locator(".thong-bao.success")).to_contain_text("ông/bà đã đăng nhập")
    return context, page


def _success(page: Page, text: str) -> None:
    expect(page.locator(".thong-bao.success")).to_contain_text(text)
    expect(page.locator(".thong-bao.error")).to_have_count(0)


def _states(page: Page, **expected: str) -> None:
    """Each step's state on the dossier diagram (done, current, or '' for not reached)."""
    for step, state in expected.items():
        shape = page.locator(f'#so-do [data-element-id="{step}"]')
        expect(shape).to_have_count(1)
        if state:
            expect(shape).to_have_class(re.compile(rf"\bstate-{state}\b"))
        else:
            expect(shape).not_to_have_class(re.compile(r"\bstate-"))


def _status(page: Page, label: str) -> None:
    expect(page.locator("dl.thong-tin dt", has_text="Trạng thái").locator("xpath=following-sibling::dd[1]")).to_have_text(label)


def _claim_from_inbox(page: Page, base: str, code: str, step: str, agency: str) -> None:
    """Find the step of dossier ``code`` in the role's queue and claim it; lands on the step's page."""
    page.goto(f"{base}/cong-viec")
    row = page.locator("#hang-cho ~ div tr", has_text=code)
    expect(row).to_have_count(1)
    expect(row).to_contain_text(step)
    expect(row).to_contain_text(agency)
    expect(page.locator("#cua-toi ~ div").first.locator("tr", has_text=code)).to_have_count(0)
    row.get_by_role("button", name="Nhận xử lý").click()
    _success(page, "Đã nhận xử lý bước")
    expect(page.locator("h1")).to_have_text(step)


def _complete(page: Page, step: str, code: str) -> None:
    page.get_by_role("button", name="Hoàn thành bước").click()
    _success(page, f"Đã hoàn thành bước “{step}” của hồ sơ {code}.")
    expect(page.locator("h1")).to_have_text("Công việc của tôi")
    expect(page.locator("#cua-toi ~ div").first.locator("tr", has_text=code)).to_have_count(0)


def test_household_business_from_upload_to_rating(site: Site, browser: Browser) -> None:
    base = site.base

    # 1. The designer uploads the procedure and sees its first version with the diagram.
    context, page = _signed_in(browser, base, "thietke.tinh")
    page.goto(f"{base}/thu-tuc/tai-len")
    page.set_input_files("#files", str(BPMN))
    page.get_by_role("button", name="Kiểm tra và triển khai").click()
    _success(page, f"Đã triển khai thủ tục {CODE} — {NAME}, phiên bản 1.")
    expect(page.locator("h1")).to_have_text(f"{CODE} — {NAME}")
    expect(page.locator("main > p").first).to_contain_text("Phiên bản 1 (đang dùng)")
    expect(page.locator("main > p").first).to_contain_text("thietke.tinh")
    for step in STEPS:
        expect(page.locator(f'#so-do [data-element-id="{step}"]')).to_have_count(1)
    expect(page.locator('#so-do [data-element-id="lane_hkd_thue"]')).to_have_count(1)
    expect(page.locator("dl.thong-tin")).to_contain_text("3 ngày làm việc")
    lanes = page.locator("section", has=page.get_by_role("heading", name="Làn → vai trò, cơ quan"))
    expect(lanes.locator("tr", has_text="Cơ quan thuế")).to_contain_text("cơ quan Thuế phụ trách nơi quản lý hồ sơ")
    expect(page.locator("table.the").last.locator("tr", has_text="Kiểm tra tính hợp lệ của hồ sơ")).to_contain_text("8 giờ làm việc")
    _shot(page, "1-thiet-ke")
    context.close()

    # 2. The desk of xã Phước An finds the procedure, receives a dossier and prints form 01.
    desk, page = _signed_in(browser, base, "motcua.phuocan")
    page.goto(f"{base}/tiep-nhan")
    page.get_by_label("Tìm thủ tục theo mã hoặc tên").fill("hộ kinh doanh")
    page.get_by_role("button", name="Tìm").click()
    rows = page.locator("table.the tbody tr")
    expect(rows).to_have_count(1)  # birth registration is filtered out
    expect(rows).to_contain_text(NAME)
    rows.get_by_role("link", name="Chọn").click()
    expect(page.locator("h1")).to_have_text(f"Tiếp nhận hồ sơ: {CODE} — {NAME}")
    expect(page.get_by_label("Bộ phận tiếp nhận")).to_have_value(PHUOC_AN)
    page.get_by_label("Họ và tên người nộp").fill(APPLICANT)
    page.get_by_label("Số định danh cá nhân / CCCD").fill("075190001234")
    page.get_by_label("Số điện thoại").fill(PHONE_NUMBER)
    page.get_by_label("Địa chỉ").fill("Ấp 1, xã Phước An, tỉnh Đồng Nai")
    page.get_by_label("Trực tiếp", exact=True).check()
    page.get_by_label(APPLICATION).check()
    expect(page.get_by_label("Văn bản ủy quyền (nếu có)")).not_to_be_checked()
    page.get_by_label("Giấy tờ khác").fill("Bản sao Căn cước của chủ hộ")
    _shot(page, "2-tiep-nhan")
    page.get_by_role("button", name="Tiếp nhận hồ sơ").click()
    _success(page, f"Đã tiếp nhận hồ sơ {PHUOC_AN}-")
    code = page.locator("h1").inner_text().removeprefix("Hồ sơ ").strip()
    assert re.fullmatch(rf"{re.escape(PHUOC_AN)}-\d{{6}}-\d{{4}}", code), code
    _status(page, "Được tiếp nhận")
    facts = page.locator("dl.thong-tin")
    expect(facts).to_contain_text(APPLICANT)
    expect(facts).to_contain_text(f"{APPLICATION} (1 bản)")
    expect(facts).to_contain_text("Bản sao Căn cước của chủ hộ (1 bản)")
    expect(facts).not_to_contain_text("Văn bản ủy quyền")
    due = facts.locator("dt", has_text="Hẹn trả kết quả").locator("xpath=following-sibling::dd[1]").inner_text().strip()
    appointment = re.fullmatch(r"(\d\d):(\d\d) (\d\d)/(\d\d)/(\d{4})", due)
    assert appointment, due
    hour, minute, day, month, year = appointment.groups()
    _states(page, tiep_nhan="current", tham_dinh="", cap_giay_chung_nhan="", tra_ket_qua="", thue_tiep_nhan="")
    with desk.expect_page() as opened:
        page.get_by_role("link", name="Mẫu 01: Giấy tiếp nhận và hẹn trả kết quả").click()
    form01 = opened.value
    form01.wait_for_load_state()
    slip = form01.locator("body")
    expect(slip).to_contain_text(code)
    expect(slip).to_contain_text(APPLICANT)
    expect(slip).to_contain_text(NAME)
    expect(form01.locator("table.documents")).to_contain_text(APPLICATION)
    expect(slip).to_contain_text(f"{hour} giờ {minute} phút, ngày {day} tháng {month} năm {year}")  # the same appointment
    _shot(form01, "2-mau-01")
    form01.close()

    # The desk step, with its form, from the dossier's step list.
    page.locator("table.the").get_by_role("link", name="Tiếp nhận hồ sơ đăng ký hộ kinh doanh").click()
    expect(page.locator("h1")).to_have_text("Tiếp nhận hồ sơ đăng ký hộ kinh doanh")
    page.get_by_label("Họ tên chủ hộ kinh doanh").fill(APPLICANT)
    page.get_by_label("Số định danh cá nhân của chủ hộ").fill("075190001234")
    page.get_by_label("Tên hộ kinh doanh").fill(BUSINESS)
    page.get_by_label("Địa chỉ trụ sở hộ kinh doanh").fill("Ấp 1, xã Phước An, tỉnh Đồng Nai")
    page.get_by_label("Ngành, nghề kinh doanh").fill("Bán lẻ lương thực, thực phẩm (4721)")
    page.get_by_label("Vốn kinh doanh (đồng)").fill("50000000")
    page.get_by_label("Số lượng lao động").fill("2")
    _complete(page, "Tiếp nhận hồ sơ đăng ký hộ kinh doanh", code)
    page.goto(f"{base}/ho-so/{code}")
    _status(page, "Đang xử lý")
    _states(page, tiep_nhan="done", tham_dinh="current", cap_giay_chung_nhan="", tra_ket_qua="", thue_tiep_nhan="")

    # 3a. The commune's officer claims the check from the queue and finds the dossier valid.
    context, page = _signed_in(browser, base, "chuyenvien.phuocan")
    _claim_from_inbox(page, base, code, "Kiểm tra tính hợp lệ của hồ sơ", "UBND xã Phước An")
    recorded = page.locator("details.khung")
    expect(recorded).to_contain_text(BUSINESS)  # what the desk recorded
    expect(recorded).to_contain_text("50000000")
    page.get_by_label("Hồ sơ hợp lệ, đủ điều kiện cấp Giấy chứng nhận").check()
    _complete(page, "Kiểm tra tính hợp lệ của hồ sơ", code)
    context.close()

    # 3b. The commune's head of unit approves and signs the certificate.
    context, page = _signed_in(browser, base, "truongphong.phuocan")
    _claim_from_inbox(page, base, code, "Phê duyệt, cấp Giấy chứng nhận đăng ký hộ kinh doanh", "UBND xã Phước An")
    page.get_by_label("Mã số hộ kinh doanh").fill("47A8001234")
    page.get_by_label("Người ký (họ tên, chức vụ)").fill("Lê Thị Mai, Trưởng Phòng Kinh tế")
    _complete(page, "Phê duyệt, cấp Giấy chứng nhận đăng ký hộ kinh doanh", code)
    page.goto(f"{base}/ho-so/{code}")
    # In parallel: the desk returns the certificate while the tax office takes the business over.
    _states(page, tiep_nhan="done", tham_dinh="done", cap_giay_chung_nhan="done", tra_ket_qua="current", thue_tiep_nhan="current")
    control = page.locator("table.the").first  # the control slip, before the history
    expect(control.locator("tr", has_text="Tiếp nhận thông tin hộ kinh doanh mới thành lập")).to_contain_text("Thuế tỉnh Đồng Nai")
    _shot(page, "3-song-song")
    context.close()

    # 3c. The provincial tax office's officer handles the hand-over from their own inbox.
    context, page = _signed_in(browser, base, "chuyenvien.thue")
    _claim_from_inbox(page, base, code, "Tiếp nhận thông tin hộ kinh doanh mới thành lập", "Thuế tỉnh Đồng Nai")
    expect(page.locator("details.khung")).to_contain_text("47A8001234")
    page.get_by_label("Đã cập nhật thông tin hộ kinh doanh vào hệ thống quản lý thuế").check()
    _complete(page, "Tiếp nhận thông tin hộ kinh doanh mới thành lập", code)
    context.close()

    # 3d. The desk returns the certificate: the return step, then the result on the dossier page.
    page = desk.pages[0]
    page.goto(f"{base}/ho-so/{code}")
    _status(page, "Đang xử lý")
    _states(page, thue_tiep_nhan="done", tra_ket_qua="current")
    _claim_from_inbox(page, base, code, "Trả Giấy chứng nhận đăng ký hộ kinh doanh", "UBND xã Phước An")
    page.get_by_label("Lệ phí đã thu").fill("100000")
    _complete(page, "Trả Giấy chứng nhận đăng ký hộ kinh doanh", code)
    page.goto(f"{base}/ho-so/{code}")
    _status(page, "Đã xử lý xong")
    _states(page, **{step: "done" for step in STEPS})
    page.get_by_label("Trả kết quả").select_option(label="Tại Bộ phận Một cửa")
    page.get_by_role("button", name="Trả kết quả").click()
    _success(page, "Đã trả kết quả.")
    _status(page, "Đã trả kết quả")
    expect(page.locator("dl.thong-tin")).to_contain_text("Tại Bộ phận Một cửa")
    expect(page.get_by_role("button", name="Trả kết quả")).to_have_count(0)
    _shot(page, "3-tra-ket-qua")
    desk.close()

    # 4. The citizen, on a phone and without an account, looks the dossier up and rates it once.
    phone = browser.new_context(viewport=PHONE, is_mobile=True, locale="vi-VN")
    page = phone.new_page()
    page.goto(f"{base}/tra-cuu")
    page.get_by_label("Mã hồ sơ").fill(code)
    page.get_by_label("Mã bí mật").fill("4321")  # the last four digits of the phone
    page.get_by_role("button", name="Tra cứu").click()
    expect(page.locator("h1")).to_have_text(f"Hồ sơ {code}")
    _status(page, "Đã trả kết quả")
    _states(page, **{step: "done" for step in STEPS})
    assert APPLICANT not in page.content()  # no personal data in the public view
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"] + 1, f"the page scrolls sideways on a phone ({width}px)"
    _shot(page, "4-tra-cuu")
    # The same result opened a second time (another tab), still offering the rating form.
    second = phone.new_page()
    second.goto(f"{base}/tra-cuu?ma={code}")
    second.get_by_label("Mã bí mật").fill("4321")
    second.get_by_role("button", name="Tra cứu").click()
    expect(second.get_by_role("button", name="Gửi đánh giá")).to_be_visible()

    expect(page.locator("fieldset")).to_have_count(len(public.CRITERIA))
    for fieldset in page.locator("fieldset").all():
        fieldset.get_by_label("Hài lòng", exact=True).check()
    page.get_by_label("Ý kiến khác").fill("Cán bộ hướng dẫn tận tình.")
    page.get_by_role("button", name="Gửi đánh giá").click()
    _success(page, "Cảm ơn ông/bà đã đánh giá mức độ hài lòng.")
    expect(page.get_by_text("Ông/bà đã đánh giá hồ sơ này.")).to_be_visible()
    expect(page.get_by_role("button", name="Gửi đánh giá")).to_have_count(0)

    for fieldset in second.locator("fieldset").all():
        fieldset.get_by_label("Rất không hài lòng", exact=True).check()
    with second.expect_response(lambda r: r.url.endswith("/tra-cuu/danh-gia")) as answered:
        second.get_by_role("button", name="Gửi đánh giá").click()
    assert answered.value.status == 400
    expect(second.locator(".thong-bao.error")).to_contain_text("Không thể ghi nhận đánh giá")
    expect(second.locator(".thong-bao.error")).to_contain_text("mỗi hồ sơ chỉ đánh giá một lần")  # the precise reason
    expect(second.locator(".thong-bao.success")).to_have_count(0)
    expect(second.get_by_role("button", name="Gửi đánh giá")).to_have_count(0)
    expect(second.get_by_text("Ông/bà đã đánh giá hồ sơ này.")).to_be_visible()
    _shot(second, "4-danh-gia-lan-hai")
    phone.close()

    with Session(site.engine) as session:
        dossier_id = session.scalar(select(Dossier.id).where(Dossier.code == code))
        scores = session.scalars(select(Rating.scores).where(Rating.dossier_id == dossier_id)).all()
        assert session.scalar(select(func.count()).select_from(Rating)) == 1
    assert scores == [dict.fromkeys(public.CRITERIA, 4)]  # the first rating ("Hài lòng"), not the second
