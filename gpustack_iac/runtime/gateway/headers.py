"""Header rewriting between client and upstream (RFC 9110 section 7.6.1: hop-by-hop fields stay on their hop)."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Recomputed by the HTTP library on the next hop, or answered by the gateway itself.
_REQUEST_DROP = HOP_BY_HOP | {"host", "content-length", "expect"}


def _connection_tokens(headers: CIMultiDictProxy[str]) -> set[str]:
    tokens: set[str] = set()
    for value in headers.getall("Connection", ()):
        tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def upstream_request_headers(
    headers: CIMultiDictProxy[str], *, strip_authorization: bool, peer: str | None, scheme: str, host: str
) -> CIMultiDict[str]:
    listed = _connection_tokens(headers)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lower = name.lower()
        if lower in _REQUEST_DROP or lower in listed:
            continue
        if lower == "authorization" and strip_authorization:
            continue
        if lower.startswith("x-forwarded-"):
            continue
        out.add(name, value)
    prior = headers.get("X-Forwarded-For")
    if peer:
        out["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    elif prior:
        out["X-Forwarded-For"] = prior
    # The gateway is the edge: proto and host are what it saw, never what a client claims.
    out["X-Forwarded-Proto"] = scheme
    out["X-Forwarded-Host"] = host
    return out


def client_response_headers(headers: CIMultiDictProxy[str], *, keep_length: bool) -> CIMultiDict[str]:
    listed = _connection_tokens(headers)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in listed:
            continue
        if lower == "content-length" and not keep_length:
            continue
        out.add(name, value)
    return out
