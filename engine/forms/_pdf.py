"""HTML → PDF with WeasyPrint, with every non-``data:`` URL refused.

Imported lazily by :func:`engine.forms.render_pdf`: WeasyPrint needs Pango at
import time, and the HTML side of the forms must work without it.
"""

from __future__ import annotations

from typing import Any

import weasyprint

__all__ = ["html_to_pdf", "url_fetcher"]


class RefusedURL(ValueError):
    """WeasyPrint asked for a resource that is not a ``data:`` URL."""


def _refuse(url: str) -> None:
    if not url.lower().startswith("data:"):
        raise RefusedURL(f"forms fetch nothing from outside: {url[:80]!r}")


def _make_fetcher() -> Any:
    try:  # WeasyPrint >= 68: fetchers are URLFetcher objects
        from weasyprint.urls import URLFetcher
    except ImportError:  # older WeasyPrint: a plain function
        from weasyprint import default_url_fetcher

        def fetch_data_only(url: str, *args: Any, **kwargs: Any) -> Any:
            _refuse(url)
            return default_url_fetcher(url, *args, **kwargs)

        return fetch_data_only

    class DataOnlyFetcher(URLFetcher):
        def fetch(self, url: str, headers: Any = None) -> Any:
            _refuse(url)
            return super().fetch(url, headers)

    return DataOnlyFetcher(allowed_protocols=("data",))


#: The fetcher given to WeasyPrint: opens ``data:`` URLs only.
url_fetcher = _make_fetcher()


def html_to_pdf(html: str) -> bytes:
    """Print ``html`` (self-contained, A4 through its own ``@page`` CSS) to PDF bytes."""
    document = weasyprint.HTML(string=html, base_url=None, url_fetcher=url_fetcher)
    return document.write_pdf()
