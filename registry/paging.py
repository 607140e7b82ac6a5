"""Paging of the registry's listings: page sizes and the opaque tokens that resume a listing.

A token is the listing's kind and the key of the last item shown, so a token from one listing
(models) is refused by another (versions) instead of silently skipping items.
"""

from __future__ import annotations

import base64
import binascii
import json

from llmopt import errors

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def page_size(value: int) -> int:
    """The page size to use: ``value``, or the default for 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > MAX_PAGE_SIZE:
        raise errors.invalid(
            "page.page_size", value, f"0 (default {DEFAULT_PAGE_SIZE}) to {MAX_PAGE_SIZE}"
        )
    return value or DEFAULT_PAGE_SIZE


def encode_token(kind: str, after: str | int) -> str:
    """The token that resumes a ``kind`` listing after the item whose key is ``after``."""
    raw = json.dumps([kind, after], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, kind: str) -> str | int | None:
    """The key a ``kind`` listing resumes after (None: start from the beginning)."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        got_kind, after = json.loads(raw)
    except (ValueError, binascii.Error, TypeError):
        raise errors.invalid("page.page_token", token, "a token from a previous response") from None
    if got_kind != kind or not isinstance(after, str | int) or isinstance(after, bool):
        raise errors.invalid("page.page_token", token, f"a token from a previous {kind} listing")
    return after
