"""Domain errors of the Asgardeo API clients, mapped once per tier (task retry policy, HTTP status).

- :class:`TransientError`: worth retrying later (timeouts, connection errors, 429 and 5xx after the client's own
  backoff gave up, the rate budget not granting a slot in time).
- :class:`DirectoryUnavailable`: retrying soon will not help (credentials refused, scopes missing, a malformed
  answer); an operator must look.
- :class:`UserGone`: a single-user GET answered 404, the user no longer exists in Asgardeo.
- :class:`FilterRefused`: the directory does not support a listing filter (an incremental sync falls back to a full
  run).
"""

from __future__ import annotations


class DirectoryError(Exception):
    """Base of every failure talking to Asgardeo's APIs."""


class TransientError(DirectoryError):
    """A temporary failure; the same call is expected to succeed later."""


class DirectoryUnavailable(DirectoryError):
    """The directory cannot be used as configured (auth refused, bad answer); retrying soon will not help."""


class UserGone(DirectoryError):
    """The user does not exist in Asgardeo (SCIM 404)."""

    def __init__(self, asgardeo_id: str) -> None:
        super().__init__(f"user {asgardeo_id} not found in the directory")
        self.asgardeo_id = asgardeo_id


class FilterRefused(DirectoryError):
    """The directory answered a filtered listing with 400 or 501: it does not support that filter."""
