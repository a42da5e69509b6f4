"""Header rewriting between client and upstream (RFC 9110 section 7.6.1: hop-by-hop fields stay on their hop).

The server's parser sorts request headers once (`server.Request.forward`) and the upstream client
builds the client's copy of response headers while parsing (`upstream.UpstreamConnection.client_headers`),
both with the sets below; this module joins the forwarded block. No mapping copies per request.
"""

from __future__ import annotations

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
# Recomputed on the next hop (framing, Host), answered by the gateway itself (Expect), or set by it.
REQUEST_DROP = HOP_BY_HOP | {"host", "content-length", "expect", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"}
# Never relayed to the client: the data-plane server frames every response itself.
RESPONSE_DROP = HOP_BY_HOP | {"content-length"}


def upstream_request_lines(
    forward: list[str],
    *,
    authorization: str,
    forwarded_for: str | None,
    connection: str,
    peer: str | None,
    scheme: str,
    host: str,
) -> str:
    """The forwarded header block ("Name: value\r\n" lines, without Host and framing, which depend on the attempt).

    `forward` is the request's own lines minus the fields decided here (see `server.Request.forward`);
    `authorization` is "" when it must not be forwarded; `connection` is the request's Connection
    header, whose tokens name more hop-by-hop fields.
    """
    lines = forward
    if connection and connection != "keep-alive" and connection != "close":
        listed = {t.strip() for t in connection.split(",") if t.strip()}
        lines = [line for line in lines if line.partition(":")[0].lower() not in listed]
    out = "".join(lines)
    if authorization:
        out += "Authorization: " + authorization + "\r\n"
    if peer:
        out += ("X-Forwarded-For: " + forwarded_for + ", " + peer + "\r\n") if forwarded_for else ("X-Forwarded-For: " + peer + "\r\n")
    elif forwarded_for:
        out += "X-Forwarded-For: " + forwarded_for + "\r\n"
    # The gateway is the edge: proto and host are what it saw, never what a client claims.
    out += "X-Forwarded-Proto: " + scheme + "\r\n"
    if host:
        out += "X-Forwarded-Host: " + host + "\r\n"
    return out
