"""Configuration from environment variables, all prefixed ``MOTCUA_``.

Each key is declared once here with its default; :func:`load` reads them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

__all__ = ["Settings", "load", "PREFIX"]

PREFIX = "MOTCUA_"


def _default_instance() -> str:
    return str(Path.cwd() / "instance")


@dataclass(frozen=True)
class Settings:
    """Every setting of the product, with its default."""

    #: Folder for the embedded database and other local files.
    instance_path: str = ""
    #: SQLAlchemy URL; default: an SQLite file in the instance folder.
    database_url: str = ""
    #: Code of the agency whose desk receives dossiers when none is named.
    default_agency_code: str = "000.00.00.H00"
    #: Secret key for signed cookies and tokens.
    secret_key: str = "dev-only-change-me"
    #: Behind a reverse proxy: take the client address from X-Forwarded-For (one hop).
    trust_proxy: bool = False
    #: Address of the public site, printed in QR codes on the forms.
    public_url: str = "http://127.0.0.1:5000"
    #: Outbox delivery. Email over SMTP (empty host: messages are only logged).
    smtp_host: str = ""
    smtp_port: str = ""
    smtp_sender: str = ""
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = False
    smtp_ssl: bool = False
    #: SMS and Zalo through HTTP gateways (empty URL: messages are only logged).
    sms_gateway_url: str = ""
    zalo_gateway_url: str = ""
    gateway_token: str = ""
    #: Seconds between two passes of the outbox sender.
    outbox_interval: str = "15"
    #: Log SQL statements.
    echo_sql: bool = False
    #: National public service portal (Cổng DVC quốc gia): the token it sends when filing
    #: dossiers (empty: intake refused), where status changes are pushed (empty: not pushed),
    #: the token sent there, whether every dossier (not only portal ones) is pushed, and
    #: seconds between two passes of the portal feeder.
    portal_token: str = ""
    portal_push_url: str = ""
    portal_push_token: str = ""
    portal_push_all: bool = False
    portal_interval: str = "15"
    #: PEM bundle of the certificates trusted for signed result documents (roots, and
    #: intermediates the province trusts on their own); empty: no signature is trusted.
    trusted_ca_file: str = ""
    #: Shared secret of the payment gateway: its callbacks carry the HMAC-SHA256 of the
    #: raw body under this secret (empty: payment callbacks are refused).
    payment_secret: str = ""

    def resolved(self) -> "Settings":
        instance = self.instance_path or _default_instance()
        url = self.database_url or f"sqlite:///{Path(instance) / 'motcua.sqlite3'}"
        return Settings(**{**self.__dict__, "instance_path": instance, "database_url": url})


def load(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from ``environ`` (default: ``os.environ``) and keyword ``overrides``."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        raw = env.get(PREFIX + f.name.upper())
        if raw is None:
            continue
        values[f.name] = raw.strip().lower() in ("1", "true", "yes", "on") if f.type in (bool, "bool") else raw
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values).resolved()
