"""What a submit costs the API process, structurally (the figures are the benchmark's,
docs/BENCHMARKS.md): no timing here, only the choices that set the cost."""

from __future__ import annotations

import asyncio

import uvicorn
import uvloop
from uvicorn.protocols.http.h11_impl import H11Protocol

from api.main import server_options
from tests.conftest import make_settings


def test_the_api_serves_on_uvloop_with_h11():
    options = server_options(make_settings())
    assert options["loop"] == "uvloop" and options["http"] == "h11"
    config = uvicorn.Config(lambda scope, receive, send: None, **options)
    config.load()
    # h11 bounds what it buffers of a request's head; httptools does not.
    assert config.http_protocol_class is H11Protocol
    assert config.h11_max_incomplete_event_size is None or config.h11_max_incomplete_event_size <= 64 * 1024
    factory = config.get_loop_factory()
    assert factory is not None
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
        assert isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()
