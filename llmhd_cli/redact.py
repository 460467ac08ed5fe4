"""Masking secrets in anything shown: URLs with credentials and key-like query parameters.

A base URL may carry a secret (``https://user:pass@proxy/v1``, ``...?api_key=...``), and
SDKs, HTTP libraries and our own messages quote URLs. `mask_url` masks one URL, `mask_secrets`
every URL inside a text, and `RedactingFilter` does it to every log record a handler emits.
"""

from __future__ import annotations

import base64
import logging
import re
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"

# Query parameter names that carry a credential: a name one of whose parts (split at _ - .)
# is one of these, in any case: key, api_key, apiKey, x-api-key, access_token, client_secret,
# X-Amz-Signature... (``max_tokens`` is not: "tokens" is not a part listed).
_SECRET_PARTS = frozenset({
    "key", "apikey", "token", "accesstoken", "refreshtoken", "idtoken", "secret", "clientsecret", "password",
    "passwd", "pwd", "pass", "auth", "authorization", "sig", "signature", "credential", "credentials",
    "session", "sessionid", "jwt", "bearer",
})
# A URL in free text: scheme://, then anything up to whitespace, a quote or a bracket.
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s'\"<>()\[\]{}]+")
# A query string quoted without its URL (``?api_key=...&x=1``): name=value after ? or &.
_QUERY_PAIR = re.compile(r"([?&])([A-Za-z0-9_.\-]+)=([^&#\s'\"]+)")


def _secret_name(name: str) -> bool:
    return any(part.lower() in _SECRET_PARTS for part in re.split(r"[_.\-]", name))


def _mask_query(query: str) -> str:
    parts = []
    for part in query.split("&"):
        name, eq, value = part.partition("=")
        parts.append(f"{name}={MASK}" if eq and value and _secret_name(name) else part)
    return "&".join(parts)


def _mask_pairs(text: str) -> str:
    return _QUERY_PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}={MASK}" if _secret_name(m.group(2)) else m.group(0),
                           text)


def mask_url(url: str | None) -> str | None:
    """``url`` with its user info and key-like query values replaced by ``***``."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:  # user:pass@host, or a bare token@host: the whole user info is secret
            netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
        return urlunsplit((parts.scheme, netloc, parts.path, _mask_query(parts.query), parts.fragment))
    except ValueError:  # not parseable as a URL (a bad port...): mask what looks secret anyway
        return _mask_pairs(re.sub(r"//[^/@\s]*@", f"//{MASK}@", url))


def url_secrets(url: str | None) -> list[str]:
    """The secret strings a URL carries (user info, its parts, their HTTP Basic form, key-like
    query values), to scrub from texts that quote them without the URL (a server's echo)."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found: list[str] = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        user, colon, password = userinfo.partition(":")
        found += [userinfo, unquote(userinfo), password, unquote(password),
                  base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()]
        if not colon:  # token@host: the user name is the secret; next to a password it is just a name
            found += [user, unquote(user)]
    for name, _, value in (p.partition("=") for p in parts.query.split("&")):
        if value and _secret_name(name):
            found += [value, unquote(value)]
    # Longest first, so that a secret containing another is replaced whole; short ones are skipped
    # (replacing "ab" everywhere would garble messages and hide nothing).
    return sorted({f for f in found if len(f) >= 4}, key=len, reverse=True)


def mask_secrets(text: str) -> str:
    """Every URL in ``text`` masked (`mask_url`), and key-like ``?name=value`` pairs outside URLs."""
    if not text or ("://" not in text and "=" not in text):
        return text
    return _mask_pairs(_URL.sub(lambda m: mask_url(m.group(0)) or "", text))


class RedactingFilter(logging.Filter):
    """A handler filter that masks secrets in the formatted message of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record whose args do not fit its format: leave it to the handler
            return True
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, ()
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            # A traceback quotes exception messages too: format it here, masked.
            record.exc_text = mask_secrets(logging.Formatter().formatException(record.exc_info))
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Add a `RedactingFilter` to every handler of ``logger`` (the root logger by default)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
