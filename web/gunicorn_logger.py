"""gunicorn's logger, building a request's access line only when the access logger would write it.

With a logging config (gunicorn.conf.py routes gunicorn's own lines through the service's JSON formatter), gunicorn
builds every request's access-log atoms, headers and environment included, and then the ``gunicorn.access`` logger,
set to WARNING, drops the line: about 3% of a web process's CPU under webhook load. The app logs its requests
itself, with their request ids; an operator who sets ``gunicorn.access`` to INFO gets gunicorn's lines back.
"""

from __future__ import annotations

import logging

from gunicorn.glogging import Logger


class AccessLogWhenEnabled(Logger):  # type: ignore[misc]  # gunicorn ships no types
    @property
    def access_log_enabled(self) -> bool:
        return bool(super().access_log_enabled) and self.access_log.isEnabledFor(logging.INFO)
