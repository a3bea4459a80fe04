"""Asgardeo's SCIM2 Users API: client-credentials token, paged listing, single-user GET, resource parsing.

Every request (token and SCIM alike) first takes a slot from the shared :mod:`tasks.ratelimit` budget, has a
timeout, and is retried with exponential backoff and full jitter on 429, 5xx and network errors, up to
``SCIM_MAX_ATTEMPTS``. What is still failing after that raises :class:`~tasks.errors.TransientError`; refused
credentials or a malformed answer raise :class:`~tasks.errors.DirectoryUnavailable`; a 404 on a single user raises
:class:`~tasks.errors.UserGone`.

The M2M access token is cached in Redis (shared by every process) until shortly before it expires, and dropped
when a SCIM call answers 401. It is a secret: it never reaches a log line.

Parsing is hand-written over plain dicts rather than scim2-models: validating 100,000 pydantic models per nightly
scan costs tens of seconds, and the product needs only a few attributes. The values read are then given the rules
webhook claims get too (:mod:`models.attributes`: store prefixes, lengths). Here:

- ``userName`` and group names (``display``, else ``value``) go through those shared rules.
- ``emails`` may hold plain strings or ``{value, primary}`` objects; the primary one wins, else the first.
- ``accountDisabled``/``accountLocked`` of ``urn:scim:wso2:schema`` may be booleans or ``"true"``/``"false"``;
  either one true, or ``active: false``, makes the user ``inactive``.
- ``meta.lastModified`` (ISO 8601) becomes ``source_version`` in epoch milliseconds; without it ``meta.created``,
  and without both the time the resource was fetched.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import orjson
import redis
import requests

from models import attributes
from models.clock import now_ms
from models.settings import Settings, get_settings
from models.users import UserRecord
from tasks import metrics
from tasks.errors import DirectoryUnavailable, FilterRefused, TransientError, UserGone
from tasks.ratelimit import RateBudget, budget_for
from tasks.redis_client import get_redis, key

log = logging.getLogger(__name__)

WSO2_SCHEMA = "urn:scim:wso2:schema"
LIST_SCOPE = "internal_user_mgt_list"
VIEW_SCOPE = "internal_user_mgt_view"
# The SCIM2 Roles API (a truncated role event's member list).
ROLE_VIEW_SCOPE = "internal_role_mgt_view"
# Refresh the cached token this long before Asgardeo says it expires, so no call carries a dying token.
TOKEN_EXPIRY_MARGIN_SECONDS = 60
# A token read from Redis is reused in-process this long without asking Redis again (one round trip per page saved).
# Safe because Redis drops the key TOKEN_EXPIRY_MARGIN_SECONDS before the token itself expires.
TOKEN_MEMO_SECONDS = 30.0
MAX_ID_LENGTH = 64
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$")
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class InvalidResource(ValueError):
    """One SCIM resource could not be read as a user (no id, wrong types)."""


def valid_id(value: object) -> bool:
    """A plausible Asgardeo user id (a UUID in practice): short, no path or query characters."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return False


def _epoch_ms(value: Any) -> int | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def _primary_email(emails: Any) -> str | None:
    if isinstance(emails, str):
        return attributes.email(emails)
    if not isinstance(emails, list):
        return None
    first: str | None = None
    for item in emails:
        if isinstance(item, str):
            value, primary = attributes.email(item), False
        elif isinstance(item, Mapping):
            value, primary = attributes.email(item.get("value")), _flag(item.get("primary"))
        else:
            continue
        if value and primary:
            return value
        first = first or value
    return first


def _group_names(groups: Any) -> list[Any]:
    if not isinstance(groups, list):
        return []
    # A group's name is its ``display``; ``value`` (its id) stands in only where no display is given.
    return [
        (item.get("value") if item.get("display") is None else item.get("display"))
        if isinstance(item, Mapping)
        else item
        for item in groups
    ]


