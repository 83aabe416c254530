"""The supervisors' reports as files: Excel (openpyxl), PDF (WeasyPrint) and CSV.

Headers are Vietnamese. CSV is UTF-8 with a byte-order mark so that Excel opens
Vietnamese text correctly; rates are fractions (0.6667), times in working days.
Example::

    report = reports.periodic_report(session, "000.00.00.H19", "Q1-2026", now=now)
    Path("bao-cao.xlsx").write_bytes(exports.report_xlsx(report))
    Path("bao-cao.pdf").write_bytes(exports.report_pdf(report))
    Path("dung-han.csv").write_bytes(exports.rows_csv(reports.on_time(...)))
"""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import jinja2

from .core.calendar import VN_TZ
from .reports import REPORT_COLUMNS, PeriodicReport

__all__ = ["COLUMN_LABELS", "REPORT_TITLE", "report_csv", "report_html", "report_pdf", "report_xlsx", "rows_csv", "rows_xlsx"]

REPORT_TITLE = "Báo cáo kết quả giải quyết thủ tục hành chính"

#: Vietnamese headers of every column the report tables have.
COLUMN_LABELS: dict[str, str] = {
    "rank": "Hạng",
    "agency_code": "Mã cơ quan",
    "agency_name": "Cơ quan",
    "officer": "Tài khoản",
    "officer_name": "Cán bộ",
    "procedure_code": "Mã thủ tục",
    "procedure_name": "Thủ tục",
    "step_id": "Mã bước",
    "step_name": "Bước xử lý",
    "received": "Tiếp nhận trong kỳ",
    "carried_over": "Kỳ trước chuyển qua",
    "finished": "Đã giải quyết",
    "early": "Trước hạn",
    "on_time": "Đúng hạn",
    "late": "Quá hạn",
    "in_progress": "Đang giải quyết",
    "in_time": "Đang giải quyết trong hạn",
    "overdue": "Đang giải quyết quá hạn",
    "withdrawn": "Rút hồ sơ, dừng xử lý",
    "cancelled": "Hủy, trả lại bước trước",
    "on_time_rate": "Tỷ lệ đúng hạn",
    "late_rate": "Tỷ lệ quá hạn",
    "avg_days": "Thời gian trung bình (ngày làm việc)",
    "p90_days": "Phân vị 90 (ngày làm việc)",
    "flagged": "Cảnh báo quá hạn trên 10%",
    "queue": "Đang chờ xử lý",
    "queue_overdue": "Đang chờ, đã quá hạn",
    "late_share": "Tỷ lệ quá hạn",
    "avg_wait_days": "Chờ nhận xử lý trung bình (ngày làm việc)",
    "avg_work_days": "Xử lý trung bình (ngày làm việc)",
    "returns_sent": "Trả lại bước trước",
    "returns_received": "Bị trả lại để làm lại",
    "complained": "Hồ sơ bị phản ánh hoặc không hài lòng",
    "ratings": "Lượt đánh giá",
    "satisfied": "Hài lòng",
    "dissatisfied": "Không hài lòng",
    "feedback": "Phản ánh, kiến nghị",
    "complaint_rate": "Tỷ lệ bị phản ánh, không hài lòng",
    "dissatisfied_share": "Tỷ lệ đánh giá không hài lòng",
    "score": "Chỉ số hài lòng (%)",
    "reasons": "Lý do không hài lòng, phản ánh",
    **REPORT_COLUMNS,
}

_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "reports_templates"),
    autoescape=jinja2.select_autoescape(("html",)),
    undefined=jinja2.StrictUndefined,
)


def _cell(value: Any) -> Any:
    if isinstance(value, bool):
        return "Có" if value else ""
    if value is None:
        return ""
    if isinstance(value, list):
        return " | ".join(_reason(item) if isinstance(item, Mapping) else str(item) for item in value)
    return value


def _reason(item: Mapping[str, Any]) -> str:
    parts = [str(item.get("dossier_code") or "")]
    if item.get("criteria"):
        parts.append("tiêu chí: " + ", ".join(item["criteria"]))
    if item.get("comment"):
        parts.append(str(item["comment"]))
    return " – ".join(p for p in parts if p)


