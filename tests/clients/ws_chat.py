"""A WebSocket client session against the ws-chat guest, with the Python
`websockets` library: broadcast, fragmented and large messages, ping/pong,
close codes and the message size limit. Exits non-zero with a message on
the first thing that is not as expected. Usage: ws_chat.py ws://ADDR/"""

import asyncio
import os
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

TIMEOUT = 20


async def recv(ws):
    return await asyncio.wait_for(ws.recv(), TIMEOUT)


async def main(url):
    async with connect(url, subprotocols=["chat"], max_size=None) as a, connect(url, max_size=None) as b:
        assert a.subprotocol == "chat", f"subprotocol {a.subprotocol!r}"
        assert b.subprotocol is None, f"subprotocol {b.subprotocol!r}"

        await a.send("hello")
        assert (got := await recv(b)) == "hello", got
        await b.send("hi there")
        assert (got := await recv(a)) == "hi there", got
        print("ok broadcast")

        await a.send(["frag", "mented ", "message \u2713"])
        assert (got := await recv(b)) == "fragmented message \u2713", got
        print("ok fragmented text")

        big = os.urandom(900_000)
        await b.send(big)
        assert await recv(b) == big, "large binary echo differs"
        await b.send([big[:300_000], big[300_000:600_000], big[600_000:]])
        assert await recv(b) == big, "fragmented binary echo differs"
        print("ok large binary")

        for i in range(200):
            await a.send(f"line {i}")
        for i in range(200):
            assert (got := await recv(b)) == f"line {i}", got
        print("ok ordered")

        pong = await a.ping(b"are you there")
        await asyncio.wait_for(pong, TIMEOUT)
        print("ok ping")

        await a.close(code=4001, reason="done here")
        assert a.close_code == 4001, f"close code {a.close_code}"
        print("ok close 4001")

        await b.send("/quit")
        await asyncio.wait_for(b.wait_closed(), TIMEOUT)
        assert (b.close_code, b.close_reason) == (1000, "bye"), (b.close_code, b.close_reason)
        print("ok server close 1000")

    async with connect(url, max_size=None) as c:
        await c.send(b"x" * 1_500_000)
        try:
            await recv(c)
            raise AssertionError("an oversized message was not refused")
        except ConnectionClosed as e:
            assert e.rcvd is not None and e.rcvd.code == 1009, f"closed with {e.rcvd}"
        print("ok too big 1009")


asyncio.run(main(sys.argv[1]))
