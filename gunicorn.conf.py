"""Gunicorn settings for the web process; the Procfile, the Dockerfile and docker-compose all start it with this file.

Process settings come from the environment (PORT, WEB_BIND, WEB_CONCURRENCY, WEB_THREADS). Gunicorn's own log lines
go through the service's JSON formatter; requests are logged by the app itself with their request id.
"""

import os

bind = os.environ.get("WEB_BIND") or f"0.0.0.0:{os.environ.get('PORT', '5000')}"
# gthread, with each request read in full by the worker's event loop before a thread runs it (slow senders).
worker_class = "web.server_worker.BufferingThreadWorker"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "8"))
timeout = 60
graceful_timeout = 30
keepalive = 5
accesslog = None
# Skips building access lines that gunicorn.access (WARNING below) would drop; see the module.
logger_class = "web.gunicorn_logger.AccessLogWhenEnabled"
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "models.logs.JsonFormatter"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
    "loggers": {
        "gunicorn.error": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
    },
    "root": {"handlers": ["stderr"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}


def post_worker_init(worker: object) -> None:
    """The app is built: freeze its objects so full garbage collections stop stalling requests (models/heap.py)."""
    from models.heap import freeze_startup_heap  # noqa: PLC0415 - gunicorn loads this file before the app's path

    freeze_startup_heap()


def when_ready(server: object) -> None:
    """Once per start of the web tier: ask for the catch-up of the changes whose deliveries failed while it was down
    (see tasks/incremental.py). The master does it, so two web workers do not ask twice."""
    from models.clock import now_ms  # noqa: PLC0415 - the master imports the app only when ready
    from tasks.incremental import request_catch_up  # noqa: PLC0415 - likewise

    request_catch_up(now_ms())
