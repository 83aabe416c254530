"""Digital signatures on result documents (PAdES): is a signed PDF good enough to hand out?

:func:`verify_pdf` reads a PDF with pyHanko (at most :data:`MAX_PDF_BYTES`, strict
parsing, pyHanko's decoding limits for untrusted input) and
checks, for every signature in it:

- the PDF parses and carries at least one signature;
- the signature is intact and cryptographically valid;
- it covers the whole document: after the newest signature only document
  security store / timestamp updates (LTV) may follow; after an earlier one,
  only later signatures and form filling;
- the signer's certificate chains to a certificate of the trusted bundle
  (:class:`TrustStore`, from ``MOTCUA_TRUSTED_CA_FILE``), was valid at the
  signing time, is not known to be revoked, and its key usage allows signing
  (digitalSignature or nonRepudiation).

Nothing is fetched from the network (no CRL/OCSP download): revocation is
checked only against what the PDF itself carries. The signing time is the one
the signer reports (signature dictionary ``/M`` or the CMS signing-time
attribute), so the validity of the certificate "at signing time" is judged at
that moment; a time in the future is refused.

The answer is a :class:`Verification`: ``valid``, the signer (CN and O of the
newest signature's certificate), its signing time and the reasons for refusal,
in Vietnamese. This module touches no database.

Example::

    trust = TrustStore.from_file("/etc/motcua/trusted-ca.pem")
    result = verify_pdf(pdf_bytes, trust, now=datetime.now(VN_TZ))
    if not result.valid:
        print("; ".join(result.reasons))
"""

from __future__ import annotations

import io
import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from asn1crypto import x509 as asn1_x509
from cryptography import x509 as crypto_x509
from cryptography.hazmat.primitives.serialization import Encoding

from .core.calendar import VN_TZ

__all__ = [
    "MAX_PDF_BYTES",
    "Reason",
    "TrustStore",
    "Verification",
    "is_pdf",
    "signer_name",
    "verify_pdf",
]

log = logging.getLogger(__name__)

#: Largest PDF accepted for verification (and for upload), in bytes.
MAX_PDF_BYTES = 5 * 1024 * 1024

#: How far in the future a reported signing time may be (clock skew between machines).
CLOCK_SKEW = timedelta(minutes=5)

#: Key usages, any of which lets a certificate sign documents.
SIGNING_KEY_USAGES = frozenset({"digital_signature", "non_repudiation"})


class Reason:
    """The Vietnamese reasons a document is refused (some take format arguments)."""

    TOO_LARGE = "Tệp quá lớn: tối đa {limit} MB."
    NOT_PDF = "Tệp không phải là tài liệu PDF."
    MALFORMED = "Tệp PDF bị lỗi cấu trúc, không đọc được."
    UNSIGNED = "Tài liệu chưa được ký số."
    NOT_INTACT = "Chữ ký không còn toàn vẹn: nội dung đã ký bị sửa đổi."
    BAD_SIGNATURE = "Chữ ký số không hợp lệ về mặt mật mã."
    NOT_COVERED = "Tài liệu đã bị thay đổi sau khi ký: chữ ký không bao trùm toàn bộ tài liệu."
    NO_TRUST_ROOTS = "Chưa cấu hình danh sách chứng thư số gốc tin cậy (MOTCUA_TRUSTED_CA_FILE)."
    UNTRUSTED = "Chứng thư số của người ký không do tổ chức chứng thực được tin cậy cấp."
    CHAIN_FAILED = "Không xác thực được chuỗi chứng thư số của người ký."
    EXPIRED = "Chứng thư số của người ký đã hết hạn tại thời điểm ký (hết hạn {until})."
    NOT_YET_VALID = "Chứng thư số của người ký chưa có hiệu lực tại thời điểm ký (hiệu lực từ {since})."
    KEY_USAGE = "Chứng thư số của người ký không được phép dùng để ký số (thiếu mục đích chữ ký số, chống chối bỏ)."
    REVOKED = "Chứng thư số của người ký đã bị thu hồi."
    FUTURE = "Thời điểm ký ({at}) ở tương lai."
    NUMBERED = "Chữ ký thứ {n}: {reason}"


