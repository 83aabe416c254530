"""Server-rendered pages (Vietnamese) over the engine's use cases.

One blueprint, ``admin``, split by audience:

* :mod:`admin.auth` — sign in and out, the home page;
* :mod:`admin.designer` — procedure catalog, diagrams, upload and completing metadata;
* :mod:`admin.desk` — receiving dossiers, dossier pages, forms, returning results;
* :mod:`admin.officer` — the inbox, claiming, completing and returning steps;
* :mod:`admin.citizen` — public lookup by code and secret, rating, feedback;
* :mod:`admin.supervisor` — on-time figures, bottlenecks, periodic reports, what-if.

:func:`register` adds the blueprint to an app with CSRF protection on every
page form (the JSON API under ``/api/`` is exempt: it uses bearer tokens).

Pages (GET unless marked; ``?trang=N`` pages every list):

=====================================  =================================================
``/``                                  home: figures, public procedure catalog
``/dang-nhap`` (GET, POST)             sign in; ``/dang-xuat`` (POST) sign out
``/lam-viec``                          the signed-in officer's first page, by role
``/thu-tuc?q=``                        catalog with versions (public)
``/thu-tuc/<code>?phien-ban=N``        diagram, metadata, lanes, steps (public)
``/thu-tuc/tai-len`` (GET, POST)       designers: upload BPMN files
``/thu-tuc/tai-len/xem`` (POST)        the problem page with one element highlighted
``/thu-tuc/tai-len/bo-sung`` (POST)    fill open metadata into the files and deploy
``/tiep-nhan?q=`` / ``?thu-tuc=CODE``  receptionists: pick a procedure, receive or refuse (POST)
``/ho-so?q=&trang-thai=``              dossiers the officer may see
``/ho-so/<code>``                      dossier: diagram with progress, steps, forms, history
``/ho-so/<code>/mau/01..05``           printable form (``?dinh-dang=pdf`` for PDF)
``/ho-so/<code>/tra-ket-qua``, ``/rut-ho-so``, ``/yeu-cau-bo-sung``, ``/yeu-cau-nghia-vu-tai-chinh``,
``/da-bo-sung``, ``/dung-xu-ly``, ``/xin-loi`` (POST)
                                       return the result, withdrawal, supplement, payment, resume, stop, apology
``/cong-viec?trang=&trang-cho=``       inbox: my steps and my roles' queue
``/cong-viec/<id>``                    a step with its form
``/cong-viec/<id>/nhan``, ``/hoan-thanh``, ``/tra-lai``, ``/tra-ve-hang-cho``, ``/giao-lai`` (POST)
                                       claim, complete, return to the previous step, release, reassign
``/tra-cuu?ma=CODE`` (GET, POST)       public lookup (the URL of form 01's QR code)
``/tra-cuu/danh-gia`` (POST)           rate a returned dossier once
``/phan-anh`` (GET, POST)              feedback
=====================================  =================================================
"""

from __future__ import annotations

from datetime import timedelta
from flask import Blueprint, Flask

bp = Blueprint("admin", __name__, template_folder="templates", static_folder="static", static_url_path="/tai-nguyen")

from . import auth, citizen, designer, desk, officer, supervisor, web  # noqa: E402,F401  (routes register on import)

__all__ = ["bp", "register", "wants_page"]

wants_page = web.wants_page


def register(app: Flask) -> None:
    """Register the pages on ``app``: session cookie, CSRF (API exempt), error pages."""
    from flask_wtf.csrf import CSRFProtect

    public_url = getattr(app.config.get("MOTCUA"), "public_url", "") or ""
    app.config.update(
        SESSION_COOKIE_NAME="motcua_phien",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=public_url.startswith("https://"),
        PERMANENT_SESSION_LIFETIME=timedelta(hours=8),  # as long as the token behind it
        WTF_CSRF_TIME_LIMIT=8 * 3600,
    )
    app.register_blueprint(bp)
    csrf = CSRFProtect(app)
    for name, blueprint in app.blueprints.items():
        if name != bp.name:  # the JSON API (bearer tokens, no cookies) and its documentation
            csrf.exempt(blueprint)
    web.install_globals(app)
