"""One TCP connection to an address the caller already chose.

The probe and the policy fetch resolve names themselves and try addresses in their
own order (under the gate), so `trio.open_tcp_stream`'s lookup and Happy Eyeballs
race (RFC 8305) would only add a nursery, a task and a wrapped error per
connection. `connect_tcp` is the plain connect; its `OSError` carries the errno.
"""

from __future__ import annotations

import socket

import trio


async def connect_tcp(ip: str, port: int) -> trio.SocketStream:
    """Connect to `ip` (an IPv4 or IPv6 literal, perhaps with a zone) on `port`.

    Raises `OSError` (with its errno) when the connection fails; the socket is
    closed on any failure or cancellation.
    """
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        await sock.connect((ip, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)
