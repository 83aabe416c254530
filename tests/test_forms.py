"""The forms of Thông tư 01/2018/TT-VPCP: HTML, PDF, QR code, dates in Hà Nội time.

Expected date strings are written out by hand (format of ``engine.forms``):
instants ``10 giờ 00 phút, ngày 13 tháng 02 năm 2026``, the date line
``Ngày 13 tháng 02 năm 2026``, the control slip ``10:15 13/02/2026``; a day
below 10 and months 1-2 take a leading zero, months 3-12 do not.
"""

from __future__ import annotations

import dataclasses
import io
import re
import shutil
import socket
import subprocess
import unicodedata
from datetime import UTC, datetime, timedelta, timezone

import pytest

from engine.core.calendar import VN_TZ
from engine.forms import (
    FORM_TITLES,
    FormContext,
    SlipRow,
    format_date,
    format_datetime,
    format_slip_time,
    qr_svg,
    render_html,
    render_pdf,
)

CODE = "000.17.22.H56-260213-0001"
URL = f"https://dichvucong.dongnai.gov.vn/tra-cuu?ma={CODE}&lang=vi"
HOSTILE = '<script>alert("x")</script>'

# 10:00 in Hà Nội, given in UTC on purpose.
RECEIVED_UTC = datetime(2026, 2, 13, 3, 0, tzinfo=UTC)
RECEIVED_VN = "10 giờ 00 phút, ngày 13 tháng 02 năm 2026"
DATE_LINE = "Ngày 13 tháng 02 năm 2026"
DUE_VN = "10 giờ 00 phút, ngày 25 tháng 02 năm 2026"
NEW_DUE_VN = "16 giờ 30 phút, ngày 04 tháng 3 năm 2026"


def make_ctx(**changes: object) -> FormContext:
    ctx = FormContext(
        dossier_code=CODE,
        procedure_code="1.001193",
        procedure_name="Đăng ký đất đai, tài sản gắn liền với đất lần đầu",
        applicant_name="Nguyễn Thị Hồng Nhung",
        receiving_agency="Trung tâm Phục vụ hành chính công tỉnh Đồng Nai",
        parent_agency="UBND tỉnh Đồng Nai",
        received_at=RECEIVED_UTC,
        due_at=datetime(2026, 2, 25, 10, 0, tzinfo=VN_TZ),
        receiver="Trần Văn Bình",
        lookup_url=URL,
        applicant_address="Số 12, đường Hà Huy Giáp, phường Trấn Biên",
        applicant_phone="0912 345 678",
        applicant_email="nhung@example.vn",
        documents=(
            ("Đơn đăng ký đất đai, tài sản gắn liền với đất (Mẫu số 04/ĐK)", 1),
            ("Bản sao Giấy tờ về quyền sử dụng đất", 2),
        ),
        reasons=(
            "Bổ sung bản sao có chứng thực căn cước của người đồng sử dụng đất",
            "Sơ đồ thửa đất chưa ghi kích thước các cạnh",
        ),
        result_place="Quầy số 5, Bộ phận Một cửa",
        late_agency="Văn phòng Đăng ký đất đai tỉnh Đồng Nai",
        late_reason="Cần xác minh thêm nguồn gốc sử dụng đất",
        new_due_at=datetime(2026, 3, 4, 9, 30, tzinfo=UTC),  # 16:30 in Hà Nội
        signer="Lê Minh Tuấn",
        signer_title="Giám đốc",
        slip=(
            SlipRow("Trung tâm Phục vụ hành chính công tỉnh",
                    datetime(2026, 2, 13, 10, 15, tzinfo=VN_TZ),
                    "Trần Văn Bình", "Phạm Thu Hà", "early"),
            SlipRow("Văn phòng Đăng ký đất đai tỉnh Đồng Nai",
                    datetime(2026, 2, 23, 1, 0, tzinfo=UTC),  # 08:00 in Hà Nội
                    "Phạm Thu Hà", "Võ Quốc Khánh", "on_time",
                    "Chuyển cơ quan thuế xác định nghĩa vụ tài chính"),
            SlipRow("Thuế cơ sở 1 tỉnh Đồng Nai",
                    datetime(2026, 2, 26, 18, 30, tzinfo=UTC),  # 01:30 next day in Hà Nội
                    "Võ Quốc Khánh", "Đỗ Thị Lan", "late"),
            SlipRow("Văn phòng Đăng ký đất đai tỉnh Đồng Nai",
                    datetime(2026, 2, 27, 9, 40, tzinfo=VN_TZ),
                    "Đỗ Thị Lan", "Võ Quốc Khánh", ""),
        ),
    )
    return dataclasses.replace(ctx, **changes)


