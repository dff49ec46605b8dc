"""Run an ASGI app on this machine: a free loopback port and a uvicorn server in a thread (tests, notebooks).

    with serve_in_thread(make_app(model)) as base:   # "http://127.0.0.1:PORT"
        OpenAI(base_url=base + "/v1", api_key="none").completions.create(...)

``free_port`` needs nothing beyond the standard library; ``serve_in_thread`` needs uvicorn (the ``serve`` extra).
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextmanager
def serve_in_thread(app, host: str = "127.0.0.1", port: int | None = None, start_timeout: float = 30.0,
                    log_level: str = "warning"):
    """Serve the ASGI ``app`` with uvicorn in a daemon thread; yield its base URL ``http://host:port``.

    The server stops (and the thread is joined) when the block exits, also when it raises. Raises
    ``RuntimeError`` if the server has not started within ``start_timeout`` seconds."""
    import uvicorn

    port = port or free_port(host)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {host}:{port} did not start within {start_timeout:.0f} s")
            time.sleep(0.05)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
