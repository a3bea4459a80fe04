"""One reading of user attributes, shared by webhook claims, SCIM resources and ID tokens.

Each path that writes a user turns its raw values into row values here, so the same person gives the same row
whichever path came last (two parsers that disagreed flipped usernames back and forth, one audit row per flip):

- **Usernames and group names** lose only the primary user store's prefix, ``DEFAULT/`` or ``PRIMARY/`` (any case),
  as WSO2 itself shows them. Any other ``STORE/name`` stays whole: two stores may hold the same bare name, and cutting
  the prefix would collapse two people into one name.
- **Lengths** match the columns. A longer value is cut to the column's length, never refused: an event that can
  never be stored would fail for good on every retry and replay.
- Surrounding blanks are dropped, and an empty value is no value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from models.tables import User

PRIMARY_STORES = frozenset({"DEFAULT", "PRIMARY"})


def _length(column: str) -> int:
    length = getattr(User.__table__.c[column].type, "length", None)
    assert isinstance(length, int)
    return length


USERNAME_LENGTH = _length("username")
EMAIL_LENGTH = _length("email")
NAME_LENGTH = _length("first_name")
# ``groups`` is a JSONB list; a group name is held to a name column's length so one claim cannot bloat every row.
GROUP_LENGTH = NAME_LENGTH


def clip(value: object, limit: int) -> str | None:
    """``value`` as a stripped string of at most ``limit`` characters; None for non-strings and blanks."""
    if not isinstance(value, str):
        return None
    text = value.strip()[:limit].strip()
    return text or None


def without_primary_store(value: str) -> str:
    """``DEFAULT/kim`` and ``primary/kim`` -> ``kim``; ``HR/kim`` and ``kim`` unchanged."""
    store, slash, rest = value.partition("/")
    if slash and rest and store.upper() in PRIMARY_STORES:
        return rest
    return value


def username_from_directory(value: object) -> str | None:
    """A username as the table keeps it (primary store prefix dropped, cut to the column)."""
    if not isinstance(value, str):
        return None
    return clip(without_primary_store(value.strip()), USERNAME_LENGTH)


def group_names(values: Iterable[object]) -> tuple[str, ...]:
    """Group names as the table keeps them: primary store prefix dropped, cut, blanks and repeats dropped, sorted."""
    names = set()
    for value in values:
        if isinstance(value, str):
            name = clip(without_primary_store(value.strip()), GROUP_LENGTH)
            if name:
                names.add(name)
    return tuple(sorted(names))


def email(value: object) -> str | None:
    return clip(value, EMAIL_LENGTH)


def person_name(value: object) -> str | None:
    return clip(value, NAME_LENGTH)


# The rule of each identity field, by the field's name in ``users``.
_FIELD_RULES = {
    "username": username_from_directory,
    "email": email,
    "first_name": person_name,
    "last_name": person_name,
}


def user_fields(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Row values for the identity fields present in ``raw`` (``groups`` as a sequence of names); other keys are
    passed through. Each path extracts raw values from its own format, then calls this, so the rules are one."""
    fields: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "groups":
            fields[name] = group_names(value if isinstance(value, list | tuple) else ())
        elif name in _FIELD_RULES:
            fields[name] = _FIELD_RULES[name](value)
        else:
            fields[name] = value
    return fields