def text_of(html: str) -> str:
    """The visible text of an HTML page, whitespace collapsed (tags removed, entities kept)."""
    body = re.sub(r"<(style|svg)\b.*?</\1>", " ", html, flags=re.DOTALL)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text))


@pytest.fixture(scope="module")
def ctx() -> FormContext:
    return make_ctx()


@pytest.fixture(scope="module")
def pages(ctx: FormContext) -> dict[str, str]:
    return {form: render_html(form, ctx) for form in FORM_TITLES}


@pytest.fixture(scope="module")
def pdfs(ctx: FormContext) -> dict[str, bytes]:
    return {form: render_pdf(form, ctx) for form in FORM_TITLES}


# --- dates ---------------------------------------------------------------


def test_titles_are_those_of_the_circular() -> None:
    assert FORM_TITLES == {
        "01": "Giấy tiếp nhận hồ sơ và hẹn trả kết quả",
        "02": "Phiếu yêu cầu bổ sung, hoàn thiện hồ sơ",
        "03": "Phiếu từ chối tiếp nhận giải quyết hồ sơ",
        "04": "Phiếu xin lỗi và hẹn lại ngày trả kết quả",
        "05": "Phiếu kiểm soát quá trình giải quyết hồ sơ",
    }


@pytest.mark.parametrize(("value", "date", "instant", "slip"), [
    (datetime(2026, 2, 13, 10, 0, tzinfo=VN_TZ),
     "ngày 13 tháng 02 năm 2026", RECEIVED_VN, "10:00 13/02/2026"),
    (RECEIVED_UTC, "ngày 13 tháng 02 năm 2026", RECEIVED_VN, "10:00 13/02/2026"),
    # UTC evening is the next morning in Hà Nội; March takes no leading zero.
    (datetime(2026, 3, 3, 20, 5, tzinfo=UTC),
     "ngày 04 tháng 3 năm 2026", "03 giờ 05 phút, ngày 04 tháng 3 năm 2026", "03:05 04/03/2026"),
    (datetime(2026, 1, 5, 7, 30, tzinfo=VN_TZ),
     "ngày 05 tháng 01 năm 2026", "07 giờ 30 phút, ngày 05 tháng 01 năm 2026", "07:30 05/01/2026"),
    (datetime(2026, 12, 31, 17, 0, tzinfo=timezone(timedelta(hours=9))),
     "ngày 31 tháng 12 năm 2026", "15 giờ 00 phút, ngày 31 tháng 12 năm 2026", "15:00 31/12/2026"),
])
def test_vietnamese_dates_in_hanoi_time(value: datetime, date: str, instant: str, slip: str) -> None:
    assert format_date(value) == date
    assert format_datetime(value) == instant
    assert format_slip_time(value) == slip


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        format_datetime(datetime(2026, 2, 13, 10, 0))
    with pytest.raises(ValueError, match="timezone-aware"):
        render_html("01", make_ctx(due_at=datetime(2026, 2, 25, 10, 0)))


# --- HTML of each form ---------------------------------------------------------


