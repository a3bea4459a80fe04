"""The stand-in's user directory: in-memory state behind one lock, and the change events it emits.

Every write goes through :class:`Directory`, which stamps the user's ``last_modified_ms`` (strictly increasing
per user, even within one millisecond) and hands a :class:`Change` to each listener while still holding the lock,
so listeners see changes in commit order. Listeners must not block: the webhook publisher only enqueues, the
OIDC session store hands back-channel logouts to a worker.

Records are frozen; an update replaces the record, so readers may serialise records outside the lock.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

SEED_PASSWORD = "Passw0rd!"  # noqa: S105 - documented password of every seeded user
USER_STORE = "DEFAULT"
CLAIM_URIS = {
    "username": "http://wso2.org/claims/username",
    "email": "http://wso2.org/claims/emailaddress",
    "given_name": "http://wso2.org/claims/givenname",
    "family_name": "http://wso2.org/claims/lastname",
    "groups": "http://wso2.org/claims/groups",
}
PROFILE_FIELDS = tuple(CLAIM_URIS)
EVENT_URI = "https://schemas.identity.wso2.org/events/{channel}/event-type/{name}"
CHANNEL_URI = "https://schemas.identity.wso2.org/events/{channel}"
CHANNELS = ("user", "registration", "session", "credential", "role")
# Asgardeo cuts a role event's member lists at this many users (then a reader asks the Roles API).
ROLE_EVENT_MAX_USERS = 1000
_NAMESPACE = uuid.UUID("5f0c6b8e-9d1e-4b7a-8f00-5ea7de0a5a00")
_GIVEN = (
    "Ada",
    "Ben",
    "Chloe",
    "Dev",
    "Elif",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jon",
    "Kemi",
    "Liam",
    "Mei",
    "Nia",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sven",
    "Tara",
)
_FAMILY = (
    "Abara",
    "Berg",
    "Costa",
    "Dube",
    "Eriksen",
    "Fong",
    "Garcia",
    "Haddad",
    "Ito",
    "Jensen",
    "Kowalski",
    "Lopez",
    "Moreau",
    "Nakamura",
    "Okafor",
    "Patel",
    "Quist",
    "Rossi",
    "Silva",
    "Tan",
)
_DEPARTMENTS = ("Engineering", "Sales", "Support", "Finance")


class DirectoryError(Exception):
    """Base of the directory's domain errors; ``status`` is the HTTP status the boundary maps it to."""

    status = 400
    scim_type: str | None = None


class UserNotFound(DirectoryError):
    status = 404


class UsernameTaken(DirectoryError):
    status = 409
    scim_type = "uniqueness"


def hash_password(password: str) -> str:
    """A fast digest: this is a test double, and seeding 100,000 users must not spend a KDF per user."""
    return hashlib.sha256(password.encode()).hexdigest()


@functools.lru_cache(maxsize=4096)
def group_id(name: str) -> str:
    """Deterministic group id, so SCIM ``groups[].value`` is stable across runs."""
    return str(uuid.uuid5(_NAMESPACE, f"group:{name}"))


def store_of(username: str) -> str:
    """The user store a username lives in: ``HR/jane`` is in ``HR``, a bare name in the primary store."""
    store, slash, rest = username.partition("/")
    return store if slash and rest else USER_STORE


def qualified_username(username: str) -> str:
    """The username as SCIM shows it: with its store prefix (``DEFAULT/kim``, ``HR/jane``)."""
    return username if store_of(username) != USER_STORE else f"{USER_STORE}/{username}"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class UserRecord:
    """One live user. ``id`` is the join key: SCIM ``id``, OIDC ``sub`` and webhook ``user.id``."""

    id: str
    username: str
    email: str | None
    given_name: str | None
    family_name: str | None
    groups: tuple[str, ...]
    password_hash: str
    disabled: bool
    locked: bool
    created_ms: int
    last_modified_ms: int
    # Ids of the roles this user is a member of (the role records are the directory's).
    roles: tuple[str, ...] = ()

    def profile(self) -> dict[str, Any]:
        """The profile fields as claim-comparable values (``groups`` as a list)."""
        return {
            "username": self.username,
            "email": self.email,
            "given_name": self.given_name,
            "family_name": self.family_name,
            "groups": list(self.groups),
        }

    @property
    def can_log_in(self) -> bool:
        return not (self.disabled or self.locked)


