"""The gateway's own HTTP/1.1 server and upstream client, against real sockets on loopback.

Upstreams here are raw asyncio servers where the test must control framing byte by byte (chunk
boundaries, close-delimited bodies, silence); clients are raw sockets where the test checks what
the gateway itself writes (pipelining, 100-continue, malformed requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import AsyncIterator, Awaitable, Callable

import uvloop
from aiohttp import web

from gateway_fixtures import EchoStats, client, echo_app, gateway, poll_until, run, serving, upstream
from gpustack_iac.runtime.gateway.routing import ServiceRoute
from gpustack_iac.runtime.gateway.settings import GatewaySettings
from gpustack_iac.runtime.gateway.wire import HttpProtocolError, check_target, is_chunked

RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_upstream(handler: RawHandler) -> AsyncIterator[str]:
    """A loopback TCP server running `handler` per connection; every connection is closed on exit."""
    writers: list[asyncio.StreamWriter] = []

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(tracked, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        for w in writers:
            w.close()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    lines = head.split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return lines[0], headers, body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One Content-Length response from a raw socket (what the gateway sends for small answers)."""
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)).decode("latin-1")
    lines = head.split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 20)
    return int(lines[0].split(" ")[1]), headers, body


def test_upstream_connections_are_kept_alive_and_reused() -> None:
    async def scenario() -> None:
        peers: list[int] = []

        async def who(request: web.Request) -> web.Response:
            assert request.transport is not None
            peers.append(request.transport.get_extra_info("peername")[1])
            return web.json_response({"n": len(peers)})

        app = web.Application()
        app.router.add_get("/{tail:.*}", who)
        async with serving(app) as u, gateway() as gw:
            gw.table.set_service(ServiceRoute("svc", auth=True, model=None, upstreams=(upstream("r", "g", u),)))
            async with client() as http:
                for i in range(10):
                    async with http.get(f"{gw.url}/services/svc/{i}", headers=gw.auth) as r:
                        assert r.status == 200 and (await r.json())["n"] == i + 1
        assert len(peers) == 10
        assert len(set(peers)) == 1, "sequential requests must reuse one pooled upstream connection"

    run(scenario())


def test_chunked_upstream_with_odd_boundaries_extensions_and_trailers() -> None:
    async def scenario() -> None:
        served = 0

        async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal served
            while True:
                await read_request(reader)
                served += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
                # Chunk sizes in upper and lower case, an extension, and a boundary split mid-size-line.
                for piece in (b"5;ext=1\r\nhello\r\n", b"a;e", b"xt=2\r\n, chunked \r\n", b"3\r\nend\r\n", b"0\r\nX-Trailer: t\r\n\r\n"):
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.01)

        async with raw_upstream(chunked) as u, gateway() as gw:
            gw.table.set_service(ServiceRoute("svc", auth=True, model=None, upstreams=(upstream("r", "g", u),)))
            async with client() as http:
                for _ in range(3):
                    async with http.get(f"{gw.url}/services/svc/", headers=gw.auth) as r:
                        assert r.status == 200
                        assert r.headers.get("Transfer-Encoding") == "chunked"
                        assert await r.read() == b"hello, chunked end"
        assert served == 3  # one connection served all three: the chunked end was found exactly

    run(scenario())


def test_close_delimited_and_connection_close_upstreams() -> None:
    async def scenario() -> None:
        connections = 0

        async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")
            for part in (b"no length, ", b"ends when the ", b"connection closes"):
                writer.write(part)
                await writer.drain()
                await asyncio.sleep(0.01)
            writer.close()

        async with raw_upstream(until_close) as u, gateway() as gw:
            gw.table.set_service(ServiceRoute("svc", auth=True, model=None, upstreams=(upstream("r", "g", u),)))
            async with client() as http:
                for _ in range(3):
                    async with http.get(f"{gw.url}/services/svc/", headers=gw.auth) as r:
                        assert r.status == 200
                        assert await r.read() == b"no length, ends when the connection closes"
            assert connections == 3  # `Connection: close` answers are never pooled
            assert gw.metrics.snapshot()["svc"].errors_total == 0

    run(scenario())