@pytest.mark.parametrize("form", list(FORM_TITLES))
def test_every_form_has_header_title_code_applicant_date_and_qr(
        form: str, pages: dict[str, str]) -> None:
    html = pages[form]
    text = text_of(html)
    title = FORM_TITLES[form]
    assert html.startswith("<!DOCTYPE html>")
    assert '<html lang="vi">' in html
    assert f"<title>{title} – {CODE}</title>" in html
    assert f"<h1>{title.upper()}</h1>" in html
    assert "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM" in text
    assert "Độc lập - Tự do - Hạnh phúc" in text
    assert "UBND TỈNH ĐỒNG NAI" in text
    assert f"Mẫu số {form}" in text
    assert CODE in text
    assert "Nguyễn Thị Hồng Nhung" in text
    assert DATE_LINE in text
    assert qr_svg(URL) in html
    assert "@page" in html and "A4" in html
    # self-contained: nothing to fetch
    assert not re.search(r"\b(src|href)\s*=|url\(|@import", html)


def test_form_01_receipt_and_appointment(pages: dict[str, str], ctx: FormContext) -> None:
    text = text_of(pages["01"])
    assert "TRUNG TÂM PHỤC VỤ HÀNH CHÍNH CÔNG TỈNH ĐỒNG NAI" in text
    assert "Tiếp nhận hồ sơ của: Nguyễn Thị Hồng Nhung" in text
    assert "Địa chỉ: Số 12, đường Hà Huy Giáp, phường Trấn Biên" in text
    assert "Số điện thoại: 0912 345 678" in text and "Email: nhung@example.vn" in text
    assert "Nội dung yêu cầu giải quyết: Đăng ký đất đai, tài sản gắn liền với đất lần đầu" in text
    assert "1.001193" in text
    assert "Thành phần hồ sơ nộp gồm" in text
    assert "1 Đơn đăng ký đất đai, tài sản gắn liền với đất (Mẫu số 04/ĐK) 1" in text
    assert "2 Bản sao Giấy tờ về quyền sử dụng đất 2" in text
    assert f"Thời gian nhận hồ sơ: {RECEIVED_VN}" in text
    assert f"Thời gian trả kết quả giải quyết hồ sơ (ngày hẹn trả kết quả): {DUE_VN}" in text
    assert "Đăng ký nhận kết quả tại: Quầy số 5, Bộ phận Một cửa" in text
    assert "NGƯỜI NỘP HỒ SƠ" in text and "NGƯỜI TIẾP NHẬN HỒ SƠ" in text
    assert "(Ký và ghi rõ họ tên)" in text
    assert "Trần Văn Bình" in text
    # without a place, the result is returned at the receiving desk
    plain = text_of(render_html("01", dataclasses.replace(ctx, result_place=None)))
    assert ("Đăng ký nhận kết quả tại: Bộ phận Một cửa – "
            "Trung tâm Phục vụ hành chính công tỉnh Đồng Nai") in plain


def test_form_01_issued_at_overrides_the_date_line(ctx: FormContext) -> None:
    issued = datetime(2026, 3, 1, 17, 30, tzinfo=UTC)  # 00:30 on 2 March in Hà Nội
    text = text_of(render_html("01", dataclasses.replace(ctx, issued_at=issued)))
    assert "Ngày 02 tháng 3 năm 2026" in text
    assert DATE_LINE not in text


def test_form_02_request_to_supplement(pages: dict[str, str]) -> None:
    html = pages["02"]
    text = text_of(html)
    assert "bổ sung, hoàn thiện hồ sơ gồm những nội dung sau:" in text
    assert "<li>Bổ sung bản sao có chứng thực căn cước của người đồng sử dụng đất</li>" in html
    assert "<li>Sơ đồ thửa đất chưa ghi kích thước các cạnh</li>" in html
    assert "liên hệ với công chức Trần Văn Bình" in text
    # signer given: the signer signs under their title
    assert "GIÁM ĐỐC" in text and "Lê Minh Tuấn" in text


