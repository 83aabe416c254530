"""The forms of the one-stop mechanism (Thông tư 01/2018/TT-VPCP), as printable documents.

Five forms of the circular's appendix, rendered for one dossier as an A4 HTML
page (self-contained: inline CSS and an inline SVG QR code, no external URL)
and as a PDF printed from the same HTML:

====  =====================================================
01    Giấy tiếp nhận hồ sơ và hẹn trả kết quả
02    Phiếu yêu cầu bổ sung, hoàn thiện hồ sơ
03    Phiếu từ chối tiếp nhận giải quyết hồ sơ
04    Phiếu xin lỗi và hẹn lại ngày trả kết quả
05    Phiếu kiểm soát quá trình giải quyết hồ sơ
====  =====================================================

Pure module: no database, no web framework, no clock reads; everything the
form shows comes from the :class:`FormContext`.  Every text in it is escaped.

Dates and times
---------------
All datetimes must be timezone-aware (a naive one raises ``ValueError``, as in
:mod:`engine.core.calendar`); they are shown in Hà Nội time
(``Asia/Ho_Chi_Minh``).  Formats:

* instants in the body of a form: ``10 giờ 00 phút, ngày 13 tháng 02 năm 2026``
  (hours and minutes on two digits);
* the date line under the national motto: ``Ngày 13 tháng 02 năm 2026``;
* per Decree 30/2020/NĐ-CP (văn bản hành chính), a day below 10 and the
  months 1 and 2 take a leading zero, the other months do not:
  ``ngày 04 tháng 3 năm 2026``, ``ngày 25 tháng 12 năm 2026``;
* the control slip (form 05) table: ``hh:mm dd/mm/yyyy``, e.g.
  ``10:00 13/02/2026``.

Example::

    >>> from datetime import datetime
    >>> from engine.core.calendar import VN_TZ
    >>> ctx = FormContext(
    ...     dossier_code="000.17.22.H56-260213-0001",
    ...     procedure_code="1.001234",
    ...     procedure_name="Đăng ký khai sinh",
    ...     applicant_name="Nguyễn Văn An",
    ...     receiving_agency="UBND xã Long Thành",
    ...     parent_agency="UBND tỉnh Đồng Nai",
    ...     received_at=datetime(2026, 2, 13, 10, 0, tzinfo=VN_TZ),
    ...     due_at=datetime(2026, 2, 25, 10, 0, tzinfo=VN_TZ),
    ...     receiver="Trần Thị Bình",
    ...     lookup_url="https://dichvucong.example.vn/tra-cuu?ma=000.17.22.H56-260213-0001",
    ... )
    >>> "10 giờ 00 phút, ngày 25 tháng 02 năm 2026" in render_html("01", ctx)
    True

:func:`render_pdf` needs WeasyPrint and Pango (Debian: ``libpango-1.0-0
libpangoft2-1.0-0``) and a font with Vietnamese glyphs: the PDF asks for Noto
Serif, then DejaVu Serif (``fonts-dejavu-core``); the HTML asks browsers for
Times New Roman first.  WeasyPrint is imported only when a PDF is asked for,
so :func:`render_html` works without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path

import jinja2
import segno
from markupsafe import Markup

from engine.core.calendar import VN_TZ

__all__ = [
    "FORM_TITLES",
    "RESULT_LABELS",
    "FormContext",
    "SlipRow",
    "format_date",
    "format_datetime",
    "format_slip_time",
    "qr_svg",
    "render_html",
    "render_pdf",
]

FORM_TITLES: dict[str, str] = {
    "01": "Giấy tiếp nhận hồ sơ và hẹn trả kết quả",
    "02": "Phiếu yêu cầu bổ sung, hoàn thiện hồ sơ",
    "03": "Phiếu từ chối tiếp nhận giải quyết hồ sơ",
    "04": "Phiếu xin lỗi và hẹn lại ngày trả kết quả",
    "05": "Phiếu kiểm soát quá trình giải quyết hồ sơ",
}

#: Result of one step on the control slip (form 05), as printed.
RESULT_LABELS: dict[str, str] = {
    "early": "Trước hạn",
    "on_time": "Đúng hạn",
    "late": "Quá hạn",
    "": "",
}

_TEMPLATES = Path(__file__).parent / "templates"

# Browsers printing the HTML: Times New Roman (the font of Decree 30/2020 for
# administrative documents), which has Vietnamese on Windows and macOS.
_SCREEN_FONTS = ('"Times New Roman", "Noto Serif", "DejaVu Serif", serif', "13pt")
# WeasyPrint on a server: fontconfig maps "Times New Roman" to Liberation
# Serif 1.x, which lacks most Vietnamese letters (ằ, ỉ, ữ…) and would mix two
# fonts in one word; print with families that have them all.
# DejaVu Serif is about an eighth wider than Times: a smaller size keeps the
# forms on one page.
_PDF_FONTS = ('"Noto Serif", "DejaVu Serif", serif', "11.5pt")


@dataclass(frozen=True)
class SlipRow:
    """One hand-over on the control slip (form 05)."""

    agency: str
    handed_at: datetime
    from_person: str
    to_person: str
    result: str  # "early" | "on_time" | "late" | "" (still in progress)
    note: str = ""


@dataclass(frozen=True)
class FormContext:
    """Everything a form shows about one dossier.

    ``parent_agency`` is the governing body printed above the issuing agency
    in the header (cơ quan chủ quản).  The issuing agency is
    ``receiving_agency``, except on form 04 where it is ``late_agency`` when
    given.
    """

    dossier_code: str
    procedure_code: str
    procedure_name: str
    applicant_name: str
    receiving_agency: str
    parent_agency: str | None
    received_at: datetime
    due_at: datetime | None
    receiver: str
    lookup_url: str
    applicant_address: str | None = None
    applicant_phone: str | None = None
    applicant_email: str | None = None
    documents: tuple[tuple[str, int], ...] = ()
    reasons: tuple[str, ...] = ()
    result_place: str | None = None
    late_agency: str | None = None
    late_reason: str | None = None
    new_due_at: datetime | None = None
    signer: str | None = None
    signer_title: str | None = None
    issued_at: datetime | None = None
    slip: tuple[SlipRow, ...] = ()
    #: Fees due and paid (phí, lệ phí), one line each, for form 01.
    fees: tuple[str, ...] = ()


def _local(value: datetime) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"datetime must be timezone-aware: {value!r}")
    return value.astimezone(VN_TZ)


def format_date(value: datetime) -> str:
    """``ngày 13 tháng 02 năm 2026`` in Hà Nội time (leading zero on days < 10 and months 1-2).

    >>> from datetime import datetime, timezone
    >>> format_date(datetime(2026, 3, 3, 20, 0, tzinfo=timezone.utc))
    'ngày 04 tháng 3 năm 2026'
    """
    d = _local(value)
    month = f"{d.month:02d}" if d.month < 3 else str(d.month)
    return f"ngày {d.day:02d} tháng {month} năm {d.year}"


def format_datetime(value: datetime) -> str:
    """``10 giờ 00 phút, ngày 13 tháng 02 năm 2026`` in Hà Nội time.

    >>> from datetime import datetime, timezone
    >>> format_datetime(datetime(2026, 2, 13, 3, 0, tzinfo=timezone.utc))
    '10 giờ 00 phút, ngày 13 tháng 02 năm 2026'
    """
    d = _local(value)
    return f"{d.hour:02d} giờ {d.minute:02d} phút, {format_date(d)}"


def format_slip_time(value: datetime) -> str:
    """``10:00 13/02/2026`` in Hà Nội time (the control slip's column).

    >>> from datetime import datetime, timezone
    >>> format_slip_time(datetime(2026, 2, 13, 3, 0, tzinfo=timezone.utc))
    '10:00 13/02/2026'
    """
    return _local(value).strftime("%H:%M %d/%m/%Y")


def qr_svg(url: str) -> str:
    """The QR code (error correction level M) of ``url`` as an inline ``<svg>`` element.

    The element has a ``viewBox`` and no size: size it with CSS.

    >>> qr_svg("https://dichvucong.example.vn/tra-cuu").startswith("<svg")
    True
    """
    if not url:
        raise ValueError("the QR code needs a URL")
    code = segno.make(url, error="m", micro=False)
    return code.svg_inline(
        border=4, omitsize=True, svgclass="qr", lineclass="qr-dark",
        title="Mã QR tra cứu hồ sơ",
    )


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["vn_date"] = format_date
    env.filters["vn_datetime"] = format_datetime
    env.filters["slip_time"] = format_slip_time
    return env


def _require(form: str, ctx: FormContext, *names: str) -> None:
    missing = [n for n in names if not getattr(ctx, n)]
    if missing:
        raise ValueError(f"form {form} needs {', '.join(missing)}")


def _check(form: str, ctx: FormContext) -> None:
    if form not in FORM_TITLES:
        raise ValueError(
            f"unknown form {form!r}; expected one of {', '.join(FORM_TITLES)}")
    _require(form, ctx, "dossier_code", "applicant_name", "receiving_agency",
             "lookup_url", "received_at")
    if form == "01":
        _require(form, ctx, "due_at")
    elif form in ("02", "03"):
        _require(form, ctx, "reasons")
    elif form == "04":
        _require(form, ctx, "due_at", "new_due_at")
    elif form == "05":
        for row in ctx.slip:
            if row.result not in RESULT_LABELS:
                raise ValueError(
                    f"slip row result {row.result!r}; expected one of "
                    + ", ".join(repr(k) for k in RESULT_LABELS))


def render_html(form: str, ctx: FormContext) -> str:
    """The form (``"01"`` … ``"05"``) for one dossier, as a self-contained A4 HTML page.

    Raises ``ValueError`` for an unknown form, a naive datetime, or a context
    missing what that form must show (01: ``due_at``; 02 and 03: ``reasons``;
    04: ``due_at`` and ``new_due_at``).
    """
    return _render(form, ctx, _SCREEN_FONTS)


def _render(form: str, ctx: FormContext, fonts: tuple[str, str]) -> str:
    _check(form, ctx)
    template = _environment().get_template(f"form{form}.html")
    issuing_agency = ctx.receiving_agency
    if form == "04" and ctx.late_agency:
        issuing_agency = ctx.late_agency
    return template.render(
        form=form,
        font_stack=Markup(fonts[0]),
        font_size=fonts[1],
        title=FORM_TITLES[form],
        ctx=ctx,
        issuing_agency=issuing_agency,
        issued_at=ctx.issued_at or ctx.received_at,
        qr=Markup(qr_svg(ctx.lookup_url)),
        result_labels=RESULT_LABELS,
        slip_agencies=list(dict.fromkeys(row.agency for row in ctx.slip)),
    )


def render_pdf(form: str, ctx: FormContext) -> bytes:
    """The same form as :func:`render_html`, printed to an A4 PDF with WeasyPrint.

    Fonts come from the system (fontconfig); nothing is fetched: the only
    URLs WeasyPrint may open are ``data:`` URLs.
    """
    html = _render(form, ctx, _PDF_FONTS)
    from engine.forms._pdf import html_to_pdf

    return html_to_pdf(html)
