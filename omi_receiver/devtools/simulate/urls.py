"""The URL each sender POSTs to: the current sender merges the query, the legacy one
concatenates (a URL with a query gets a second '?'); and which URLs a sender accepts."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from omi_receiver.devtools.simulate.options import Mode, UsageError


def check_url(url: str, mode: Mode | str = Mode.CURRENT) -> str:
    """The URL if the sender of `mode` would accept it; UsageError otherwise.

    Both senders need http(s) and a host. The current sender also rejects a URL with a
    query but no path (`https://host?x=1`): nothing is ever sent to it.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise UsageError(f"bad URL {url!r}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"bad URL {url!r}: need http(s)://host[:port]/path")
    if mode == Mode.CURRENT and parts.query and not parts.path:
        raise UsageError(
            f"bad URL {url!r}: a query needs a path (http(s)://host/path?...); "
            "the Omi sender rejects this URL and never sends"
        )
    return url


def current_url(url: str, sample_rate: int, uid: str) -> str:
    """Current sender: existing query kept, `sample_rate` and `uid` replaced."""
    parts = urlsplit(url)
    query = [
        (key, value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
        if key not in ("sample_rate", "uid")
    ]
    query += [("sample_rate", str(sample_rate)), ("uid", uid)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def legacy_url(url: str, sample_rate: int, uid: str) -> str:
    """Legacy sender: plain concatenation; a URL with a query gets a second '?'."""
    return f"{url}?sample_rate={sample_rate}&uid={uid}"


def target_url(url: str, mode: Mode, sample_rate: int, uid: str) -> str:
    """Where the sender of `mode` POSTs every chunk of a stream."""
    return (current_url if mode is Mode.CURRENT else legacy_url)(url, sample_rate, uid)
