"""An asyncio event loop on a thread of its own, for serving grpc.aio servers in process
to tests that call them with blocking clients."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

OnLoop = Callable[[Coroutine[Any, Any, Any]], Any]


@contextlib.contextmanager
def loop_in_thread(timeout_s: float = 10.0) -> Iterator[OnLoop]:
    """Yields `on_loop(coroutine)`: runs it on the loop's thread and returns its result
    (within `timeout_s`). The loop is stopped and closed on exit."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="server-loop", daemon=True)
    thread.start()
    try:
        yield lambda coroutine: asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout_s)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout_s)
        loop.close()
