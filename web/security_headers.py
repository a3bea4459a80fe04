"""Browser-facing security headers on every response.

- ``Content-Security-Policy``: scripts, styles and connections only from this origin, and no inline script, so an
  injected ``<script>`` or ``onclick`` never runs (page scripts live in ``web/static/*.js``); ``frame-ancestors
  'none'`` and ``X-Frame-Options: DENY`` (for older browsers) stop another page, same-site or not, from framing the
  admin's pages and clickjacking their buttons.
- ``X-Content-Type-Options: nosniff`` and a ``Referrer-Policy`` that sends other sites only our origin.
- ``Strict-Transport-Security`` in production when ``PUBLIC_BASE_URL`` is https, so a browser that has been here
  once never again sends the session cookie over plain HTTP.

``form-action`` is deliberately left out: Chromium applies it to the redirect after a form post too, and the
sign-out form is redirected to the provider's end-session endpoint, whose origin only discovery knows.
"""

from __future__ import annotations

from flask import Flask, Response

from models.settings import Settings

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
HSTS = "max-age=31536000"


def init_app(app: Flask, settings: Settings) -> None:
    """Add the headers after every request (error pages included); a view's own value is left alone."""
    headers = {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "strict-origin-when-cross-origin",
    }
    if settings.is_production and settings.public_base_url.lower().startswith("https://"):
        headers["Strict-Transport-Security"] = HSTS

    @app.after_request
    def _secure(response: Response) -> Response:
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        return response
