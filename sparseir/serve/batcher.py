"""Micro-batching: concurrent requests' items go through one call of a batch function.

A request awaits :meth:`MicroBatcher.submit`; one loop takes the first waiting item, gathers more
for at most ``max_wait`` seconds (or until ``max_batch``), and runs the batch function once in an
executor thread. Items that arrive while a batch runs form the next batch, so under load batches
grow by themselves; ``max_wait`` only bounds the extra latency a lone request pays.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    """Run ``fn(items) -> results`` (one result per item, same order) on batches of submitted items."""

    def __init__(self, fn: Callable[[list[T]], Sequence[R]], executor: Executor, *, max_batch: int = 64,
                 max_wait: float = 0.002) -> None:
        self.fn, self.executor, self.max_batch, self.max_wait = fn, executor, max_batch, max_wait
        self.batches = 0
        self.items = 0
        self.largest = 0
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="micro-batcher")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def submit(self, item: T) -> R:
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _gather(self) -> list[tuple[T, asyncio.Future[R]]]:
        queue = self._queue
        batch = [await queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch:
            if not queue.empty():
                batch.append(queue.get_nowait())
                continue
            timeout = deadline - loop.time()
            if timeout <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), timeout))
            except asyncio.TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [(item, fut) for item, fut in await self._gather() if not fut.cancelled()]
            if not batch:
                continue
            self.batches += 1
            self.items += len(batch)
            self.largest = max(self.largest, len(batch))
            try:
                results = await loop.run_in_executor(self.executor, self.fn, [item for item, _ in batch])
            except Exception as e:  # noqa: BLE001 - handed to every waiting request, which raises it
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            for (_, fut), result in zip(batch, results):
                if not fut.done():
                    fut.set_result(result)

    def stats(self) -> dict[str, float]:
        return {"batches": self.batches, "items": self.items, "largest": self.largest,
                "mean_batch": round(self.items / self.batches, 3) if self.batches else 0.0,
                "max_batch": self.max_batch, "max_wait_ms": self.max_wait * 1000}