@dataclass(frozen=True)
class Change:
    """One committed directory change, as the webhook events it must produce.

    ``events`` lists (channel, event name); ``iat_ms`` equals the user's new ``last_modified_ms`` (or the
    deletion time) so consumers can use it as a version. ``delta`` holds added/updated/removed profile fields
    for ``userProfileUpdated``; ``fields`` the session and credential events' own fields (``sessions``,
    ``credentialType``, ...), copied into the event as they are.
    """

    user: UserRecord | None
    events: tuple[tuple[str, str], ...]
    iat_ms: int
    action: str | None = None
    delta: dict[str, dict[str, Any]] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    # A role channel event's ``role`` object (no user: role events name none at the top).
    role: dict[str, Any] | None = None
    rci: str = field(default_factory=lambda: str(uuid.uuid4()))


Listener = Callable[[Change], None]


@dataclass(frozen=True)
class RoleRecord:
    """An Asgardeo role: a name within an audience (``organization`` or ``application``), and its members."""

    id: str
    name: str
    audience_type: str
    audience_value: str
    audience_display: str
    members: tuple[str, ...] = ()
    # The time of the role's last event (epoch ms), so its events' ``iat`` strictly increase.
    last_ms: int = 0

    def summary(self, root_url: str, org: str) -> dict[str, Any]:
        """The ``role`` object of a role event, without member lists."""
        return {
            "id": self.id,
            "name": self.name,
            "audience": {"type": self.audience_type, "value": self.audience_value, "display": self.audience_display},
            "ref": f"{root_url}/t/{org}/scim2/v2/Roles/{self.id}",
        }