@dataclass(frozen=True)
class TrustStore:
    """The certificates the province trusts: every certificate of the bundle is a trust anchor
    (roots and, where the province trusts only an intermediate, that intermediate)."""

    certificates: tuple[asn1_x509.Certificate, ...] = ()

    @classmethod
    def from_pem(cls, data: bytes) -> "TrustStore":
        """Certificates from PEM text (several ``BEGIN CERTIFICATE`` blocks); ValueError if none."""
        certs = crypto_x509.load_pem_x509_certificates(data)
        return cls(tuple(asn1_x509.Certificate.load(c.public_bytes(Encoding.DER)) for c in certs))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> "TrustStore":
        """The bundle at ``path``, cached until the file changes; ValueError when unreadable."""
        try:
            stat = os.stat(path)
        except OSError as err:
            raise ValueError(f"trusted CA bundle {path} cannot be read: {err}") from err
        key = (os.fspath(path), stat.st_mtime_ns, stat.st_size)
        with _CACHE_LOCK:
            cached = _FILE_CACHE.get(key[0])
            if cached is not None and cached[0] == key:
                return cached[1]
        with open(path, "rb") as handle:
            store = cls.from_pem(handle.read())
        with _CACHE_LOCK:
            _FILE_CACHE[key[0]] = (key, store)
        return store

    def __bool__(self) -> bool:
        return bool(self.certificates)


_FILE_CACHE: dict[str, tuple[tuple[str, int, int], TrustStore]] = {}
_CACHE_LOCK = threading.Lock()


@dataclass(frozen=True)
class Verification:
    """The verdict on a document's signatures."""

    valid: bool
    #: The newest signature's signer: "common name (organisation)".
    signer: str | None = None
    #: When the newest signature says it was made.
    signed_at: datetime | None = None
    #: Why the document is refused (empty when valid).
    reasons: tuple[str, ...] = ()
    #: How many signatures the document carries.
    signatures: int = 0
    #: Per signature: signer, signing time and its own reasons.
    details: tuple[dict[str, Any], ...] = field(default=(), compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "signer": self.signer,
            "signed_at": self.signed_at,
            "reasons": list(self.reasons),
            "signatures": self.signatures,
        }


def is_pdf(data: bytes) -> bool:
    """True when ``data`` starts like a PDF (``%PDF-`` within the first KiB, as readers allow)."""
    return b"%PDF-" in data[:1024]


def _refused(reason: str) -> Verification:
    return Verification(valid=False, reasons=(reason,))


def signer_name(cert: asn1_x509.Certificate) -> str:
    """The subject of ``cert`` as "common name (organisation)", or in full when it has no CN."""
    subject = cert.subject.native
    name = subject.get("common_name")
    org = subject.get("organization_name")
    if isinstance(name, list):
        name = ", ".join(name)
    if isinstance(org, list):
        org = ", ".join(org)
    if not name:
        return cert.subject.human_friendly
    return f"{name} ({org})" if org else str(name)


def _fmt(moment: datetime) -> str:
    return moment.astimezone(VN_TZ).strftime("%H:%M %d/%m/%Y")


