"""The application factory: one Flask app serving the JSON API and the pages."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, g, jsonify, request
from flask_smorest import Api
from sqlalchemy import text
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException, InternalServerError

from engine import config as config_module
from engine.errors import EngineError
from engine.persistence.db import make_engine, make_session_factory

__all__ = ["create_app", "db_session"]

log = logging.getLogger(__name__)

#: Largest request body accepted (a deployment of several BPMN files fits).
MAX_REQUEST_BYTES = 8 * 1024 * 1024


_LOCATIONS = ("json", "form", "files", "query", "headers", "view_args")


def _flatten(messages: Any, prefix: str = "") -> list[dict[str, str]]:
    """webargs' nested ``{location: {field: [message]}}`` as a flat list of field errors."""
    out: list[dict[str, str]] = []
    if isinstance(messages, dict):
        for key, value in messages.items():
            if not prefix and key in _LOCATIONS:
                out.extend(_flatten(value))
            else:
                out.extend(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(messages, list):
        for item in messages:
            if isinstance(item, (dict, list)):
                out.extend(_flatten(item, prefix))
            else:
                out.append({"field": prefix or "body", "message": str(item)})
    else:
        out.append({"field": prefix or "body", "message": str(messages)})
    return out


def create_app(settings: config_module.Settings | None = None, **overrides: Any) -> Flask:
    """Build the app from ``settings`` (default: ``MOTCUA_*`` environment variables)."""
    settings = settings or config_module.load(**overrides)
    app = Flask(__name__, instance_path=settings.instance_path)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MOTCUA=settings,
        MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES,
        API_TITLE="Một Cửa API",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={
            "info": {"description": "Thủ tục hành chính theo cơ chế một cửa, một cửa liên thông."},
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        },
    )
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    if settings.trust_proxy:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1)  # type: ignore[method-assign]
    engine = make_engine(settings.database_url, echo=settings.echo_sql)
    app.extensions["motcua.engine"] = engine
    app.extensions["motcua.sessions"] = make_session_factory(engine)

    api = Api(app)
    from . import auth_routes, dossiers, fees, procedures, public, reports, results, tasks
    from . import organisation as organisation_routes
    from . import portal as portal_routes

    for module in (auth_routes, procedures, dossiers, tasks, organisation_routes, public, reports, portal_routes, results, fees):
        api.register_blueprint(module.bp, url_prefix=f"/api/v1{module.PREFIX}")

    import admin

    admin.register(app)

    @app.get("/healthz")
    def health() -> Any:
        """Liveness and database check for load balancers and monitors."""
        try:
            db_session().execute(text("SELECT 1"))
        except Exception:  # any database failure means unhealthy, with no details leaked
            log.exception("health check: database unreachable")
            return jsonify(status="error", database="unreachable"), 503
        return jsonify(status="ok", database="ok", backend=engine.dialect.name)

    @app.teardown_appcontext
    def close_session(_exc: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()

    @app.errorhandler(EngineError)
    def engine_error(err: EngineError) -> Any:
        from .problems import from_engine_error

        if admin.wants_page():
            return admin.web.page_error(err)
        return from_engine_error(err)

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> Any:
        from .problems import problem

        if admin.wants_page():
            return admin.web.page_error(err)
        data = getattr(err, "data", None) or {}
        errors = _flatten(data["messages"]) if data.get("messages") else None
        detail = err.description or err.name
        if errors:
            detail = "Some fields are not valid: " + "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem(err.code or 500, detail, errors=errors)

    @app.errorhandler(Exception)
    def unexpected(err: Exception) -> Any:
        from .problems import problem

        log.exception("unhandled error on %s %s", request.method, request.path)
        if admin.wants_page():
            return admin.web.page_error(InternalServerError())
        return problem(500, "Lỗi hệ thống; vui lòng thử lại sau. (Internal error; please try again later.)")

    @app.before_request
    def refuse_nul_characters() -> Any:
        """No text the engine stores may hold a NUL character (PostgreSQL refuses them)."""
        from .problems import problem

        multipart = request.mimetype == "multipart/form-data"  # uploaded files are binary (PDF, BPMN): only text fields are checked
        body = request.get_data(cache=True) if not multipart and (request.content_length or 0) <= MAX_REQUEST_BYTES else b""
        fields = "".join(request.form.values()) if multipart else ""
        if "\x00" in request.path or b"%00" in request.query_string or b"\\u0000" in body or b"\x00" in body or "\x00" in fields:
            if request.path.startswith("/api/"):
                return problem(400, "Yêu cầu không được chứa ký tự NUL (\\u0000). (NUL characters are not allowed in requests.)")
        return None

    @app.after_request
    def security_headers(response: Any) -> Any:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        return response

    return app


def db_session() -> Session:
    """The request's database session (opened on first use, closed at teardown)."""
    from flask import current_app

    if "db_session" not in g:
        g.db_session = current_app.extensions["motcua.sessions"]()
    return g.db_session
