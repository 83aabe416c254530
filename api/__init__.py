"""JSON API under ``/api/v1`` (a thin layer over :mod:`engine.services`)."""

from flask import Blueprint, jsonify

bp = Blueprint("api", __name__)


@bp.get("/health")
def health_get():  # type: ignore[no-untyped-def]
    """Liveness of the API itself."""
    return jsonify(status="ok")