def test_pooled_connection_closed_by_the_replica_is_replaced_transparently() -> None:
    async def scenario() -> None:
        stats = EchoStats("r")
        # The replica closes idle keep-alive connections after 0.2 s, well before the gateway's pool does.
        app = echo_app(stats)
        runner = web.AppRunner(app, keepalive_timeout=0.2, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            u = f"http://127.0.0.1:{runner.addresses[0][1]}"
            async with gateway() as gw:
                gw.table.set_service(ServiceRoute("svc", auth=True, model=None, upstreams=(upstream("r", "g", u),)))
                async with client() as http:
                    for _ in range(4):
                        async with http.post(f"{gw.url}/services/svc/op", data=b"x", headers=gw.auth) as r:
                            assert r.status == 200
                        await asyncio.sleep(0.4)
                assert stats.requests == 4
                assert gw.metrics.snapshot()["svc"].errors_total == 0
        finally:
            await runner.cleanup()

    run(scenario())


def test_large_request_and_response_bodies_both_ways() -> None:
    async def scenario() -> None:
        blob = bytes(range(256)) * (16 * 1024)  # 4 MiB

        async def mirror(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
            await response.prepare(request)
            for i in range(0, len(body), 100_000):  # no Content-Length: chunked to the gateway
                await response.write(body[i : i + 100_000])
            await response.write_eof()
            return response

        app = web.Application(client_max_size=16 * 2**20)
        app.router.add_post("/mirror", mirror)

        async def pieces() -> AsyncIterator[bytes]:
            for i in range(0, len(blob), 65_536):
                yield blob[i : i + 65_536]

        async with serving(app) as u, gateway(settings=GatewaySettings(max_body_bytes=8 * 2**20)) as gw:
            gw.table.set_service(ServiceRoute("svc", auth=True, model=None, upstreams=(upstream("r", "g", u),)))
            async with client() as http:
                # A chunked upload (async generator body) and a Content-Length upload.
                async with http.post(f"{gw.url}/services/svc/mirror", data=pieces(), headers=gw.auth) as r:
                    assert r.status == 200 and await r.read() == blob
                async with http.post(f"{gw.url}/services/svc/mirror", data=blob, headers=gw.auth) as r:
                    assert r.status == 200 and await r.read() == blob
                async with http.post(f"{gw.url}/services/svc/mirror", data=blob * 3, headers=gw.auth) as r:
                    assert r.status == 413  # over max_body_bytes: refused before any replica sees it

    run(scenario())


def test_slow_upstream_within_and_beyond_the_read_timeout() -> None:
    async def scenario() -> None:
        async def slow(request: web.Request) -> web.StreamResponse:
            gap = float(request.query["gap"])
            response = web.StreamResponse(headers={"Content-Type": "text/plain"})
            await asyncio.sleep(gap)
            await response.prepare(request)
            for i in range(3):
                await response.write(b"%d\n" % i)
                await asyncio.sleep(gap)
            await response.write_eof()
            return response

        app = web.Application()
        app.router.add_get("/slow", slow)
        async with serving(app) as u, gateway(settings=GatewaySettings(read_timeout=1.5)) as gw:
            gw.table.set_service(ServiceRoute("svc", auth=True, model=None, upstreams=(upstream("r", "g", u),)))
            async with client() as http:
                # Silent for 0.5 s at a time, 2 s in total: the timeout is about silence, not duration.
                async with http.get(f"{gw.url}/services/svc/slow?gap=0.5", headers=gw.auth) as r:
                    assert r.status == 200 and await r.read() == b"0\n1\n2\n"
                async with http.get(f"{gw.url}/services/svc/slow?gap=4", headers=gw.auth) as r:
                    assert r.status == 504
                    assert (await r.json())["error"]["code"] == "upstream_failed"
            assert gw.metrics.snapshot()["svc"].errors_total == 1

    run(scenario())


def test_raw_client_disconnect_mid_stream_reaches_the_upstream() -> None:
    async def scenario() -> None:
        upstream_saw_eof = asyncio.Event()

        async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            reading = asyncio.ensure_future(reader.read(1))
            for _ in range(400):  # at most 20 s; the gateway must hang up long before
                writer.write(b"9\r\ndata: x\n\n\r\n")
                await writer.drain()
                done, _ = await asyncio.wait({reading}, timeout=0.05)
                if done:
                    upstream_saw_eof.set()
                    return

        async with raw_upstream(endless) as u, gateway() as gw:
            gw.table.set_service(ServiceRoute("svc", auth=True, model=None, upstreams=(upstream("r", "g", u),)))
            reader, writer = await asyncio.open_connection("127.0.0.1", int(gw.url.rsplit(":", 1)[1]))
            writer.write(f"GET /services/svc/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gw.token}\r\n\r\n".encode())
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
            assert head.startswith(b"HTTP/1.1 200") and b"Transfer-Encoding: chunked" in head
            await asyncio.wait_for(reader.readexactly(20), 20)  # a couple of events arrived
            writer.close()
            await asyncio.wait_for(upstream_saw_eof.wait(), 10)
            await poll_until(lambda: gw.metrics.snapshot()["svc"].in_flight == 0, timeout=10.0)
            assert gw.metrics.snapshot()["svc"].errors_total == 0

    run(scenario())


def test_pipelined_requests_expect_continue_and_http10() -> None:
    async def scenario() -> None:
        stats = EchoStats("r")
        async with serving(echo_app(stats)) as u, gateway() as gw:
            gw.table.set_service(ServiceRoute("svc", auth=True, model=None, upstreams=(upstream("r", "g", u),)))
            port = int(gw.url.rsplit(":", 1)[1])
            auth = f"Authorization: Bearer {gw.token}\r\n"
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                # Two requests in one write: answered in order on the same connection.
                writer.write(
                    f"GET /services/svc/one HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode()
                    + f"POST /services/svc/two HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 3\r\n\r\nabc".encode()
                )
                first, second = await read_response(reader), await read_response(reader)
                assert first[0] == 200 and json.loads(first[2])["path"] == "/one"
                assert second[0] == 200 and json.loads(second[2])["body"] == "abc"
                # Expect: 100-continue gets its interim answer before the body is sent.
                writer.write(f"PUT /services/svc/three HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 4\r\nExpect: 100-continue\r\n\r\n".encode())
                interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
                assert interim.startswith(b"HTTP/1.1 100")
                writer.write(b"body")
                status, _, body = await read_response(reader)
                assert status == 200 and json.loads(body)["body"] == "body"
                assert "expect" not in {k.lower() for k in json.loads(body)["headers"]}
            finally:
                writer.close()
            # HTTP/1.0 without keep-alive: one answer, then the gateway closes.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(f"GET /services/svc/old HTTP/1.0\r\n{auth}\r\n".encode())
                status, headers, _ = await read_response(reader)
                assert status == 200 and headers.get("connection") == "close"
                assert await asyncio.wait_for(reader.read(), 20) == b""
            finally:
                writer.close()

    run(scenario())


def test_malformed_and_smuggling_requests_are_refused_and_closed() -> None:
    async def scenario() -> None:
        stats = EchoStats("r")
        async with serving(echo_app(stats)) as u, gateway() as gw:
            gw.table.set_service(ServiceRoute("svc", auth=True, model=None, upstreams=(upstream("r", "g", u),)))
            port = int(gw.url.rsplit(":", 1)[1])
            auth = f"Authorization: Bearer {gw.token}\r\n"
            bad = [
                # Content-Length and Transfer-Encoding together: the classic smuggling vector.
                f"POST /services/svc/ HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                f"POST /services/svc/ HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
                f"GET /services/svc/ HTTP/1.1\r\nHost : x\r\n{auth}\r\n",  # space before the colon
                f"GET /services/svc/ HTTP/1.1\r\nHost: x\r\n{auth} folded: line\r\n\r\n",
                f"GET /services/svc/ HTTP/1.1\r\nHost: x\nX-Injected: 1\r\n{auth}\r\n",  # bare LF
                "GARBAGE\r\n\r\n",
                f"POST /services/svc/ HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\nzz\r\n",
            ]
            for text in bad:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                try:
                    writer.write(text.encode())
                    status, _, body = await read_response(reader)
                    assert status == 400, (text, status, body)
                    assert await asyncio.wait_for(reader.read(), 20) == b""  # the connection is closed
                finally:
                    writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(f"GET /services/svc/ HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: gzip\r\n\r\n".encode())
                assert (await read_response(reader))[0] == 501
            finally:
                writer.close()
        assert stats.requests == 0  # nothing malformed reached the replica

    run(scenario())


def test_serves_under_uvloop() -> None:
    """The entry point runs the gateway on uvloop, whose transports are not asyncio.Transport subclasses."""

    async def scenario() -> None:
        stats = EchoStats("r")
        async with serving(echo_app(stats)) as u, gateway() as gw:
            gw.table.set_service(ServiceRoute("svc", auth=True, model=None, upstreams=(upstream("r", "g", u),)))
            async with client() as http:
                for i in range(5):
                    async with http.post(f"{gw.url}/services/svc/{i}", data=b"p", headers=gw.auth) as r:
                        assert r.status == 200 and (await r.json())["path"] == f"/{i}"
        assert stats.requests == 5

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(scenario(), 60))


def test_checks_beyond_llhttp_units() -> None:
    """What the gateway refuses on top of llhttp: bytes outside visible ASCII in targets, undelimitable codings."""
    check_target(b"/a/b?c=%20d")
    assert is_chunked(["gzip, chunked"])
    for target in (b"/a\x01", b"/a b", b"/\x7f", b"/\xe9", b""):
        try:
            check_target(target)
        except HttpProtocolError:
            continue
        raise AssertionError(f"accepted {target!r}")
    for codings in (["gzip"], ["chunked, gzip"], ["chunked", "chunked"]):
        try:
            is_chunked(codings)
        except HttpProtocolError as exc:
            assert exc.status == 501
            continue
        raise AssertionError(f"accepted {codings!r}")


def test_head_no_content_and_interim_answers() -> None:
    async def scenario() -> None:
        async def various(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                line, _, _ = await read_request(reader)
                method, path = line.split(" ")[:2]
                if method == "HEAD":
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1234\r\n\r\n")
                elif path == "/empty":
                    writer.write(b"HTTP/1.1 204 No Content\r\nX-Why: nothing\r\n\r\n")
                else:
                    # An interim 103 Early Hints before the real answer: not relayed.
                    writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()

        async with raw_upstream(various) as u, gateway() as gw:
            gw.table.set_service(ServiceRoute("svc", auth=True, model=None, upstreams=(upstream("r", "g", u),)))
            async with client() as http:
                async with http.head(f"{gw.url}/services/svc/file", headers=gw.auth) as r:
                    assert r.status == 200 and r.headers["Content-Length"] == "1234"
                async with http.get(f"{gw.url}/services/svc/empty", headers=gw.auth) as r:
                    assert r.status == 204 and r.headers["X-Why"] == "nothing" and await r.read() == b""
                async with http.get(f"{gw.url}/services/svc/hints", headers=gw.auth) as r:
                    assert r.status == 200 and await r.read() == b"ok"
                # The same pooled connection still frames correctly after each of them.
                async with http.get(f"{gw.url}/services/svc/hints", headers=gw.auth) as r:
                    assert r.status == 200 and await r.read() == b"ok"

    run(scenario())


def test_replica_breaking_the_protocol_is_a_502_without_retry() -> None:
    async def scenario() -> None:
        calls = 0

        async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal calls
            await read_request(reader)
            calls += 1
            writer.write(b"SPDY/9 what\r\n\r\n")
            await writer.drain()
            await reader.read()  # until the gateway hangs up

        stats = EchoStats("fine")
        async with raw_upstream(garbage) as bad, serving(echo_app(stats)) as good, gateway() as gw:
            gw.table.set_service(ServiceRoute("svc", auth=True, model=None, upstreams=(upstream("b", "g", bad),)))
            async with client() as http:
                async with http.post(f"{gw.url}/services/svc/", data=b"x", headers=gw.auth) as r:
                    assert r.status == 502 and (await r.json())["error"]["code"] == "upstream_failed"
            assert calls == 1  # the replica may have acted on the request: not retried
            gw.table.set_service(ServiceRoute("svc", auth=True, model=None, upstreams=(upstream("g", "g", good),)))
            async with client() as http:
                async with http.get(f"{gw.url}/services/svc/", headers=gw.auth) as r:
                    assert r.status == 200

    run(scenario())


def test_per_upstream_connection_limit_queues_requests() -> None:
    async def scenario() -> None:
        stats = EchoStats("r")
        async with serving(echo_app(stats, delay=0.2)) as u, gateway(settings=GatewaySettings(max_connections_per_upstream=1)) as gw:
            gw.table.set_service(ServiceRoute("svc", auth=True, model=None, upstreams=(upstream("r", "g", u),)))
            async with client() as http:

                async def one(i: int) -> int:
                    async with http.get(f"{gw.url}/services/svc/{i}", headers=gw.auth) as r:
                        await r.read()
                        return r.status

                statuses = await asyncio.gather(*(one(i) for i in range(4)))
            assert statuses == [200] * 4
            assert stats.max_in_flight == 1  # one connection to the replica, one request at a time

    run(scenario())


def test_idle_upstream_connections_are_closed_after_the_keepalive_timeout() -> None:
    async def scenario() -> None:
        closed = asyncio.Event()

        async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            if await reader.read() == b"":  # the gateway closed its pooled connection
                closed.set()

        async with raw_upstream(once) as u, gateway(settings=GatewaySettings(keepalive_timeout=0.5)) as gw:
            gw.table.set_service(ServiceRoute("svc", auth=True, model=None, upstreams=(upstream("r", "g", u),)))
            async with client() as http:
                async with http.get(f"{gw.url}/services/svc/", headers=gw.auth) as r:
                    assert await r.read() == b"ok"
            await asyncio.wait_for(closed.wait(), 15)

    run(scenario())


def test_slow_client_pauses_the_replica_instead_of_buffering() -> None:
    async def scenario() -> None:
        total = 48 * 2**20
        written = 0
        piece = b"z" * 65_536

        async def firehose(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal written
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % total)
            while written < total:
                writer.write(piece)
                written += len(piece)
                await writer.drain()

        async with raw_upstream(firehose) as u, gateway() as gw:
            gw.table.set_service(ServiceRoute("svc", auth=True, model=None, upstreams=(upstream("r", "g", u),)))
            reader, writer = await asyncio.open_connection("127.0.0.1", int(gw.url.rsplit(":", 1)[1]), limit=2**16)
            try:
                writer.write(f"GET /services/svc/big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gw.token}\r\n\r\n".encode())
                await writer.drain()
                await asyncio.sleep(1.5)  # the client reads nothing meanwhile
                # Socket buffers on both hops hold a few MB; a buffering proxy would have taken it all.
                assert written < total // 2, written
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
                assert b"Content-Length: %d" % total in head
                received = 0
                while received < total:
                    chunk = await asyncio.wait_for(reader.read(2**20), 20)
                    assert chunk, "the stream ended early"
                    received += len(chunk)
                assert received == total and written == total
            finally:
                writer.close()

    run(scenario())


def test_upgrade_request_without_body_is_served_plain_and_the_next_request_still_parses() -> None:
    async def scenario() -> None:
        stats = EchoStats("r")
        async with serving(echo_app(stats)) as u, gateway() as gw:
            gw.table.set_service(ServiceRoute("svc", auth=True, model=None, upstreams=(upstream("r", "g", u),)))
            port = int(gw.url.rsplit(":", 1)[1])
            auth = f"Authorization: Bearer {gw.token}\r\n"
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(
                    f"GET /services/svc/ws HTTP/1.1\r\nHost: x\r\n{auth}Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n".encode()
                    + f"GET /services/svc/after HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode()
                )
                first, second = await read_response(reader), await read_response(reader)
                assert first[0] == 200 and json.loads(first[2])["path"] == "/ws"
                assert "upgrade" not in {k.lower() for k in json.loads(first[2])["headers"]}
                assert second[0] == 200 and json.loads(second[2])["path"] == "/after"
            finally:
                writer.close()

    run(scenario())