def test_form_02_without_signer_is_signed_by_the_receiver(ctx: FormContext) -> None:
    text = text_of(render_html("02", dataclasses.replace(ctx, signer=None, signer_title=None)))
    assert "NGƯỜI HƯỚNG DẪN" in text
    assert "Lê Minh Tuấn" not in text
    assert text.count("Trần Văn Bình") == 2  # contact and signature


def test_form_03_refusal(ctx: FormContext) -> None:
    html = render_html("03", dataclasses.replace(
        ctx, signer=None, signer_title=None,
        reasons=("Thủ tục không thuộc thẩm quyền giải quyết của cơ quan",)))
    text = text_of(html)
    assert "thông báo không tiếp nhận, giải quyết hồ sơ này với lý do cụ thể như sau:" in text
    assert "<li>Thủ tục không thuộc thẩm quyền giải quyết của cơ quan</li>" in html
    assert "Xin thông báo cho Ông/Bà/Tổ chức được biết và thực hiện./." in text
    assert "NGƯỜI TIẾP NHẬN HỒ SƠ" in text and "Trần Văn Bình" in text


def test_form_04_apology_and_new_appointment(pages: dict[str, str]) -> None:
    text = text_of(pages["04"])
    # the late agency issues it, under the governing body
    assert "UBND TỈNH ĐỒNG NAI VĂN PHÒNG ĐĂNG KÝ ĐẤT ĐAI TỈNH ĐỒNG NAI" in text
    assert "Kính gửi: Nguyễn Thị Hồng Nhung" in text
    assert (f"Vào hồi {RECEIVED_VN}, Trung tâm Phục vụ hành chính công tỉnh Đồng Nai "
            "tiếp nhận giải quyết hồ sơ đề nghị Đăng ký đất đai") in text
    assert f"Mã hồ sơ: {CODE}" in text
    assert f"Thời hạn giải quyết hồ sơ theo quy định: {DUE_VN}" in text
    assert ("Tuy nhiên đến nay, Văn phòng Đăng ký đất đai tỉnh Đồng Nai chưa trả kết quả"
            in text)
    assert "Lý do: Cần xác minh thêm nguồn gốc sử dụng đất" in text
    assert "Văn phòng Đăng ký đất đai tỉnh Đồng Nai xin lỗi Ông/Bà/Tổ chức" in text
    assert f"vào {NEW_DUE_VN}" in text
    assert "GIÁM ĐỐC" in text and "(Ký, ghi rõ họ tên và đóng dấu)" in text
    assert "Lê Minh Tuấn" in text
    assert "Nơi nhận:" in text


def test_form_04_defaults(ctx: FormContext) -> None:
    text = text_of(render_html("04", dataclasses.replace(
        ctx, late_agency=None, signer=None, signer_title=None)))
    assert "THỦ TRƯỞNG CƠ QUAN" in text
    assert "Tuy nhiên đến nay, Trung tâm Phục vụ hành chính công tỉnh Đồng Nai chưa trả" in text


def test_form_05_control_slip(pages: dict[str, str]) -> None:
    html = pages["05"]
    text = text_of(html)
    for heading in ("TÊN CƠ QUAN", "THỜI GIAN GIAO, NHẬN HỒ SƠ",
                    "KẾT QUẢ GIẢI QUYẾT HỒ SƠ", "GHI CHÚ"):
        assert f"<th>{heading}" in html
    assert f"Thời gian nhận hồ sơ: {RECEIVED_VN}" in text
    assert f"Thời gian hẹn trả kết quả: {DUE_VN}" in text
    rows = re.findall(r"<tr>\s*<td>(\d)\. .*?</table>\s*</td>\s*<td class=\"result\">(.*?)</td>",
                      html, flags=re.DOTALL)
    assert [(n, label) for n, label in rows] == [
        ("1", "Trước hạn"), ("2", "Đúng hạn"), ("3", "Quá hạn"), ("4", "")]
    assert "1. Trung tâm Phục vụ hành chính công tỉnh" in text
    assert "10:15 13/02/2026" in text
    assert "08:00 23/02/2026" in text
    assert "01:30 27/02/2026" in text  # 18:30 UTC on 26/02
    assert "09:40 27/02/2026" in text
    assert text.count("Người giao") == 4 and text.count("Người nhận") == 4
    assert "Phạm Thu Hà" in text and "Đỗ Thị Lan" in text
    assert "Chuyển cơ quan thuế xác định nghĩa vụ tài chính" in text
    assert ("Cơ quan (bộ phận) giải quyết hồ sơ: Trung tâm Phục vụ hành chính công tỉnh; "
            "Văn phòng Đăng ký đất đai tỉnh Đồng Nai; Thuế cơ sở 1 tỉnh Đồng Nai") in text