class Directory:
    """Users by id, a username index and an insertion-ordered id list for stable SCIM paging."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._users: dict[str, UserRecord] = {}
        self._by_username: dict[str, str] = {}
        self._order: list[str] = []
        self._deleted: dict[str, int] = {}
        self._listeners: list[Listener] = []
        self._roles: dict[str, RoleRecord] = {}
        self._seed_hash = hash_password(SEED_PASSWORD)

    def subscribe(self, listener: Listener) -> None:
        """Register a non-blocking callback run under the lock for every committed change."""
        self._listeners.append(listener)

    # --- reads -------------------------------------------------------------------------------------------
    def get(self, user_id: str) -> UserRecord:
        with self._lock:
            user = self._users.get(user_id)
        if user is None:
            raise UserNotFound(f"User {user_id} not found")
        return user

    def find_by_username(self, username: str) -> UserRecord | None:
        with self._lock:
            user_id = self._by_username.get(username.lower())
            return self._users.get(user_id) if user_id else None

    def count(self) -> int:
        with self._lock:
            return len(self._order)

    def page(self, start_index: int, count: int) -> tuple[int, list[UserRecord]]:
        """Return (total, users) for a 1-based SCIM page in insertion order."""
        with self._lock:
            ids = self._order[max(start_index, 1) - 1 : max(start_index, 1) - 1 + count]
            return len(self._order), [self._users[i] for i in ids]

    def all_users(self) -> list[UserRecord]:
        with self._lock:
            return [self._users[i] for i in self._order]

    def deleted_ids(self) -> list[str]:
        with self._lock:
            return list(self._deleted)

    def authenticate(self, username: str, password: str) -> UserRecord | None:
        """The user if the password matches and the account may log in (not disabled, locked or deleted)."""
        user = self.find_by_username(username.removeprefix(f"{USER_STORE}/"))
        if user is None or not user.can_log_in:
            return None
        if not hmac.compare_digest(user.password_hash, hash_password(password)):
            return None
        return user

    # --- persistence -------------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Every user (ids, password digests, flags, versions) and the deleted ids, as plain JSON data."""
        with self._lock:
            return {
                "users": [{**asdict(self._users[i]), "groups": list(self._users[i].groups)} for i in self._order],
                "deleted": dict(self._deleted),
            }

    def restore(self, data: dict[str, Any]) -> int:
        """Replace the directory with a :meth:`snapshot`, emitting nothing (these users are not new); returns the
        number of users."""
        users = [
            UserRecord(**{**u, "groups": tuple(u.get("groups", ())), "roles": tuple(u.get("roles", ()))})
            for u in data.get("users", [])
        ]
        with self._lock:
            self._users.clear()
            self._by_username.clear()
            self._order.clear()
            for user in users:
                self._insert(user)
            self._deleted = {str(k): int(v) for k, v in data.get("deleted", {}).items()}
            return len(self._order)

    # --- writes ------------------------------------------------------------------------------------------
    def _stamp(self, previous: int) -> int:
        return max(now_ms(), previous + 1)

    def _emit(self, change: Change) -> None:
        for listener in self._listeners:
            listener(change)

    def _insert(self, user: UserRecord) -> None:
        self._users[user.id] = user
        self._by_username[user.username.lower()] = user.id
        self._order.append(user.id)
        self._deleted.pop(user.id, None)

    def create_user(
        self,
        username: str,
        password: str | None = None,
        email: str | None = None,
        given_name: str | None = None,
        family_name: str | None = None,
        groups: Iterable[str] = (),
        disabled: bool = False,
        locked: bool = False,
        user_id: str | None = None,
    ) -> UserRecord:
        """Create a user; emits ``userCreated`` and ``registrationSuccess``. Raises UsernameTaken."""
        username = username.removeprefix(f"{USER_STORE}/")
        with self._lock:
            if username.lower() in self._by_username:
                raise UsernameTaken(f"User {username} already exists")
            stamp = now_ms()
            user = UserRecord(
                id=user_id or str(uuid.uuid4()),
                username=username,
                email=email,
                given_name=given_name,
                family_name=family_name,
                groups=tuple(groups),
                password_hash=hash_password(password) if password else self._seed_hash,
                disabled=disabled,
                locked=locked,
                created_ms=stamp,
                last_modified_ms=stamp,
            )
            self._insert(user)
            self._emit(
                Change(
                    user, (("user", "userCreated"), ("registration", "registrationSuccess")), stamp, action="REGISTER"
                )
            )
            return user

    def seed(self, count: int, prefix: str = "user") -> dict[str, int]:
        """Create users ``{prefix}000001@example.com`` .. with deterministic ids, names and groups.

        Safe to re-run: users that already exist (same id or username) are skipped. All share
        :data:`SEED_PASSWORD`. Emits the creation events of each new user.
        """
        created = skipped = 0
        with self._lock:
            for i in range(1, count + 1):
                user_id = str(uuid.uuid5(_NAMESPACE, f"{prefix}:{i}"))
                username = f"{prefix}{i:06d}@example.com"
                if user_id in self._users or username.lower() in self._by_username:
                    skipped += 1
                    continue
                stamp = now_ms()
                user = UserRecord(
                    id=user_id,
                    username=username,
                    email=username,
                    given_name=_GIVEN[i % len(_GIVEN)],
                    family_name=_FAMILY[(i // len(_GIVEN)) % len(_FAMILY)],
                    groups=("Employees", _DEPARTMENTS[i % len(_DEPARTMENTS)]),
                    password_hash=self._seed_hash,
                    disabled=False,
                    locked=False,
                    created_ms=stamp,
                    last_modified_ms=stamp,
                )
                self._insert(user)
                if self._listeners:
                    self._emit(
                        Change(
                            user,
                            (("user", "userCreated"), ("registration", "registrationSuccess")),
                            stamp,
                            action="REGISTER",
                        )
                    )
                created += 1
        return {"created": created, "skipped": skipped}

    def update_profile(self, user_id: str, changes: dict[str, Any], password: str | None = None) -> UserRecord:
        """Apply profile fields (``PROFILE_FIELDS``); emits ``userProfileUpdated`` with the delta only.

        A no-op update (nothing differs) changes nothing and emits nothing.
        """
        unknown = set(changes) - set(PROFILE_FIELDS)
        if unknown:
            raise DirectoryError(f"Unknown profile fields: {sorted(unknown)}")
        with self._lock:
            user = self.get(user_id)
            before = user.profile()
            after = dict(before)
            for key, value in changes.items():
                if key == "groups":
                    after[key] = list(value or [])
                elif key == "username":
                    after[key] = str(value).removeprefix(f"{USER_STORE}/")
                else:
                    after[key] = value or None
            delta: dict[str, dict[str, Any]] = {"added": {}, "updated": {}, "removed": {}}
            for key in PROFILE_FIELDS:
                old, new = before[key], after[key]
                if old == new:
                    continue
                if not old:
                    delta["added"][key] = new
                elif not new:
                    delta["removed"][key] = old
                else:
                    delta["updated"][key] = new
            new_hash = hash_password(password) if password else user.password_hash
            if new_hash != user.password_hash:
                self._announce_credential(user, "UPDATE")
            if not any(delta.values()):
                if new_hash != user.password_hash:
                    user = replace(user, password_hash=new_hash)
                    self._users[user.id] = user
                return user
            new_name = after["username"]
            if new_name.lower() != user.username.lower():
                if new_name.lower() in self._by_username:
                    raise UsernameTaken(f"User {new_name} already exists")
                del self._by_username[user.username.lower()]
                self._by_username[new_name.lower()] = user.id
            stamp = self._stamp(user.last_modified_ms)
            user = replace(
                user,
                username=new_name,
                email=after["email"],
                given_name=after["given_name"],
                family_name=after["family_name"],
                groups=tuple(after["groups"]),
                password_hash=new_hash,
                last_modified_ms=stamp,
            )
            self._users[user.id] = user
            self._emit(Change(user, (("user", "userProfileUpdated"),), stamp, action="UPDATE", delta=delta))
            return user

    def reset_password(self, user_id: str, password: str, action: str = "CREDENTIAL_RESET") -> UserRecord:
        """An administrator's password reset; emits ``credentialUpdated`` with ``action`` (the flow name the code
        emits by default; the documentation's ``RESET`` also works). Not a profile change: the version stays."""
        with self._lock:
            user = self.get(user_id)
            self._announce_credential(user, action)
            user = replace(user, password_hash=hash_password(password))
            self._users[user.id] = user
            return user

    def _announce_credential(self, user: UserRecord, action: str) -> None:
        fields = {"credentialType": "PASSWORD"}
        self._emit(Change(user, (("credential", "credentialUpdated"),), now_ms(), action=action, fields=fields))

    def announce(self, user_id: str, channel: str, name: str, fields: dict[str, Any]) -> None:
        """Emit an event that changes no user record (the session channel's); silent for a user who is gone."""
        with self._lock:
            user = self._users.get(user_id)
            if user is not None:
                self._emit(Change(user, ((channel, name),), now_ms(), fields=fields))

    def set_disabled(self, user_id: str, disabled: bool) -> UserRecord:
        """Disable or enable; emits ``userDisabled``/``userEnabled`` only when the flag actually flips."""
        return self._set_flag(user_id, "disabled", disabled, "userDisabled" if disabled else "userEnabled")

    def set_locked(self, user_id: str, locked: bool) -> UserRecord:
        """Lock or unlock; emits ``userAccountLocked``/``userAccountUnlocked`` only when the flag flips."""
        return self._set_flag(user_id, "locked", locked, "userAccountLocked" if locked else "userAccountUnlocked")

    def _set_flag(self, user_id: str, attr: str, value: bool, event: str) -> UserRecord:
        with self._lock:
            user = self.get(user_id)
            if getattr(user, attr) == value:
                return user
            stamp = self._stamp(user.last_modified_ms)
            if attr == "disabled":
                user = replace(user, last_modified_ms=stamp, disabled=value)
            else:
                user = replace(user, last_modified_ms=stamp, locked=value)
            self._users[user.id] = user
            self._emit(Change(user, (("user", event),), stamp))
            return user

    def delete_user(self, user_id: str) -> UserRecord:
        """Delete; emits ``userDeleted``. Later GETs 404 and the id is listed in ``deleted_ids``."""
        with self._lock:
            user = self.get(user_id)
            stamp = self._stamp(user.last_modified_ms)
            del self._users[user_id]
            del self._by_username[user.username.lower()]
            self._order.remove(user_id)
            self._deleted[user_id] = stamp
            self._emit(Change(replace(user, last_modified_ms=stamp), (("user", "userDeleted"),), stamp))
            return user


class RoleNotFound(DirectoryError):
    status = 404


def _member_claims(user: UserRecord | None, user_id: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": user_id, "userStoreDomain": store_of(user.username) if user else USER_STORE}
    if user is not None:
        entry["claims"] = [{"uri": CLAIM_URIS["username"], "value": user.username}]
    return entry


class RoleStore:
    """The directory's roles; membership writes emit ``roleUsersUpdated`` through the directory's listeners.

    Kept beside :class:`Directory` (same lock) so a user's SCIM ``roles[]`` and the role's members agree.
    """

    def __init__(self, directory: Directory) -> None:
        self.directory = directory

    def create(
        self,
        name: str,
        audience_type: str = "organization",
        audience_value: str = "",
        audience_display: str = "",
        role_id: str | None = None,
    ) -> RoleRecord:
        if audience_type not in ("organization", "application"):
            raise DirectoryError("audience_type must be organization or application")
        d = self.directory
        with d._lock:
            role = RoleRecord(
                id=role_id or str(uuid.uuid4()),
                name=name,
                audience_type=audience_type,
                audience_value=audience_value or str(uuid.uuid5(_NAMESPACE, f"audience:{audience_type}")),
                audience_display=audience_display or audience_type,
            )
            if role.id in d._roles:
                raise DirectoryError(f"Role {role.id} already exists")
            d._roles[role.id] = role
            return role

    def get(self, role_id: str) -> RoleRecord:
        with self.directory._lock:
            role = self.directory._roles.get(role_id)
        if role is None:
            raise RoleNotFound(f"Role {role_id} not found")
        return role

    def all(self) -> list[RoleRecord]:
        with self.directory._lock:
            return list(self.directory._roles.values())

    def _emit(self, role: RoleRecord, name: str, extra: dict[str, Any]) -> RoleRecord:
        """Emit one role event (under the directory lock); returns the role with its new event time."""
        role = replace(role, last_ms=max(now_ms(), role.last_ms + 1))
        if role.id in self.directory._roles:
            self.directory._roles[role.id] = role
        self.directory._emit(
            Change(None, (("role", name),), role.last_ms, action="ROLE_UPDATE", role={"record": role, **extra})
        )
        return role

    def update_members(self, role_id: str, add: Iterable[str] = (), remove: Iterable[str] = ()) -> RoleRecord:
        """Add and remove members (unknown user ids are a 404); emits ``roleUsersUpdated`` with the change only,
        each list cut at :data:`ROLE_EVENT_MAX_USERS` with a ``truncated`` flag and the total count."""
        d = self.directory
        with d._lock:
            role = self.get(role_id)
            for user_id in (*add, *remove):
                d.get(user_id)
            members = dict.fromkeys(role.members)
            added = [u for u in dict.fromkeys(add) if u not in members]
            removed = [u for u in dict.fromkeys(remove) if u in members and u not in added]
            for user_id in added:
                members[user_id] = None
            for user_id in removed:
                members.pop(user_id, None)
            role = replace(role, members=tuple(members))
            d._roles[role.id] = role
            for user_id in added:
                user = d._users[user_id]
                d._users[user_id] = replace(user, roles=(*user.roles, role.id))
            for user_id in removed:
                user = d._users[user_id]
                d._users[user_id] = replace(user, roles=tuple(r for r in user.roles if r != role.id))
            if added or removed:
                users = {u: d._users.get(u) for u in (*added, *removed)}
                role = self._emit(role, "roleUsersUpdated", {"added": added, "removed": removed, "users": users})
            return role

    def rename(self, role_id: str, name: str) -> RoleRecord:
        """Emits ``roleMetaUpdated``."""
        d = self.directory
        with d._lock:
            role = replace(self.get(role_id), name=name)
            d._roles[role.id] = role
            return self._emit(role, "roleMetaUpdated", {})

    def delete(self, role_id: str) -> None:
        """Emits ``roleDeleted``; the members lose the role."""
        d = self.directory
        with d._lock:
            role = self.get(role_id)
            del d._roles[role_id]
            for user_id in role.members:
                user = d._users.get(user_id)
                if user is not None:
                    d._users[user_id] = replace(user, roles=tuple(r for r in user.roles if r != role_id))
            self._emit(role, "roleDeleted", {})

    def scim_roles(self, user: UserRecord, base_url: str) -> list[dict[str, Any]]:
        """A SCIM user's ``roles[]`` in today's shape."""
        with self.directory._lock:
            roles = [self.directory._roles[r] for r in user.roles if r in self.directory._roles]
        return [
            {
                "value": r.id,
                "display": r.name,
                "$ref": f"{base_url}/scim2/v2/Roles/{r.id}",
                "audienceValue": r.audience_value,
                "audienceType": r.audience_type,
                "audienceDisplay": r.audience_display,
            }
            for r in roles
        ]


def _role_payload(change: Change, root_url: str, org: str, initiator_ip: str) -> dict[str, Any]:
    assert change.role is not None
    record: RoleRecord = change.role["record"]
    role = record.summary(root_url, org)
    users = {}
    for key, listed in (
        ("addedUsers", change.role.get("added") or []),
        ("removedUsers", change.role.get("removed") or []),
    ):
        users[key] = listed
    directory_users: dict[str, UserRecord | None] = change.role.get("users", {})
    for key, listed in users.items():
        if not listed:
            continue
        role[key] = [_member_claims(directory_users.get(u), u) for u in listed[:ROLE_EVENT_MAX_USERS]]
        if len(listed) > ROLE_EVENT_MAX_USERS:
            # Asgardeo's code marks a cut list and counts it (no sample seen; both names kept in the README).
            role["truncated"] = True
            role[f"{key}Count"] = len(listed)
    organization = organization_ids(org)
    return {
        "initiatorType": "ADMIN",
        "initiatorIpAddress": initiator_ip,
        "tenant": {"id": str(uuid.UUID(organization["id"]).int % 100000), "name": org},
        "organization": organization,
        "action": change.action or "ROLE_UPDATE",
        "role": role,
    }


def organization_ids(org: str) -> dict[str, Any]:
    org_id = str(uuid.uuid5(_NAMESPACE, f"org:{org}"))
    return {"id": org_id, "name": org, "orgHandle": org, "depth": 0}


def _claims(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"uri": CLAIM_URIS[key], "value": value} for key, value in values.items() if value not in (None, "", [])]


def build_payloads(change: Change, root_url: str, org: str, initiator_ip: str = "127.0.0.1") -> list[dict[str, Any]]:
    """Asgardeo's webhook bodies for one change, one per event, in the shape of shared/asgardeo/webhooks.

    Empty and null fields are dropped, as Asgardeo does. Copies of one event share its ``jti``.
    """
    user = change.user
    organization = organization_ids(org)
    bodies = []
    for channel, name in change.events:
        if user is None:
            bodies.append(
                {
                    "iss": f"{root_url}/t/{org}",
                    "jti": str(uuid.uuid4()),
                    "iat": change.iat_ms,
                    "rci": change.rci,
                    "events": {
                        EVENT_URI.format(channel=channel, name=name): _role_payload(change, root_url, org, initiator_ip)
                    },
                }
            )
            continue
        user_part: dict[str, Any] = {
            "id": user.id,
            "organization": organization,
            "ref": f"{root_url}/t/{org}/scim2/Users/{user.id}",
        }
        if name == "userProfileUpdated":
            for kind in ("added", "updated", "removed"):
                if change.delta.get(kind):
                    user_part[f"{kind}Claims"] = _claims(change.delta[kind])
        elif name == "userDeleted":
            user_part["claims"] = _claims({"username": user.username})
        elif name in ("userCreated", "registrationSuccess"):
            user_part["claims"] = _claims(user.profile())
        elif channel == "session":
            user_part["claims"] = _claims({"username": user.username})
        elif channel == "credential":
            user_part["claims"] = _claims({"email": user.email})
        else:
            user_part["claims"] = _claims({"username": user.username, "email": user.email})
        # The session channel's events name no initiator (shared/asgardeo/webhooks/session*.json).
        initiator = {} if channel == "session" else {"initiatorType": "ADMIN", "initiatorIpAddress": initiator_ip}
        event: dict[str, Any] = {
            **initiator,
            "user": user_part,
            "tenant": {"id": str(uuid.UUID(organization["id"]).int % 100000), "name": org},
            "organization": organization,
            "userStore": {
                "id": base64.b64encode(store_of(user.username).encode()).decode(),
                "name": store_of(user.username),
            },
        }
        if change.action:
            event["action"] = change.action
        event.update(change.fields)
        bodies.append(
            {
                "iss": f"{root_url}/t/{org}",
                "jti": str(uuid.uuid4()),
                "iat": change.iat_ms,
                "rci": change.rci,
                "events": {EVENT_URI.format(channel=channel, name=name): event},
            }
        )
    return bodies
