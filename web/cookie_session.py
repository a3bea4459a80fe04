"""Flask's signed-cookie session, with its signer built only for a request that carries the cookie.

Flask opens the session for every request, and its cookie interface builds an itsdangerous serializer (key
derivation included) before it even looks for the cookie. Only the login flow keeps anything there (Authlib's state
and nonce); a webhook delivery, a metrics scrape or an API call with a bearer token carries no such cookie, and
under webhook load that serializer was about 3% of a web process's CPU.
"""

from __future__ import annotations

from flask import Flask, Request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface


class LazySignerSessionInterface(SecureCookieSessionInterface):
    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if app.secret_key and not request.cookies.get(self.get_cookie_name(app)):
            return self.session_class()
        return super().open_session(app, request)


def init_app(app: Flask) -> None:
    app.session_interface = LazySignerSessionInterface()