def test_form_05_without_rows_prints_blank_rows(ctx: FormContext) -> None:
    html = render_html("05", dataclasses.replace(ctx, slip=()))
    assert html.count('<tr class="blank">') == 3


# --- refusals ------------------------------------------------------------------


@pytest.mark.parametrize("form", ["06", "1", "", "mau01", "01 "])
def test_unknown_form_is_a_value_error(form: str, ctx: FormContext) -> None:
    with pytest.raises(ValueError, match="unknown form"):
        render_html(form, ctx)
    with pytest.raises(ValueError, match="unknown form"):
        render_pdf(form, ctx)


@pytest.mark.parametrize(("form", "changes"), [
    ("01", {"due_at": None}),
    ("02", {"reasons": ()}),
    ("03", {"reasons": ()}),
    ("04", {"new_due_at": None}),
    ("04", {"due_at": None}),
    ("01", {"lookup_url": ""}),
])
def test_missing_content_is_a_value_error(form: str, changes: dict, ctx: FormContext) -> None:
    with pytest.raises(ValueError, match=f"form {form} needs"):
        render_html(form, dataclasses.replace(ctx, **changes))


def test_unknown_slip_result_is_a_value_error(ctx: FormContext) -> None:
    row = SlipRow("UBND xã", RECEIVED_UTC, "A", "B", "overdue")
    with pytest.raises(ValueError, match="overdue"):
        render_html("05", dataclasses.replace(ctx, slip=(row,)))


# --- escaping ------------------------------------------------------------------


def test_every_supplied_text_is_escaped() -> None:
    ctx = make_ctx(
        dossier_code=CODE + HOSTILE,
        procedure_code=HOSTILE,
        procedure_name=HOSTILE,
        applicant_name=HOSTILE,
        receiving_agency=HOSTILE,
        parent_agency=HOSTILE,
        receiver=HOSTILE,
        lookup_url=URL + '"><script>alert(1)</script>',
        applicant_address=HOSTILE,
        applicant_phone=HOSTILE,
        applicant_email=HOSTILE,
        documents=((HOSTILE, 1),),
        reasons=(HOSTILE,),
        result_place=HOSTILE,
        late_agency=HOSTILE,
        late_reason=HOSTILE,
        signer=HOSTILE,
        signer_title=HOSTILE,
        slip=(SlipRow(HOSTILE, RECEIVED_UTC, HOSTILE, HOSTILE, "late", HOSTILE),),
    )
    for form in FORM_TITLES:
        html = render_html(form, ctx)
        assert "<script" not in html.lower(), form
        assert "&lt;script&gt;" in html, form
        assert "&#34;" in html or "&quot;" in html, form
        # upper-cased (header, signature titles) and still escaped
        assert "&lt;SCRIPT&gt;" in html, form


# --- QR code -------------------------------------------------------------------


