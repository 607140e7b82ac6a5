"""The one naming rule for everything a caller names: models, feature sets, the features of a set
and its entity key, and bandits.

A name is 1 to 128 characters of ASCII letters, digits, ``.``, ``_`` and ``-``, starting with a
letter, a digit or ``_``. It holds no ``/``, no space and nothing else that would need quoting in
a URL, a shell or a file name. This is the union of what model names and feature names accepted
before the rule was shared, so no model or feature set stored earlier is refused. Aliases are
names narrowed further (``ALIAS_RULE``), since they sit beside the reserved ``latest``.

Not names: arm ids and decision ids are the caller's own identifiers of values inside a bandit
(an arm id often spells a provider's model path, ``openai/gpt-4o``), and entity ids are data.
They keep their own checks (``llmopt.bandits.arms.check_id``).

>>> check("bandit.name", "router-v2")
'router-v2'
>>> check("bandit.name", "a/b")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
llmopt.errors.InvalidArgument: bandit.name: 'a/b' is invalid: a name is 1 to 128 characters...
"""

from __future__ import annotations

import re

from llmopt import errors

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
RULE = (
    "a name is 1 to 128 characters: ASCII letters, digits, '.', '_' and '-', starting with a "
    "letter, a digit or '_' (no '/')"
)
ALIAS = re.compile(r"[a-z][a-z0-9_-]{0,63}")
ALIAS_RULE = (
    "an alias is 1 to 64 characters: lower-case letters, digits, '_' and '-', starting with a "
    "letter"
)


def shown(value: object) -> object:
    """The value as an error message shows it: long strings are cut."""
    if isinstance(value, str) and len(value) > 80:
        return f"{value[:32]}... ({len(value)} characters)"
    return value


def is_name(value: object) -> bool:
    return isinstance(value, str) and NAME.fullmatch(value) is not None


def problem(field: str, value: object) -> str | None:
    """What is wrong with ``value`` as a name, as an error message, or None when it is one
    (for checks that report every problem at once)."""
    if is_name(value):
        return None
    return str(errors.invalid(field, shown(value), RULE))


def check(field: str, value: str) -> str:
    """``value`` when it is a name; else InvalidArgument naming the field, the value and the
    rule."""
    if not is_name(value):
        raise errors.invalid(field, shown(value), RULE)
    return value


def check_alias(field: str, value: str) -> str:
    """``value`` when it is an alias name; else InvalidArgument naming the field, the value and
    the rule."""
    if not isinstance(value, str) or not ALIAS.fullmatch(value):
        raise errors.invalid(field, shown(value), ALIAS_RULE)
    return value
