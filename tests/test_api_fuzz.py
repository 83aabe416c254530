"""Fuzzing the API from its own OpenAPI document (schemathesis): whatever is sent,
no 500, and no response that breaks the schema the API publishes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from api.app import create_app
from engine import auth, organisation, services
from engine.core.calendar import VN_TZ
from engine.persistence.db import make_engine, migrate

from .conftest import FIXTURES, _postgres_engine, fixture_bytes
from .test_lifecycle import XA

PASSWORD = "mat-khau-an-toan"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fuzz_app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, str]]:
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("fuzz") / "fuzz.sqlite3"
        engine = make_engine(f"sqlite:///{path}")
        migrate(engine)
        yield from _fuzz_app(engine)
    else:
        for engine in _postgres_engine():
            yield from _fuzz_app(engine)


def _fuzz_app(engine: Engine) -> Iterator[tuple[object, str]]:
    url = engine.url.render_as_string(hide_password=False)
    now = datetime(2026, 3, 2, 8, 0, tzinfo=VN_TZ)
    with Session(engine, expire_on_commit=False) as session:
        organisation.load_organisation(
            session, organisation.parse_organisation((FIXTURES / "org_two_tier.yaml").read_text(), "org.yaml"), "admin", now
        )
        auth.set_password(session, "lan.desk", PASSWORD)
        services.deploy(session, fixture_bytes("land_joint.bpmn"), actor="designer", now=now)
        services.start_dossier(session, "1.999010", {}, actor="lan.desk", now=now, agency_code=XA,
                               applicant={"name": "Nguyễn Văn An", "phone": "0987654321"})
    app = create_app(database_url=url)
    yield app, url
    app.extensions["motcua.engine"].dispose()  # type: ignore[attr-defined]


def test_no_server_error_and_responses_match_the_schema(fuzz_app: tuple[object, str]) -> None:
    app, _ = fuzz_app
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25
    client = app.test_client()  # type: ignore[attr-defined]
    for operation in operations:
        _fuzz(operation, client)


def _fuzz(operation: Any, client: Any) -> None:
    """Throw generated requests at one operation, with a fresh token (fuzzing
    POST /auth/logout revokes the one it is given)."""
    token = client.post("/api/v1/auth/login", json={"username": "lan.desk", "password": PASSWORD}).get_json()["token"]

    @given(case=operation.as_strategy())
    @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def exercise(case: schemathesis.Case) -> None:
        response = case.call(headers={"Authorization": f"Bearer {token}"})
        try:
            case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
        except BaseExceptionGroup as failures:  # schemathesis groups its failures; hypothesis needs an Exception
            raise AssertionError(f"{case.method} {case.path}: {failures.exceptions}") from None

    exercise()