def parse_user(resource: Any, *, fetched_ms: int | None = None) -> UserRecord:
    """One Asgardeo SCIM user resource as a :class:`UserRecord`; raises :class:`InvalidResource` if it has no id."""
    if not isinstance(resource, Mapping):
        raise InvalidResource("resource is not an object")
    asgardeo_id = resource.get("id")
    if not isinstance(asgardeo_id, str) or not valid_id(asgardeo_id):
        raise InvalidResource("resource has no usable id")
    name = _mapping(resource.get("name"))
    extension = _mapping(resource.get(WSO2_SCHEMA))
    meta = _mapping(resource.get("meta"))
    inactive = (
        _flag(extension.get("accountDisabled"))
        or _flag(extension.get("accountLocked"))
        or resource.get("active") is False
        or (isinstance(resource.get("active"), str) and resource["active"].strip().lower() == "false")
    )
    version = _epoch_ms(meta.get("lastModified")) or _epoch_ms(meta.get("created"))
    if version is None:
        version = fetched_ms if fetched_ms is not None else now_ms()
    return UserRecord(
        asgardeo_id=asgardeo_id,
        username=attributes.username_from_directory(resource.get("userName")),
        email=_primary_email(resource.get("emails")),
        first_name=attributes.person_name(name.get("givenName")),
        last_name=attributes.person_name(name.get("familyName")),
        groups=attributes.group_names(_group_names(resource.get("groups"))),
        status="inactive" if inactive else "active",
        source_version=version,
    )


@dataclass
class Page:
    """One listing page: the users read, how many resources could not be read, and the directory's counts."""

    start_index: int
    total_results: int
    items: int
    users: list[UserRecord] = field(default_factory=list)
    invalid: int = 0


@dataclass
class Listing:
    """One listing page as fetched: the envelope checked, its resources not yet read (see :meth:`parse`).

    The listing loop needs only the envelope to ask for the next page; reading the resources is left to whoever
    writes the page, so the next request is not held up by it.
    """

    start_index: int
    total_results: int
    resources: list[Any]
    fetched_ms: int

    @property
    def items(self) -> int:
        return len(self.resources)

    def parse(self) -> Page:
        page = Page(start_index=self.start_index, total_results=self.total_results, items=self.items)
        for resource in self.resources:
            try:
                page.users.append(parse_user(resource, fetched_ms=self.fetched_ms))
            except InvalidResource:
                page.invalid += 1
        if page.invalid:
            log.warning("SCIM resources without a usable id skipped", extra={"count": page.invalid})
        return page


def read_listing(body: Any, start_index: int) -> Listing:
    """The envelope of a SCIM ListResponse; raises :class:`DirectoryUnavailable` when it is not one."""
    if not isinstance(body, Mapping):
        raise DirectoryUnavailable("SCIM listing answered something that is not a ListResponse")
    total = body.get("totalResults")
    resources = body.get("Resources", [])
    if not isinstance(total, int) or isinstance(total, bool) or total < 0 or not isinstance(resources, list):
        raise DirectoryUnavailable("SCIM listing answered a ListResponse without totalResults/Resources")
    return Listing(start_index, total, resources, now_ms())


def parse_page(body: Any, start_index: int) -> Page:
    """A SCIM ListResponse, its users read; raises :class:`DirectoryUnavailable` when it is not one."""
    return read_listing(body, start_index).parse()