def _columns(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None) -> list[str]:
    if columns is not None:
        return list(columns)
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key not in ("depth",):
                seen.setdefault(key, None)
    return list(seen)


def rows_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> bytes:
    """Any table of :mod:`engine.reports` (a list of row dicts) as CSV with Vietnamese headers."""
    keys = _columns(rows, columns)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([COLUMN_LABELS.get(k, k) for k in keys])
    for row in rows:
        writer.writerow([_cell(row.get(k)) for k in keys])
    return out.getvalue().encode("utf-8-sig")


def _report_sections(report: PeriodicReport) -> list[tuple[str, str, list[dict[str, Any]]]]:
    return [
        ("Theo cơ quan", "Cơ quan", [{"code": r["agency_code"], "name": r["agency_name"], "depth": r["depth"], **r} for r in report.by_agency]),
        ("Theo thủ tục", "Thủ tục", [{"code": r["procedure_code"], "name": r["procedure_name"], "depth": 0, **r} for r in report.by_procedure]),
    ]


def report_csv(report: PeriodicReport) -> bytes:
    """The periodic report as one CSV table: rows per agency, per procedure, then the totals."""
    out = io.StringIO()
    writer = csv.writer(out)
    keys = list(REPORT_COLUMNS)
    writer.writerow(["Phân loại", "Mã", "Tên", *(REPORT_COLUMNS[k] for k in keys)])
    for heading, _name, rows in _report_sections(report):
        for row in rows:
            writer.writerow([heading, row["code"], row["name"], *(_cell(row.get(k)) for k in keys)])
    writer.writerow(["Tổng cộng", "", report.agency_name, *(_cell(report.totals.get(k)) for k in keys)])
    return out.getvalue().encode("utf-8-sig")


def _bounds(report: PeriodicReport) -> tuple[str, str]:
    first = report.period.start.astimezone(VN_TZ)
    last = (report.period.end - timedelta(microseconds=1)).astimezone(VN_TZ)
    return f"{first:%d/%m/%Y}", f"{last:%d/%m/%Y}"