def verify_pdf(data: bytes, trust: TrustStore, now: datetime) -> Verification:
    """Check every signature of the PDF ``data`` against ``trust`` (see the module's docstring).

    Never raises on bad input: garbage, a damaged PDF or one too large gives an
    invalid :class:`Verification` whose reason says so.
    """
    if not isinstance(data, (bytes, bytearray)):
        return _refused(Reason.NOT_PDF)
    if len(data) > MAX_PDF_BYTES:
        return _refused(Reason.TOO_LARGE.format(limit=MAX_PDF_BYTES // (1024 * 1024)))
    if not is_pdf(data):
        return _refused(Reason.NOT_PDF)
    from pyhanko.pdf_utils.decode_limits import DecodeLimits
    from pyhanko.pdf_utils.reader import PdfFileReader

    try:
        reader = PdfFileReader(io.BytesIO(bytes(data)), strict=True, decode_limits=DecodeLimits.for_untrusted_input())
        embedded = list(reader.embedded_signatures)
    except Exception as err:  # pyHanko raises many kinds on hostile input (RecursionError too): all mean "cannot read"
        log.info("unreadable PDF: %s", err)
        return _refused(Reason.MALFORMED)
    if not embedded:
        return _refused(Reason.UNSIGNED)

    details: list[dict[str, Any]] = []
    for index, signature in enumerate(embedded):  # pyHanko lists them in signing order
        newest = index == len(embedded) - 1
        try:
            details.append(_check_signature(signature, trust, now, newest))
        except Exception as err:  # a damaged signature object: refuse it, do not crash
            log.info("signature %d cannot be checked: %s", index + 1, err)
            details.append({"signer": None, "signed_at": None, "reasons": [Reason.MALFORMED]})
    reasons: list[str] = []
    for index, item in enumerate(details):
        for reason in item["reasons"]:
            text = Reason.NUMBERED.format(n=index + 1, reason=reason) if len(details) > 1 else reason
            if text not in reasons:
                reasons.append(text)
    last = details[-1]
    return Verification(
        valid=not reasons,
        signer=last["signer"],
        signed_at=last["signed_at"],
        reasons=tuple(reasons),
        signatures=len(details),
        details=tuple(details),
    )


def _check_signature(signature: Any, trust: TrustStore, now: datetime, newest: bool) -> dict[str, Any]:
    """Signer, signing time and the reasons against one embedded signature."""
    from pyhanko.sign.diff_analysis import ModificationLevel
    from pyhanko.sign.validation.errors import SignatureValidationError
    from pyhanko.sign.validation import validate_pdf_signature
    from pyhanko.sign.validation.settings import KeyUsageConstraints
    from pyhanko.sign.validation.status import SignatureCoverageLevel
    from pyhanko_certvalidator import ValidationContext

    reasons: list[str] = []
    signed_at = signature.self_reported_timestamp
    if signed_at is not None:
        signed_at = (signed_at if signed_at.tzinfo else signed_at.replace(tzinfo=VN_TZ)).astimezone(VN_TZ)
    moment = signed_at or now
    if signed_at is not None and signed_at > now + CLOCK_SKEW:
        reasons.append(Reason.FUTURE.format(at=_fmt(signed_at)))
        moment = now
    cert = signature.signer_cert
    signer = signer_name(cert) if cert is not None else None

    context = ValidationContext(
        trust_roots=list(trust.certificates),
        allow_fetching=False,
        revocation_mode="soft-fail",
        moment=moment,
    )
    usage = KeyUsageConstraints(key_usage=set(SIGNING_KEY_USAGES), match_all_key_usages=False)
    try:
        status = validate_pdf_signature(signature, context, key_usage_settings=usage)
    except SignatureValidationError as err:
        log.info("signature validation failed: %s", err)
        reasons.append(Reason.BAD_SIGNATURE)
        return {"signer": signer, "signed_at": signed_at, "reasons": reasons}

    if not status.intact:
        reasons.append(Reason.NOT_INTACT)
    elif not status.valid:
        reasons.append(Reason.BAD_SIGNATURE)

    level = status.modification_level
    if status.coverage == SignatureCoverageLevel.ENTIRE_FILE:
        covered = True
    elif status.coverage == SignatureCoverageLevel.ENTIRE_REVISION and level is not None:
        allowed = (ModificationLevel.NONE, ModificationLevel.LTA_UPDATES)
        if not newest:  # later signatures (and the form filling they do) may follow an earlier one
            allowed = (*allowed, ModificationLevel.FORM_FILLING)
        covered = level in allowed and status.docmdp_ok is not False
    else:
        covered = False
    if not covered and status.intact:
        reasons.append(Reason.NOT_COVERED)

    # The certificate's own facts first: their reasons are more precise than a chain failure.
    own: list[str] = []
    if cert is not None:
        valid_from = cert["tbs_certificate"]["validity"]["not_before"].native
        valid_until = cert["tbs_certificate"]["validity"]["not_after"].native
        if moment < valid_from:
            own.append(Reason.NOT_YET_VALID.format(since=_fmt(valid_from)))
        if moment > valid_until:
            own.append(Reason.EXPIRED.format(until=_fmt(valid_until)))
        key_usage = cert.key_usage_value
        if key_usage is not None and not (set(key_usage.native) & SIGNING_KEY_USAGES):
            own.append(Reason.KEY_USAGE)
    reasons.extend(own)
    if status.valid and status.intact and (status.trust_problem_indic is not None or not status.trusted):
        indication = getattr(status.trust_problem_indic, "name", "")
        if not trust:
            reasons.append(Reason.NO_TRUST_ROOTS)
        elif status.revoked:
            reasons.append(Reason.REVOKED)
        elif indication in ("NO_CERTIFICATE_CHAIN_FOUND", ""):
            reasons.append(Reason.UNTRUSTED)
        elif not own:
            reasons.append(Reason.CHAIN_FAILED)
    return {"signer": signer, "signed_at": signed_at, "reasons": reasons}
