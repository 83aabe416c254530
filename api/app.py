"""The application factory: one Flask app serving the JSON API and the pages."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, g, jsonify, request
from sqlalchemy import text
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException

from engine import config as config_module
from engine.errors import DeploymentRejected, EngineError
from engine.persistence.db import make_engine, make_session_factory

__all__ = ["create_app", "db_session"]

log = logging.getLogger(__name__)

#: HTTP status for each kind of engine error (the one place this mapping lives).
ERROR_STATUS = {"not_found": 404, "conflict": 409, "forbidden": 403, "invalid": 400, "rejected": 422, "error": 400}


def create_app(settings: config_module.Settings | None = None, **overrides: Any) -> Flask:
    """Build the app from ``settings`` (default: ``MOTCUA_*`` environment variables)."""
    settings = settings or config_module.load(**overrides)
    app = Flask(__name__, instance_path=settings.instance_path)
    app.config.update(SECRET_KEY=settings.secret_key, MOTCUA=settings, JSON_AS_ASCII=False)
    engine = make_engine(settings.database_url, echo=settings.echo_sql)
    app.extensions["motcua.engine"] = engine
    app.extensions["motcua.sessions"] = make_session_factory(engine)

    from admin import bp as admin_bp

    from . import bp as api_bp

    app.register_blueprint(api_bp, url_prefix="/api/v1")
    app.register_blueprint(admin_bp)

    @app.get("/healthz")
    def health() -> Any:
        """Liveness and database check for load balancers and monitors."""
        try:
            db_session().execute(text("SELECT 1"))
            database = "ok"
        except Exception:  # any database failure means unhealthy, with no details leaked
            log.exception("health check: database unreachable")
            return jsonify(status="error", database="unreachable"), 503
        return jsonify(status="ok", database=database, backend=engine.dialect.name)

    @app.teardown_appcontext
    def close_session(_exc: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()

    @app.errorhandler(EngineError)
    def engine_error(err: EngineError) -> Any:
        body: dict[str, Any] = {"error": err.status, "message": err.message}
        if isinstance(err, DeploymentRejected):
            body["problems"] = [p.as_dict() for p in err.problems]
        if err.details:
            body["details"] = err.details
        return jsonify(body), ERROR_STATUS.get(err.status, 400)

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> Any:
        body = jsonify(error=err.name.lower().replace(" ", "_"), message=err.description)
        return body, err.code

    @app.errorhandler(Exception)
    def unexpected(err: Exception) -> Any:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return jsonify(error="internal", message="Lỗi hệ thống; vui lòng thử lại sau. (Internal error; please try again later.)"), 500

    return app


def db_session() -> Session:
    """The request's database session (opened on first use, closed at teardown)."""
    from flask import current_app

    if "db_session" not in g:
        g.db_session = current_app.extensions["motcua.sessions"]()
    return g.db_session
