"""Running the app with uvicorn, with every timeout set.

uvicorn times out an idle keep-alive connection (`timeout_keep_alive`) and bounds a request head's
size (`h11_max_incomplete_event_size`), but never times out a request head or body that arrives
slowly: a client that sends one header byte a minute holds its connection for ever. Its h11
protocol is therefore subclassed here with two deadlines per request: the head must arrive
within `WebConfig.header_timeout_s` of the connection opening (or, on a kept-alive connection, of
the request's first byte), and the body within `body_timeout_s` of the head. A request that
misses one has its connection closed.
"""

from __future__ import annotations

import asyncio
import logging

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from cpcl.web.config import WebConfig
from cpcl.web.uploads import limit_malloc_arenas

log = logging.getLogger(__name__)


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's head and one for its body."""

    header_timeout_s = WebConfig.header_timeout_s  # set per server by `protocol_class`
    body_timeout_s = WebConfig.body_timeout_s

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        self._in_body = False
        super().connection_made(transport)
        self._arm(self.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self.conn.their_state is h11.IDLE:
            self._arm(self.header_timeout_s)  # the first byte of the next request on a kept-alive connection
        super().data_received(data)
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _follow(self) -> None:
        """Move the deadline along the request: head (IDLE) -> body (SEND_BODY) -> none (complete)."""
        state = self.conn.their_state
        if state is h11.IDLE:
            return
        if state is h11.SEND_BODY:
            if not self._in_body:
                self._in_body = True
                self._arm(self.body_timeout_s)
            return
        self._in_body = False
        self._disarm()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            log.warning("closing a connection from %s: its request did not arrive in time", self.client)
            self.transport.close()


def protocol_class(config: WebConfig) -> type[TimedH11Protocol]:
    """A `TimedH11Protocol` with `config`'s deadlines (uvicorn builds one protocol object a connection)."""
    return type("TimedH11Protocol", (TimedH11Protocol,), {"header_timeout_s": config.header_timeout_s,
                                                          "body_timeout_s": config.body_timeout_s})


def server_config(app: FastAPI, host: str, port: int, config: WebConfig) -> uvicorn.Config:
    """uvicorn's settings for `app`: the timed protocol, keep-alive timeout and head-size limit from `config`."""
    return uvicorn.Config(app, host=host, port=port, log_level="warning", server_header=False,
                          http=protocol_class(config), timeout_keep_alive=config.keep_alive_s,
                          h11_max_incomplete_event_size=config.max_header_bytes)


def serve(app: FastAPI, host: str, port: int, config: WebConfig) -> None:
    """Run `app` with uvicorn until interrupted (this process is the server's: its malloc arenas are limited)."""
    limit_malloc_arenas(config.malloc_arenas)
    uvicorn.Server(server_config(app, host, port, config)).run()
