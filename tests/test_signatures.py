"""Digitally signed result documents: verification against the trusted bundle, the
upload API, the completion rule of steps marked ``signed_result`` and the public lookup.

Each test builds its own certificate authority with ``cryptography`` and signs
PDFs with pyHanko. Signing uses the wall clock (pyHanko stamps the signing
time itself), so the dossiers here run at the real time too.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask.testing import FlaskClient
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.writer import PdfFileWriter
from pyhanko.sign import signers
from pyhanko.sign.validation.dss import DocumentSecurityStore
from pyhanko_certvalidator.registry import SimpleCertificateStore
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from api.app import create_app
from engine import auth, lifecycle, public, results, services
from engine.core.calendar import VN_TZ
from engine.errors import Conflict, Forbidden, InvalidRequest
from engine.persistence.models import ResultDocument, Task
from engine.signatures import MAX_PDF_BYTES, Reason, TrustStore, verify_pdf

from .conftest import load_demo_province

ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- a test CA

_KEY_USAGES = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
               "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")


def _key_usage(*on: str) -> x509.KeyUsage:
    return x509.KeyUsage(**{name: name in on for name in _KEY_USAGES})


def _name(common_name: str, organisation: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation)])


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class CertificateAuthority:
    """A root certificate authority that issues signing certificates."""

    def __init__(self, name: str = "CA thử nghiệm tỉnh Đồng Nai") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = _name(name, "Ban Cơ yếu Chính phủ")
        self.cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(_utcnow() - timedelta(days=365)).not_valid_after(_utcnow() + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage("key_cert_sign", "crl_sign"), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def signer(self, common_name: str, organisation: str = "UBND xã Phước An", valid_from: datetime | None = None,
               valid_until: datetime | None = None, key_usage: x509.KeyUsage | None = None) -> signers.SimpleSigner:
        """A pyHanko signer holding a fresh key and a certificate this CA issued for it."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder().subject_name(_name(common_name, organisation)).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(valid_from or _utcnow() - timedelta(days=30))
            .not_valid_after(valid_until or _utcnow() + timedelta(days=365))
            .add_extension(key_usage or _key_usage("digital_signature", "content_commitment"), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        der = serialization.Encoding.DER
        return signers.SimpleSigner(
            signing_cert=asn1_x509.Certificate.load(cert.public_bytes(der)),
            signing_key=asn1_keys.PrivateKeyInfo.load(
                key.private_bytes(der, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())),
            cert_registry=SimpleCertificateStore.from_certs([asn1_x509.Certificate.load(self.cert.public_bytes(der))]),
        )


def plain_pdf(text: str = "Giay khai sinh so 12/2026", compressed: bool = False) -> bytes:
    """A one-page PDF; ``compressed`` deflates its content stream (binary bytes, as real PDFs have)."""
    writer = PdfFileWriter()
    content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    if compressed:
        content = zlib.compress(content + b"\x00" * 64)  # padding makes NUL bytes certain
        stream = generic.StreamObject({generic.NameObject("/Filter"): generic.NameObject("/FlateDecode")}, encoded_data=content)
    else:
        stream = generic.StreamObject(stream_data=content)
    page = generic.DictionaryObject({
        generic.NameObject("/Type"): generic.NameObject("/Page"),
        generic.NameObject("/MediaBox"): generic.ArrayObject([generic.NumberObject(n) for n in (0, 0, 595, 842)]),
        generic.NameObject("/Contents"): writer.add_object(stream),
    })
    writer.insert_page(page)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def sign(pdf: bytes, signer: signers.SimpleSigner, field: str = "ChuKy1") -> bytes:
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    return signers.sign_pdf(writer, signers.PdfSignatureMetadata(field_name=field), signer=signer).getvalue()


def change_page_after_signing(pdf: bytes) -> bytes:
    """Append a revision that replaces the signed page's content (an incremental update)."""
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    page = writer.root["/Pages"]["/Kids"][0].get_object()
    page[generic.NameObject("/Contents")] = writer.add_object(generic.StreamObject(stream_data=b"BT 72 720 Td (Gia mao) Tj ET"))
    writer.update_container(page)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority()


@pytest.fixture(scope="module")
def trust(ca: CertificateAuthority) -> TrustStore:
    return TrustStore.from_pem(ca.pem())


@pytest.fixture(scope="module")
def signed(ca: CertificateAuthority) -> bytes:
    return sign(plain_pdf(), ca.signer("Phạm Văn Sơn"))


@pytest.fixture(autouse=True)
def trusted_bundle(ca: CertificateAuthority, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The province's configuration: the test CA is the one trusted root (``MOTCUA_TRUSTED_CA_FILE``)."""
    bundle = tmp_path / "trusted-ca.pem"
    bundle.write_bytes(ca.pem())
    monkeypatch.setenv("MOTCUA_TRUSTED_CA_FILE", str(bundle))
    return bundle


def _now() -> datetime:
    return datetime.now(VN_TZ)


# --------------------------------------------------------------------------- verification (pure)


def test_a_signature_from_the_trusted_ca_is_valid(signed: bytes, trust: TrustStore) -> None:
    before = _now()
    result = verify_pdf(signed, trust, _now())
    assert result.valid, result.reasons
    assert result.reasons == ()
    assert result.signer == "Phạm Văn Sơn (UBND xã Phước An)"
    assert result.signatures == 1
    assert result.signed_at is not None and result.signed_at.utcoffset() == timedelta(hours=7)
    assert before - timedelta(minutes=10) <= result.signed_at <= _now()


def test_an_unsigned_pdf_is_refused(trust: TrustStore) -> None:
    result = verify_pdf(plain_pdf(), trust, _now())
    assert (result.valid, result.reasons, result.signatures) == (False, (Reason.UNSIGNED,), 0)


def test_a_pdf_changed_after_signing_is_refused(signed: bytes, trust: TrustStore) -> None:
    changed = change_page_after_signing(signed)
    result = verify_pdf(changed, trust, _now())
    assert (result.valid, result.reasons) == (False, (Reason.NOT_COVERED,))
    assert result.signer == "Phạm Văn Sơn (UBND xã Phước An)"  # still says who signed what came before


def test_a_validation_data_update_after_signing_is_allowed(ca: CertificateAuthority, signed: bytes, trust: TrustStore) -> None:
    """Long-term validation adds a document security store (DSS) revision after signing: allowed."""
    stream = io.BytesIO(signed)
    signature = PdfFileReader(stream).embedded_signatures[0]
    root = asn1_x509.Certificate.load(ca.cert.public_bytes(serialization.Encoding.DER))
    DocumentSecurityStore.add_dss(stream, signature.pkcs7_content, certs=[root])
    updated = stream.getvalue()
    assert len(updated) > len(signed) and updated.startswith(signed)
    result = verify_pdf(updated, trust, _now())
    assert (result.valid, result.reasons) == (True, ())


def test_signed_bytes_edited_in_place_break_the_signature(signed: bytes, trust: TrustStore) -> None:
    tampered = signed.replace(b"so 12/2026", b"so 99/2026")
    assert tampered != signed and len(tampered) == len(signed)
    result = verify_pdf(tampered, trust, _now())
    assert (result.valid, result.reasons) == (False, (Reason.NOT_INTACT,))


def test_a_signer_from_an_untrusted_ca_is_refused(trust: TrustStore) -> None:
    stranger = CertificateAuthority("CA không được công nhận")
    result = verify_pdf(sign(plain_pdf(), stranger.signer("Người lạ")), trust, _now())
    assert (result.valid, result.reasons) == (False, (Reason.UNTRUSTED,))
    assert result.signer == "Người lạ (UBND xã Phước An)"


def test_an_expired_signer_certificate_is_refused(ca: CertificateAuthority, trust: TrustStore) -> None:
    expired_at = _utcnow() - timedelta(days=2)
    signer = ca.signer("Hết Hạn", valid_from=_utcnow() - timedelta(days=400), valid_until=expired_at)
    result = verify_pdf(sign(plain_pdf(), signer), trust, _now())
    assert not result.valid
    expected = Reason.EXPIRED.format(until=expired_at.replace(microsecond=0).astimezone(VN_TZ).strftime("%H:%M %d/%m/%Y"))
    assert result.reasons == (expected,)


def test_a_certificate_not_meant_for_signing_is_refused(ca: CertificateAuthority, trust: TrustStore) -> None:
    signer = ca.signer("Chỉ Mã Hóa", key_usage=_key_usage("key_encipherment"))
    result = verify_pdf(sign(plain_pdf(), signer), trust, _now())
    assert (result.valid, result.reasons) == (False, (Reason.KEY_USAGE,))


def test_a_signing_time_in_the_future_is_refused(signed: bytes, trust: TrustStore) -> None:
    result = verify_pdf(signed, trust, _now() - timedelta(days=1))
    assert not result.valid
    assert len(result.reasons) == 1 and result.reasons[0].startswith("Thời điểm ký (") and "tương lai" in result.reasons[0]


@pytest.mark.parametrize("data, reason", [
    (b"\x00\x01garbage that is no PDF at all" * 10, Reason.NOT_PDF),
    (b"", Reason.NOT_PDF),
    (b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF", Reason.MALFORMED),
    (b"%PDF-1.7\n" + b"A" * MAX_PDF_BYTES, Reason.TOO_LARGE.format(limit=MAX_PDF_BYTES // (1024 * 1024))),
])
def test_bytes_that_are_no_readable_pdf_are_refused(data: bytes, reason: str, trust: TrustStore) -> None:
    result = verify_pdf(data, trust, _now())
    assert (result.valid, result.reasons, result.signer) == (False, (reason,), None)


def test_a_truncated_signed_pdf_is_refused(signed: bytes, trust: TrustStore) -> None:
    result = verify_pdf(signed[: len(signed) // 2], trust, _now())
    assert not result.valid and result.reasons == (Reason.MALFORMED,)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.binary(max_size=16), st.integers(0, 40)), min_size=1, max_size=4))
def test_a_damaged_signed_pdf_never_crashes_the_check(signed: bytes, trust: TrustStore, edits: list[tuple[float, bytes, int]]) -> None:
    """Bytes replaced, cut or inserted anywhere: always a verdict, with reasons exactly when invalid."""
    data = bytearray(signed)
    for where, insert, cut in edits:
        at = int(where * len(data))
        data[at:at + cut] = insert
    result = verify_pdf(bytes(data), trust, _now())
    assert result.valid == (result.reasons == ())
    assert all(isinstance(reason, str) and reason for reason in result.reasons)
    signed_part = signed.index(b"/Contents <")  # everything before the signature value is digested
    if bytes(data[:signed_part]) != signed[:signed_part]:
        assert not result.valid


def test_without_trusted_certificates_nothing_is_valid(signed: bytes) -> None:
    result = verify_pdf(signed, TrustStore(), _now())
    assert (result.valid, result.reasons) == (False, (Reason.NO_TRUST_ROOTS,))


def test_two_signatures_are_checked_and_the_newest_names_the_signer(ca: CertificateAuthority, signed: bytes, trust: TrustStore) -> None:
    both = sign(signed, ca.signer("Lê Thị Mai"), field="ChuKy2")
    result = verify_pdf(both, trust, _now())
    assert (result.valid, result.signatures, result.signer) == (True, 2, "Lê Thị Mai (UBND xã Phước An)")
    stranger = CertificateAuthority("CA lạ")
    mixed = verify_pdf(sign(signed, stranger.signer("Người lạ"), field="ChuKy2"), trust, _now())
    assert (mixed.valid, mixed.reasons) == (False, (Reason.NUMBERED.format(n=2, reason=Reason.UNTRUSTED),))


def test_the_trusted_bundle_is_read_from_a_pem_file(tmp_path: Path, ca: CertificateAuthority, signed: bytes) -> None:
    other = CertificateAuthority("CA khác")
    bundle = tmp_path / "trusted.pem"
    bundle.write_bytes(other.pem() + ca.pem())
    store = TrustStore.from_file(bundle)
    assert len(store.certificates) == 2
    assert verify_pdf(signed, store, _now()).valid
    bundle.write_bytes(other.pem())  # the file changes: the new content is used
    assert verify_pdf(signed, TrustStore.from_file(bundle), _now()).reasons == (Reason.UNTRUSTED,)
    with pytest.raises(ValueError):
        TrustStore.from_file(tmp_path / "missing.pem")
    (tmp_path / "empty.pem").write_bytes(b"no certificate here")
    with pytest.raises(ValueError):
        TrustStore.from_file(tmp_path / "empty.pem")


def test_the_configured_bundle_is_the_trust_store(trusted_bundle: Path, tmp_path: Path, signed: bytes) -> None:
    from engine import config

    assert verify_pdf(signed, results.trust_store(), _now()).valid  # MOTCUA_TRUSTED_CA_FILE
    assert results.trust_store(config.load({}, trusted_ca_file=str(tmp_path / "missing.pem"))) == TrustStore()
    assert results.trust_store(config.load({})) == TrustStore()


# --------------------------------------------------------------------------- steps that need a signed result

KHAI_SINH = "dang-ky-khai-sinh.bpmn"
PHUOC_AN = "000.17.22.H19"
SIGNING_STEP = "ky_giay_khai_sinh"
FORMS = {
    "tiep_nhan_ks": {
        "nguoi_yeu_cau": "Nguyễn Văn Minh", "quan_he": "Cha", "ho_ten_tre": "Nguyễn Ngọc Anh",
        "ngay_sinh": "2026-02-20", "gioi_tinh": "Nữ", "dan_toc": "Kinh", "quoc_tich": "Việt Nam",
        "noi_sinh": "Bệnh viện Đa khoa Đồng Nai", "ho_ten_me": "Trần Thị Hoa", "nam_sinh_me": 1995,
        "ho_ten_cha": "Nguyễn Văn Minh", "nam_sinh_cha": 1993,
    },
    "kiem_tra_ghi_so": {"so_dang_ky": "12/2026", "so_dinh_danh": "075226000123", "dung_han": True},
    "ky_giay_khai_sinh": {"tra_lai": False},
    "tra_giay_khai_sinh": {"so_ban_sao": 1, "phi_le_phi_da_thu": 8_000},
}
ACCOUNT = {"tiep_nhan_ks": "motcua.phuocan", "kiem_tra_ghi_so": "chuyenvien.phuocan",
           "ky_giay_khai_sinh": "lanhdao.phuocan", "tra_giay_khai_sinh": "motcua.phuocan"}
SIGNED_PROPERTY = '<camunda:property name="signed_result" value="true" />'


def _khai_sinh_with_signed_step() -> bytes:
    """The bundled birth registration, with its signing step marked ``signed_result``."""
    text = (ROOT / "processes" / KHAI_SINH).read_text(encoding="utf-8")
    start = text.index(f'id="{SIGNING_STEP}"')
    anchor = text.index('<camunda:property name="allotment"', start)
    return (text[:anchor] + SIGNED_PROPERTY + "\n          " + text[anchor:]).encode()


def _start(session: Session, at: datetime) -> str:
    load_demo_province(session, at)
    result = services.deploy(session, {KHAI_SINH: _khai_sinh_with_signed_step()}, actor="thietke.tinh", now=at)
    assert result.created and not [p for p in result.warnings if "signed_result" in str(p)]
    record = services.start_dossier(session, "1.001193", FORMS["tiep_nhan_ks"], actor="motcua.phuocan", now=at,
                                    agency_code=PHUOC_AN, applicant={"name": "Nguyễn Văn Minh", "phone": "0912345678"})
    return record.code


def _open_task(session: Session, code: str) -> Task:
    [row] = services.open_tasks(session, code)
    return session.get(Task, row.id, populate_existing=True)


def _complete_until(session: Session, code: str, step_id: str, at: datetime) -> Task:
    """Complete the steps before ``step_id``; the open step ``step_id``."""
    while (task := _open_task(session, code)).step_id != step_id:
        services.complete_task(session, task.id, FORMS[task.step_id], actor=ACCOUNT[task.step_id], now=at)
    return task


def _meta(session: Session) -> dict:
    return services.get_version(session, "1.001193").meta


def test_a_marked_step_needs_a_validly_signed_result(session: Session, ca: CertificateAuthority, trust: TrustStore) -> None:
    at = _now()
    code = _start(session, at)
    first = _open_task(session, code)
    assert not results.requires_signed_result(session, _meta(session), first.step_id, first.dossier_id)
    results.check_before_completion(session, _meta(session), first, now=at, trust=trust)  # no requirement: passes
    task = _complete_until(session, code, SIGNING_STEP, at)
    assert results.requires_signed_result(session, _meta(session), SIGNING_STEP, task.dossier_id)

    with pytest.raises(InvalidRequest) as nothing:
        results.check_before_completion(session, _meta(session), task, now=at, trust=trust)
    assert "yêu cầu văn bản kết quả có chữ ký số hợp lệ" in nothing.value.message

    # Only the officer holding the step attaches its result.
    with pytest.raises(Forbidden):
        results.attach_result(session, task.id, "kq.pdf", sign(plain_pdf(), ca.signer("X")), "chuyenvien.phuocan", at, trust=trust)

    unsigned = results.attach_result(session, task.id, "ket-qua.pdf", plain_pdf(), "lanhdao.phuocan", at, trust=trust)
    assert (unsigned.signature_valid, unsigned.reasons) == (False, [Reason.UNSIGNED])
    with pytest.raises(InvalidRequest) as still:
        results.check_before_completion(session, _meta(session), task, now=at, trust=trust)
    assert Reason.UNSIGNED in still.value.message and still.value.details["reasons"] == [Reason.UNSIGNED]

    stranger = CertificateAuthority("CA lạ")
    foreign = results.attach_result(session, task.id, "ket-qua-2.pdf", sign(plain_pdf(), stranger.signer("Người lạ")),
                                    "lanhdao.phuocan", at, trust=trust)
    assert (foreign.signature_valid, foreign.signer) == (False, "Người lạ (UBND xã Phước An)")
    with pytest.raises(InvalidRequest) as untrusted:
        results.check_before_completion(session, _meta(session), task, now=at, trust=trust)
    assert untrusted.value.details["reasons"] == [Reason.UNTRUSTED]

    good = results.attach_result(session, task.id, "C:\\ho so\\giay-khai-sinh.pdf", sign(plain_pdf(), ca.signer("Phạm Văn Sơn")),
                                 "lanhdao.phuocan", at, trust=trust)
    assert (good.signature_valid, good.signer, good.reasons, good.filename) == (
        True, "Phạm Văn Sơn (UBND xã Phước An)", [], "giay-khai-sinh.pdf")
    results.check_before_completion(session, _meta(session), task, now=at, trust=trust)  # passes now
    # A trusted bundle that no longer holds the CA: checked again at completion, refused.
    with pytest.raises(InvalidRequest):
        results.check_before_completion(session, _meta(session), task, now=at, trust=TrustStore.from_pem(CertificateAuthority("CA thứ ba").pem()))
    # The version's metadata decide when they carry the key.
    relaxed = {**_meta(session), "steps": {**_meta(session)["steps"], SIGNING_STEP: {**_meta(session)["steps"][SIGNING_STEP], "signed_result": False}}}
    results.check_before_completion(session, relaxed, task, now=at, trust=TrustStore())

    listed = results.list_results(session, code)
    assert [(d["filename"], d["verification"]["valid"], d["step_name"]) for d in listed] == [
        ("ket-qua.pdf", False, "Ký Giấy khai sinh"),
        ("ket-qua-2.pdf", False, "Ký Giấy khai sinh"),
        ("giay-khai-sinh.pdf", True, "Ký Giấy khai sinh"),
    ]
    assert listed[0]["verification"]["reasons"] == [Reason.UNSIGNED]
    stored = session.scalar(select(ResultDocument).where(ResultDocument.id == good.id))
    assert stored.content.startswith(b"%PDF-") and stored.uploaded_by == "lanhdao.phuocan"

    services.complete_task(session, task.id, FORMS[SIGNING_STEP], actor="lanhdao.phuocan", now=at)
    with pytest.raises(Conflict):  # the step is done: nothing more to attach
        results.attach_result(session, task.id, "muon.pdf", plain_pdf(), "lanhdao.phuocan", at, trust=trust)


def test_uploads_that_are_no_usable_pdf_are_refused(session: Session, trust: TrustStore) -> None:
    at = _now()
    code = _start(session, at)
    task = _open_task(session, code)
    for content, kind in [
        (b"", "empty"),
        (b"PK\x03\x04 a zip file, not a PDF", "not_pdf"),
        (b"%PDF-1.7\n" + b"A" * MAX_PDF_BYTES, "too_large"),
        (b"%PDF-1.7\nnot really a pdf\n%%EOF", "malformed"),
    ]:
        with pytest.raises(results.DocumentRejected) as refused:
            results.attach_result(session, task.id, "x.pdf", content, "motcua.phuocan", at, trust=trust)
        assert refused.value.kind == kind
    assert session.scalar(select(ResultDocument.id)) is None


def test_the_public_lookup_shows_the_returned_results_signature(session: Session, ca: CertificateAuthority, trust: TrustStore) -> None:
    at = _now()
    code = _start(session, at)
    task = _complete_until(session, code, SIGNING_STEP, at)
    results.attach_result(session, task.id, "giay-khai-sinh.pdf", sign(plain_pdf(), ca.signer("Phạm Văn Sơn")),
                          "lanhdao.phuocan", at, trust=trust)
    while services.open_tasks(session, code):
        open_task = _open_task(session, code)
        services.complete_task(session, open_task.id, FORMS[open_task.step_id], actor=ACCOUNT[open_task.step_id], now=at)
    assert public.lookup(session, code, "5678")["result_signature"] is None  # processed, not yet returned
    lifecycle.return_result(session, code, "desk", "motcua.phuocan", at)
    view = public.lookup(session, code, "5678")
    shown = view["result_signature"]
    assert (shown["valid"], shown["label"], shown["signer"], shown["reasons"]) == (
        True, "Chữ ký số hợp lệ", "Phạm Văn Sơn (UBND xã Phước An)", [])
    assert abs(shown["signed_at"] - at) < timedelta(minutes=10)


def test_complete_task_refuses_a_marked_step_without_a_valid_signed_result(session: Session, ca: CertificateAuthority) -> None:
    """Through ``services.complete_task``: the trusted bundle comes from the configuration."""
    at = _now()
    code = _start(session, at)
    task = _complete_until(session, code, SIGNING_STEP, at)
    with pytest.raises(InvalidRequest):
        services.complete_task(session, task.id, FORMS[SIGNING_STEP], actor="lanhdao.phuocan", now=at)
    results.attach_result(session, task.id, "ket-qua.pdf", plain_pdf(), "lanhdao.phuocan", at)
    with pytest.raises(InvalidRequest):
        services.complete_task(session, task.id, FORMS[SIGNING_STEP], actor="lanhdao.phuocan", now=at)
    assert _open_task(session, code).id == task.id  # still open, nothing moved
    results.attach_result(session, task.id, "ket-qua-ky.pdf", sign(plain_pdf(), ca.signer("Phạm Văn Sơn")), "lanhdao.phuocan", at)
    services.complete_task(session, task.id, FORMS[SIGNING_STEP], actor="lanhdao.phuocan", now=at)
    assert _open_task(session, code).step_id == "tra_giay_khai_sinh"


# --------------------------------------------------------------------------- the API

PASSWORD = "mat-khau-ky-so"


@pytest.fixture
def api(db_engine: Engine, trusted_bundle: Path) -> Iterator[tuple[FlaskClient, str]]:
    at = _now()
    with Session(db_engine, expire_on_commit=False) as session:
        code = _start(session, at)
        _complete_until(session, code, SIGNING_STEP, at)
        for username in ("lanhdao.phuocan", "chuyenvien.thue"):
            auth.set_password(session, username, PASSWORD)
    app = create_app(database_url=db_engine.url.render_as_string(hide_password=False), trusted_ca_file=str(trusted_bundle))
    with app.test_client() as client:
        yield client, code


def _token(client: FlaskClient, username: str) -> dict[str, str]:
    response = client.post("/api/v1/auth/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.get_json()
    return {"Authorization": f"Bearer {response.get_json()['token']}"}


def _upload(client: FlaskClient, task_id: int, content: bytes, headers: dict[str, str], name: str = "ket-qua.pdf") -> object:
    return client.post(f"/api/v1/tasks/{task_id}/result", headers=headers,
                       data={"file": (io.BytesIO(content), name, "application/pdf")}, content_type="multipart/form-data")


def _signing_task_id(client: FlaskClient, code: str, headers: dict[str, str]) -> int:
    response = client.get(f"/api/v1/dossiers/{code}", headers=headers)
    assert response.status_code == 200, response.get_json()
    [task] = response.get_json()["open_tasks"]
    assert task["step_id"] == SIGNING_STEP
    return task["id"]


def test_the_upload_api_stores_and_verifies_a_signed_pdf(api: tuple[FlaskClient, str], ca: CertificateAuthority) -> None:
    client, code = api
    leader = _token(client, "lanhdao.phuocan")
    task_id = _signing_task_id(client, code, leader)
    response = _upload(client, task_id, sign(plain_pdf(), ca.signer("Phạm Văn Sơn")), leader, "giấy khai sinh.pdf")
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert (body["filename"], body["step_name"], body["verification"]["valid"], body["verification"]["signer"]) == (
        "giấy khai sinh.pdf", "Ký Giấy khai sinh", True, "Phạm Văn Sơn (UBND xã Phước An)")
    assert body["verification"]["reasons"] == [] and body["verification"]["signed_at"].endswith("+07:00")

    unsigned = _upload(client, task_id, plain_pdf(), leader)
    assert unsigned.status_code == 201 and unsigned.get_json()["verification"]["reasons"] == [Reason.UNSIGNED]
    # Real PDFs carry compressed, binary streams (NUL bytes included).
    binary = sign(plain_pdf(compressed=True), ca.signer("Phạm Văn Sơn"))
    assert b"\x00" in binary
    taken = _upload(client, task_id, binary, leader)
    assert taken.status_code == 201, taken.get_json()
    assert taken.get_json()["verification"]["valid"] is True

    listed = client.get(f"/api/v1/dossiers/{code}/results", headers=leader)
    assert listed.status_code == 200
    assert [(d["id"], d["verification"]["valid"]) for d in listed.get_json()] == [
        (body["id"], True), (unsigned.get_json()["id"], False), (taken.get_json()["id"], True)]

    outsider = client.get(f"/api/v1/dossiers/{code}/results", headers=_token(client, "chuyenvien.thue"))
    assert outsider.status_code == 403 and outsider.mimetype == "application/problem+json"
    assert _upload(client, task_id, plain_pdf(), _token(client, "chuyenvien.thue")).status_code == 403
    assert client.get(f"/api/v1/dossiers/{code}/results").status_code == 401


def test_the_upload_api_refuses_non_pdf_and_oversized_files(api: tuple[FlaskClient, str]) -> None:
    client, code = api
    leader = _token(client, "lanhdao.phuocan")
    task_id = _signing_task_id(client, code, leader)
    not_pdf = _upload(client, task_id, "Giấy khai sinh (bản văn bản)".encode(), leader, "ket-qua.txt")
    assert not_pdf.status_code == 415 and not_pdf.mimetype == "application/problem+json"
    assert not_pdf.get_json()["detail"].startswith(Reason.NOT_PDF)
    too_large = _upload(client, task_id, b"%PDF-1.7\n" + b"A" * MAX_PDF_BYTES, leader)
    assert too_large.status_code == 413 and too_large.mimetype == "application/problem+json"
    assert too_large.get_json()["detail"] == Reason.TOO_LARGE.format(limit=MAX_PDF_BYTES // (1024 * 1024))
    missing = client.post(f"/api/v1/tasks/{task_id}/result", headers=leader, data={}, content_type="multipart/form-data")
    assert missing.status_code == 400 and missing.mimetype == "application/problem+json"
    assert "'file'" in missing.get_json()["detail"]
    outsider = client.post(f"/api/v1/tasks/{task_id}/result", headers=_token(client, "chuyenvien.thue"), json={})
    assert outsider.status_code == 403  # the caller is refused before the missing file is noticed
    assert client.get(f"/api/v1/dossiers/{code}/results", headers=leader).get_json() == []

