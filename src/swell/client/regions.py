"""Where the APIs live: Amplitude's two regions, or any server (swell) given by URL.

Amplitude documents one REST host per data residency for both the Export API and the DSAR API:
``https://amplitude.com`` (default, US) and ``https://analytics.eu.amplitude.com`` (EU).
``analytics.amplitude.com`` is the web app, although DSAR status replies name it in output URLs.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from swell.client.errors import UsageError

REGIONS: dict[str, str] = {
    "us": "https://amplitude.com",
    "eu": "https://analytics.eu.amplitude.com",
}

EXPORT_PATH = "/api/2/export"
DSAR_PATH = "/api/2/dsar/requests"

#: Amplitude's DSAR replies point output URLs at other amplitude.com hosts than the API's (which
#: then redirect to object storage). Credentials go to these hosts only over https.
_AMPLITUDE_DOMAIN = "amplitude.com"


def base_url(server: str | None, region: str | None) -> str:
    """The API base URL from ``--server URL`` or ``--region us|eu`` (exactly one).

    Raises:
        UsageError: neither or both given, an unknown region, or a URL that is not http(s).
    """
    if server and region:
        raise UsageError("give either --server URL or --region us|eu, not both")
    if region:
        try:
            return REGIONS[region.lower()]
        except KeyError:
            raise UsageError(f"unknown region {region!r}: use us or eu") from None
    if not server:
        raise UsageError("give --server URL (e.g. http://127.0.0.1:8080) or --region us|eu")
    return normalize(server)


def normalize(url: str) -> str:
    """``url`` without a trailing slash, checked to be an absolute http(s) URL."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"invalid server URL {url!r}: expected http(s)://host[:port][/path]")
    if parts.query or parts.fragment:
        raise UsageError(f"invalid server URL {url!r}: no query or fragment")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise UsageError(f"invalid server URL {url!r}: bad port") from None
    return url.strip().rstrip("/")


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an absolute URL, with the scheme's default port filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port


def may_send_credentials(url: str, base: str, trusted_hosts: frozenset[str]) -> bool:
    """Whether a URL the server handed out (a DSAR output) may receive the org credentials.

    Yes for the API's own origin, for hosts the caller trusts explicitly, and, when the API is
    Amplitude's, for https hosts under amplitude.com. Never for anything else: a reply that names
    another host (a misconfigured proxy, a spoofed Host header) must not collect the keys.
    """
    scheme, host, _ = origin(url)
    if origin(url) == origin(base) or host in trusted_hosts:
        return True
    base_host = origin(base)[1]
    amplitude = base_host == _AMPLITUDE_DOMAIN or base_host.endswith("." + _AMPLITUDE_DOMAIN)
    return (
        amplitude
        and scheme == "https"
        and (host == _AMPLITUDE_DOMAIN or host.endswith("." + _AMPLITUDE_DOMAIN))
    )