class ScimClient:
    """A client for one Asgardeo organisation. Defaults come from the settings; tests pass their own.

    Safe to share between threads: each thread sends through its own ``requests.Session`` (unless one was passed
    in, which is then shared), so :meth:`iter_listing` can keep several pages in flight.
    """

    def __init__(
        self,
        base_url: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        *,
        settings: Settings | None = None,
        budget: RateBudget | None = None,
        http: requests.Session | None = None,
        cache: redis.Redis | None = None,
        timeout: float | None = None,
        max_attempts: int | None = None,
        page_size: int | None = None,
        list_concurrency: int | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 20.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        settings = settings or get_settings()
        resolved = base_url or settings.asgardeo_base_url
        secret = client_secret or (
            settings.scim_client_secret.get_secret_value() if settings.scim_client_secret else None
        )
        cid = client_id or settings.scim_client_id
        if not resolved or not cid or not secret:
            raise DirectoryUnavailable("ASGARDEO_BASE_URL, SCIM_CLIENT_ID and SCIM_CLIENT_SECRET must be set")
        self.base_url = resolved.rstrip("/")
        self._client_id = cid
        self._client_secret = secret
        self.timeout = timeout if timeout is not None else settings.scim_http_timeout_seconds
        self.max_attempts = max_attempts if max_attempts is not None else settings.scim_max_attempts
        self.page_size = page_size or settings.scim_page_size
        self.list_concurrency = max(1, list_concurrency or settings.scim_list_concurrency)
        self.budget = budget or budget_for(self.base_url, settings)
        self._shared_http = http
        self._local = threading.local()
        self._cache = cache or get_redis()
        # The secret is part of the key: after it changes, a token fetched with the old one is not used (and a
        # refused new secret shows at once instead of when the cached token expires).
        digest = hashlib.sha256(f"{self.base_url}|{cid}|{secret}".encode()).hexdigest()[:16]
        self._token_key = key(f"scim:token:{digest}")
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._sleep = sleep
        self._count_lock = threading.Lock()
        self.requests_sent = 0
        self.retries = 0
        # Waits for the shared rate budget not yet reported (see take_budget_waits).
        self._budget_waits = 0
        self._budget_wait_ms = 0
        self._memo: tuple[str, float] | None = None

    # --- token ---------------------------------------------------------------------------------------------
    def token(self) -> str:
        """The cached M2M access token, fetched by client credentials when absent or about to expire."""
        if self._memo is not None and self._memo[1] > time.monotonic():
            return self._memo[0]
        token = self._shared_token()
        self._memo = (token, time.monotonic() + TOKEN_MEMO_SECONDS)
        return token

    def _shared_token(self) -> str:
        try:
            cached = self._cache.get(self._token_key)
        except redis.RedisError:
            cached = None
        if cached:
            return cached.decode() if isinstance(cached, bytes) else str(cached)
        response = self._send(
            "POST",
            f"{self.base_url}/oauth2/token",
            data={"grant_type": "client_credentials", "scope": f"{LIST_SCOPE} {VIEW_SCOPE} {ROLE_VIEW_SCOPE}"},
            auth=(self._client_id, self._client_secret),
        )
        if response.status_code in (400, 401, 403):
            raise DirectoryUnavailable(f"Asgardeo refused the SCIM client credentials (HTTP {response.status_code})")
        if response.status_code != 200:
            raise TransientError(f"token endpoint answered HTTP {response.status_code}")
        try:
            body = response.json()
            access_token = str(body["access_token"])
            expires_in = int(body.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError) as exc:
            raise DirectoryUnavailable("token endpoint answered without an access_token") from exc
        ttl = max(expires_in - TOKEN_EXPIRY_MARGIN_SECONDS, min(expires_in // 2, 30))
        if ttl > 0:
            try:
                self._cache.set(self._token_key, access_token, ex=ttl)
            except redis.RedisError:
                log.warning("SCIM token not cached: Redis unavailable")
        return access_token

    def forget_token(self) -> None:
        self._memo = None
        with contextlib.suppress(redis.RedisError):
            self._cache.delete(self._token_key)

    def take_budget_waits(self) -> tuple[int, int]:
        """``(waits, milliseconds waited)`` for the rate budget since the last call (a run's page adds them to its
        counters, so the console shows how much of a run was spent waiting for Asgardeo's limit)."""
        with self._count_lock:
            taken = (self._budget_waits, self._budget_wait_ms)
            self._budget_waits = self._budget_wait_ms = 0
        return taken

    # --- HTTP ----------------------------------------------------------------------------------------------
    def _http(self) -> requests.Session:
        if self._shared_http is not None:
            return self._shared_http
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _count(self, *, retry: bool = False) -> None:
        with self._count_lock:
            if retry:
                self.retries += 1
            else:
                self.requests_sent += 1

    def _backoff(self, attempt: int, response: requests.Response | None) -> float:
        retry_after = response.headers.get("Retry-After") if response is not None else None
        if retry_after and retry_after.isdigit():
            return min(float(retry_after), self._backoff_cap)
        # Full jitter (AWS architecture blog): spreads retries of many callers over the whole interval.
        return random.uniform(0, min(self._backoff_cap, self._backoff_base * 2**attempt))  # noqa: S311

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One logical call: budget slot, timeout, retries on 429/5xx/network errors with backoff."""
        last_error = "no attempt made"
        for attempt in range(self.max_attempts):
            waited = self.budget.acquire()
            if waited > 0:
                metrics.inc("rate_budget_waits")
                metrics.inc("rate_budget_wait_seconds", waited)
                with self._count_lock:
                    self._budget_waits += 1
                    self._budget_wait_ms += round(waited * 1000)
            response: requests.Response | None = None
            try:
                self._count()
                response = self._http().request(method, url, timeout=self.timeout, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                last_error = type(exc).__name__
                metrics.inc("scim_requests", status=last_error)
            else:
                metrics.inc("scim_requests", status=str(response.status_code))
                if response.status_code == 429:
                    metrics.inc("scim_throttled")
                if response.status_code not in _RETRY_STATUSES:
                    return response
                last_error = f"HTTP {response.status_code}"
            if attempt + 1 < self.max_attempts:
                self._count(retry=True)
                delay = self._backoff(attempt, response)
                log.info("SCIM call retried", extra={"attempt": attempt + 1, "error": last_error, "delay": delay})
                self._sleep(delay)
        raise TransientError(f"{method} {url.removeprefix(self.base_url)} failed: {last_error}")

    def _scim(self, path: str, params: Mapping[str, Any] | None = None) -> requests.Response:
        url = f"{self.base_url}/scim2{path}"
        for refreshed in (False, True):
            headers = {"Authorization": f"Bearer {self.token()}", "Accept": "application/scim+json"}
            response = self._send("GET", url, params=params, headers=headers)
            if response.status_code == 401 and not refreshed:
                self.forget_token()
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _json(response: requests.Response) -> Any:
        try:
            return orjson.loads(response.content)
        except ValueError as exc:
            raise DirectoryUnavailable(f"SCIM answered HTTP {response.status_code} without JSON") from exc

    # --- SCIM ----------------------------------------------------------------------------------------------
    def list_page(self, start_index: int, count: int | None = None) -> Page:
        """One page of ``/scim2/Users`` (1-based ``start_index``)."""
        return self.fetch_listing(start_index, count).parse()

    def fetch_listing(self, start_index: int, count: int | None = None, filter_text: str | None = None) -> Listing:
        """One page of ``/scim2/Users`` (of the users matching ``filter_text``, if given), envelope checked, resources
        not yet read. A filter the server answers 400 or 501 for raises :class:`FilterRefused`."""
        count = count or self.page_size
        params: dict[str, Any] = {"startIndex": start_index, "count": count}
        if filter_text is not None:
            params["filter"] = filter_text
        response = self._scim("/Users", params)
        if filter_text is not None and response.status_code in (400, 501):
            raise FilterRefused(f"SCIM refused the filter (HTTP {response.status_code})")
        if response.status_code != 200:
            raise DirectoryUnavailable(f"SCIM listing answered HTTP {response.status_code}")
        return read_listing(self._json(response), start_index)

    def iter_pages(self, count: int | None = None, max_pages: int | None = None) -> Iterator[Page]:
        """Every page of the directory, users read (see :meth:`iter_listing`)."""
        for listing in self.iter_listing(count, max_pages):
            yield listing.parse()

    def iter_listing(
        self, count: int | None = None, max_pages: int | None = None, filter_text: str | None = None
    ) -> Iterator[Listing]:
        """Every page of the directory, in index order, with up to ``list_concurrency`` requests in flight.

        The first page comes alone: it gives ``totalResults`` and the server's real page size (Asgardeo may serve
        fewer than ``count``). The following pages are then requested ahead, each still through the rate budget,
        and yielded in order, so an error surfaces after every page before it. ``totalResults`` is re-read on
        every page (users come and go during a listing): the listing stops at the latest total or at an empty
        page. A short page before the end (the server served fewer than asked) has its gap fetched before going
        on. ``filter_text`` lists only the matching users, paged the same way. More than ``max_pages`` requests
        (default ``RECONCILE_MAX_PAGES``) raise :class:`DirectoryUnavailable`, because a listing cut short is not
        complete. At most ``list_concurrency`` pages are held here.
        """
        count = count or self.page_size
        cap = max_pages or get_settings().reconcile_max_pages
        requested = 0

        def counted() -> None:
            nonlocal requested
            requested += 1
            if requested > cap:
                raise DirectoryUnavailable(f"SCIM listing still had pages after {cap}; treated as incomplete")

        def fetch(start: int, size: int) -> Listing:
            counted()
            return self.fetch_listing(start, size, filter_text)

        first = fetch(1, count)
        if first.items == 0:
            return
        yield first
        stride, total, next_start = first.items, first.total_results, 1 + first.items
        pool = ThreadPoolExecutor(max_workers=self.list_concurrency, thread_name_prefix="scim-list")
        inflight: deque[tuple[int, Future[Listing]]] = deque()
        try:
            while True:
                while len(inflight) < self.list_concurrency and next_start <= total:
                    counted()
                    inflight.append((next_start, pool.submit(self.fetch_listing, next_start, stride, filter_text)))
                    next_start += stride
                if not inflight:
                    return
                start, future = inflight.popleft()
                page = future.result()
                while page.items:
                    yield page
                    total = page.total_results
                    end = page.start_index + page.items
                    if page.items >= stride or end > total or end >= start + stride:
                        break
                    page = fetch(end, start + stride - end)  # the gap a short page left before the next one
                if page.items == 0:
                    return
        finally:
            # Pages requested ahead of an error (or of a consumer that stopped) are not waited for.
            pool.shutdown(wait=False, cancel_futures=True)

    def find_users(self, attribute: str, value: str, limit: int = 2) -> list[UserRecord]:
        """Users whose ``attribute`` (``userName`` or ``emails``) equals ``value`` (a SCIM ``eq`` filter), at most
        ``limit``: asking for two tells "exactly one" from "ambiguous" in one request."""
        quoted = value.replace("\\", "\\\\").replace('"', '\\"')
        response = self._scim("/Users", {"filter": f'{attribute} eq "{quoted}"', "startIndex": 1, "count": limit})
        if response.status_code != 200:
            raise DirectoryUnavailable(f"SCIM filtered listing answered HTTP {response.status_code}")
        return read_listing(self._json(response), 1).parse().users[:limit]

    def get_user(self, asgardeo_id: str) -> UserRecord:
        """One user by SCIM id; raises :class:`UserGone` on 404."""
        if not valid_id(asgardeo_id):
            raise ValueError("not a SCIM user id")
        response = self._scim(f"/Users/{quote(asgardeo_id, safe='')}")
        if response.status_code == 404:
            raise UserGone(asgardeo_id)
        if response.status_code != 200:
            raise DirectoryUnavailable(f"SCIM user GET answered HTTP {response.status_code}")
        try:
            return parse_user(self._json(response))
        except InvalidResource as exc:
            raise DirectoryUnavailable(f"SCIM user GET answered an unreadable resource: {exc}") from exc

    def get_role_members(self, role_id: str) -> list[str] | None:
        """The user ids of an Asgardeo role's members (``GET /scim2/v2/Roles/{id}``, one request of the shared
        budget); ``None`` when the role is gone (404). Raises :class:`DirectoryUnavailable` on an unreadable answer."""
        if not valid_id(role_id):
            raise ValueError("not a role id")
        response = self._scim(f"/v2/Roles/{quote(role_id, safe='')}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise DirectoryUnavailable(f"SCIM role GET answered HTTP {response.status_code}")
        users = _mapping(self._json(response)).get("users") or []
        if not isinstance(users, list):
            raise DirectoryUnavailable("SCIM role GET answered users that are not a list")
        ids = [u.get("value") for u in users if isinstance(u, dict)]
        return [str(i) for i in ids if valid_id(i)]
