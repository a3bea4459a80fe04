"""Celery app, tasks and the clients that talk to Asgardeo's APIs (token cache, SCIM, rate budget).

``celery -A tasks`` finds :data:`app` here.
"""

from tasks.app import app

__all__ = ["app"]
