"""Credentials never leave the process: URIs are redacted before they are logged or stored."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_SECRET_QUERY = re.compile(r"(?i)((?:password|passwd|pwd|token|secret|key|signature|sig|credential)[^=&]*=)[^&]*")


def redact_uri(uri: str | None) -> str | None:
    """`scheme://user:pass@host/...?token=x` -> `scheme://user:***@host/...?token=***`."""
    if not uri or "://" not in uri:
        return uri
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable uri>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"***@{host}"
    query = _SECRET_QUERY.sub(r"\1***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str, secrets: list[str]) -> str:
    """Replace every occurrence of each secret (e.g. a URI's password) in free text."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def uri_secrets(uri: str | None) -> list[str]:
    """The secret parts of a URI (password, secret query values), for `redact_text`."""
    if not uri or "://" not in uri:
        return []
    try:
        parts = urlsplit(uri)
    except ValueError:
        return [uri]
    found = [parts.password] if parts.password else []
    found += [m.group(0).split("=", 1)[1] for m in _SECRET_QUERY.finditer(parts.query)]
    return [s for s in found if s]