def test_qr_svg_is_inline_svg_sized_by_css() -> None:
    svg = qr_svg(URL)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert 'class="qr"' in svg and "viewBox=" in svg
    assert "width=" not in svg.split(">", 1)[0]
    assert "<?xml" not in svg and "http" not in svg  # the URL is encoded, not written
    assert qr_svg(URL) == svg  # deterministic
    assert qr_svg(URL + "x") != svg
    with pytest.raises(ValueError):
        qr_svg("")


# --- PDF -----------------------------------------------------------------------


def pdf_text(data: bytes) -> tuple[int, str]:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    return len(reader.pages), flat(" ".join(p.extract_text() for p in reader.pages))


def test_pdf_has_vietnamese_text_with_embedded_fonts(pdfs: dict[str, bytes]) -> None:
    from pypdf import PdfReader

    data = pdfs["01"]
    assert data.startswith(b"%PDF")
    count, text = pdf_text(data)
    assert count == 1
    assert CODE in text
    assert "GIẤY TIẾP NHẬN HỒ SƠ VÀ HẸN TRẢ KẾT QUẢ" in text
    assert "Độc lập - Tự do - Hạnh phúc" in text
    assert "Nguyễn Thị Hồng Nhung" in text
    assert RECEIVED_VN in text
    page = PdfReader(io.BytesIO(data)).pages[0]
    width, height = float(page.mediabox.width), float(page.mediabox.height)
    assert (round(width), round(height)) == (595, 842)  # A4 in points
    fonts = page["/Resources"]["/Font"]
    for ref in fonts.values():
        font = ref.get_object()
        descriptor = font["/DescendantFonts"][0].get_object()["/FontDescriptor"]
        assert "/FontFile2" in descriptor or "/FontFile3" in descriptor, font["/BaseFont"]


@pytest.mark.parametrize("form", list(FORM_TITLES))
def test_each_pdf_is_one_a4_page_with_its_title(form: str, pdfs: dict[str, bytes]) -> None:
    count, text = pdf_text(pdfs[form])
    assert count == 1
    assert FORM_TITLES[form].upper() in text
    assert CODE in text


def test_pdf_of_form_05_has_the_slip(pdfs: dict[str, bytes]) -> None:
    _, text = pdf_text(pdfs["05"])
    for expected in ("Trước hạn", "Đúng hạn", "Quá hạn", "01:30 27/02/2026", "Võ Quốc Khánh"):
        assert expected in text


def test_pdf_is_deterministic(ctx: FormContext, pdfs: dict[str, bytes]) -> None:
    assert render_pdf("02", ctx) == pdfs["02"]


def test_pdf_fetches_nothing(monkeypatch: pytest.MonkeyPatch, ctx: FormContext) -> None:
    from engine.forms import _pdf

    attempts: list[object] = []

    def no_network(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network used")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    for url in ("http://127.0.0.1:9/x.png", "https://example.com/a.css", "file:///etc/passwd"):
        with pytest.raises(ValueError):
            _pdf.url_fetcher(url)
    html = ('<html><head><link rel="stylesheet" href="http://127.0.0.1:9/a.css"></head>'
            '<body><img src="http://127.0.0.1:9/x.png"><img src="file:///etc/hostname">'
            "<p>Giấy tiếp nhận</p></body></html>")
    assert _pdf.html_to_pdf(html).startswith(b"%PDF")
    assert render_pdf("01", ctx).startswith(b"%PDF")
    assert attempts == []


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="needs pdftoppm (poppler-utils)")
def test_qr_in_the_pdf_decodes_to_the_lookup_url(pdfs: dict[str, bytes], tmp_path) -> None:
    zxingcpp = pytest.importorskip("zxingcpp")
    from PIL import Image

    (tmp_path / "f.pdf").write_bytes(pdfs["01"])
    subprocess.run(["pdftoppm", "-r", "150", "-png", "-singlefile",
                    str(tmp_path / "f.pdf"), str(tmp_path / "page")], check=True)
    found = zxingcpp.read_barcodes(Image.open(tmp_path / "page.png"))
    assert [r.text for r in found] == [URL]
