"""One asyncio loop in a daemon thread, so synchronous code can use the async core."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    _shared: LoopThread | None = None
    _shared_lock = threading.Lock()

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="elixirscope-io", daemon=True)
        self._thread.start()

    @classmethod
    def shared(cls) -> LoopThread:
        with cls._shared_lock:
            if cls._shared is None or not cls._shared._thread.is_alive():
                cls._shared = cls()
            return cls._shared

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Runs ``coroutine`` on the loop and waits for its result (or ``TimeoutError``).

        A bare lock released by the task's done callback is the waiter: on a busy
        two-core machine each thread wake-up costs tens of microseconds, and this path
        has the fewest (``run_coroutine_threadsafe`` chains two futures and a condition)."""
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("a blocking call was made from the I/O thread itself")
        finished = threading.Lock()
        finished.acquire()
        tasks: list[asyncio.Task[T]] = []

        def start() -> None:
            task = self.loop.create_task(coroutine)
            task.add_done_callback(lambda _: finished.release())
            tasks.append(task)

        self.loop.call_soon_threadsafe(start)
        try:
            done = finished.acquire(timeout=-1 if timeout is None else timeout)
        except KeyboardInterrupt:
            self.loop.call_soon_threadsafe(lambda: tasks and tasks[0].cancel())
            raise
        if not done:
            self.loop.call_soon_threadsafe(lambda: tasks and tasks[0].cancel())
            raise TimeoutError("the operation did not finish in time")
        return tasks[0].result()