def report_xlsx(report: PeriodicReport) -> bytes:
    """The periodic report as an Excel workbook: a sheet per agency and per procedure, formatted."""
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
    from openpyxl.utils import get_column_letter

    workbook = Workbook()
    thin = Side(style="thin", color="000000")
    border = Border(left=thin, right=thin, top=thin, bottom=thin)
    header_fill = PatternFill("solid", fgColor="DCE6F1")
    total_fill = PatternFill("solid", fgColor="F2F2F2")
    keys = list(REPORT_COLUMNS)
    first, last = _bounds(report)
    for index, (heading, name_header, rows) in enumerate(_report_sections(report)):
        sheet = workbook.active if index == 0 else workbook.create_sheet()
        sheet.title = heading
        width = 3 + len(keys)
        lines = [
            (REPORT_TITLE.upper(), Font(bold=True, size=14)),
            (f"Kỳ báo cáo: {report.period.label} (từ ngày {first} đến ngày {last})", Font(italic=True)),
            (f"Đơn vị: {report.agency_name} và các cơ quan trực thuộc — {heading.lower()}", Font(italic=True)),
        ]
        for row_number, (text, font) in enumerate(lines, 1):
            sheet.cell(row=row_number, column=1, value=text).font = font
            sheet.merge_cells(start_row=row_number, start_column=1, end_row=row_number, end_column=width)
            sheet.cell(row=row_number, column=1).alignment = Alignment(horizontal="center")
        top = len(lines) + 2
        headers = ["STT", "Mã", name_header, *(REPORT_COLUMNS[k] for k in keys)]
        for column, text in enumerate(headers, 1):
            cell = sheet.cell(row=top, column=column, value=text)
            cell.font = Font(bold=True)
            cell.fill = header_fill
            cell.border = border
            cell.alignment = Alignment(horizontal="center", vertical="center", wrap_text=True)
        sheet.row_dimensions[top].height = 60
        for offset, row in enumerate(rows, 1):
            values = [offset, row["code"], row["name"], *(row.get(k) for k in keys)]
            for column, value in enumerate(values, 1):
                cell = sheet.cell(row=top + offset, column=column, value=value)
                cell.border = border
                if column == 3:
                    cell.alignment = Alignment(indent=int(row.get("depth") or 0) * 2)
                elif column > 3:
                    cell.number_format = "0.00" if keys[column - 4] in ("on_time_rate", "avg_days") else "#,##0"
        total_row = top + len(rows) + 1
        totals = ["", "", "Tổng cộng", *(report.totals.get(k) for k in keys)]
        for column, value in enumerate(totals, 1):
            cell = sheet.cell(row=total_row, column=column, value=value)
            cell.font = Font(bold=True)
            cell.fill = total_fill
            cell.border = border
            if column > 3:
                cell.number_format = "0.00" if keys[column - 4] in ("on_time_rate", "avg_days") else "#,##0"
        for column in range(1, width + 1):
            sheet.column_dimensions[get_column_letter(column)].width = {1: 6, 2: 16, 3: 42}.get(column, 13)
        sheet.freeze_panes = sheet.cell(row=top + 1, column=4)
        sheet.page_setup.orientation = "landscape"
        sheet.page_setup.fitToWidth = 1
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def rows_xlsx(title: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> bytes:
    """Any table of :mod:`engine.reports` as a one-sheet workbook with Vietnamese headers."""
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font, PatternFill

    keys = _columns(rows, columns)
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "Bảng số liệu"
    sheet.cell(row=1, column=1, value=title).font = Font(bold=True, size=13)
    for column, key in enumerate(keys, 1):
        cell = sheet.cell(row=3, column=column, value=COLUMN_LABELS.get(key, key))
        cell.font = Font(bold=True)
        cell.fill = PatternFill("solid", fgColor="DCE6F1")
        cell.alignment = Alignment(wrap_text=True, vertical="center", horizontal="center")
    for offset, row in enumerate(rows, 4):
        for column, key in enumerate(keys, 1):
            sheet.cell(row=offset, column=column, value=_cell(row.get(key)))
    sheet.freeze_panes = "A4"
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def _formatted(values: Iterable[Any], keys: Sequence[str]) -> list[str]:
    out = []
    for key, value in zip(keys, values):
        if value is None:
            out.append("–")
        elif key in ("on_time_rate", "avg_days"):
            out.append(f"{value:,.2f}".replace(",", " ").replace(".", ","))
        else:
            out.append(f"{value:,}".replace(",", "."))
    return out


def report_html(report: PeriodicReport) -> str:
    """The periodic report as a self-contained A4 landscape HTML page (what the PDF prints)."""
    keys = list(REPORT_COLUMNS)
    first, last = _bounds(report)
    sections = []
    for heading, name_header, rows in _report_sections(report):
        sections.append({
            "heading": f"{'I' if not sections else 'II'}. Kết quả giải quyết {heading.lower()}",
            "name_header": name_header,
            "rows": [{"name": r["name"], "code": r["code"], "depth": r["depth"], "cells": _formatted((r.get(k) for k in keys), keys)} for r in rows],
        })
    generated = report.generated_at.astimezone(VN_TZ)
    return _TEMPLATES.get_template("periodic.html").render(
        title=REPORT_TITLE,
        report=report,
        first_day=first,
        last_day=last,
        generated=f"Lập lúc {generated:%H:%M} ngày {generated:%d/%m/%Y}",
        sections=sections,
        labels=[REPORT_COLUMNS[k] for k in keys],
        totals=_formatted((report.totals.get(k) for k in keys), keys),
    )


def report_pdf(report: PeriodicReport) -> bytes:
    """The periodic report printed to PDF with WeasyPrint (fonts from the system, nothing fetched)."""
    from .forms._pdf import html_to_pdf

    return html_to_pdf(report_html(report))
