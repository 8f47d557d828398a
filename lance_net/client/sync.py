"""Blocking Producer, Consumer and Admin: the asyncio clients run on a private loop in a thread.

Owns the thread, the hand-over of calls to it, and the producer's staging of records so that a
blocking send() stays cheap; every protocol decision is the asyncio clients'.

Each object starts its own daemon thread with its own event loop and stops it in close() (or
at the end of a `with` block). A blocking object is meant for one thread at a time, except
Producer.send(), which may be called from several threads.

    from lance_net.client import sync
    with sync.Producer("127.0.0.1:1992", "events", create_topic=True) as producer:
        for line in lines:
            producer.send(line)
        producer.flush()
    with sync.Consumer("127.0.0.1:1992", "events", start_from="earliest") as consumer:
        records = consumer.poll()
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

from lance_store.eventloop import loop_factory
from lance_store.records import RAW

from . import admin as _admin
from . import consumer as _consumer
from . import producer as _producer


class _LoopThread:
    """An event loop running in a daemon thread; call() runs a coroutine there and waits."""

    def __init__(self, name: str):
        self.loop = loop_factory()()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coroutine) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def call(self, coroutine, timeout: float | None = None) -> Any:
        future = self.submit(coroutine)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no result within {timeout} s") from None

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class _Stage:
    """Records sent from callers' threads, not yet handed to the loop."""

    __slots__ = ("records", "size", "shipped", "deliveries")

    def __init__(self) -> None:
        self.records: list = []
        self.size = 0
        self.shipped: concurrent.futures.Future | None = None
        self.deliveries: list = []


class Delivery:
    """The outcome of a blocking send(): result() waits for the Delivered (offset, SortKey)."""

    __slots__ = ("_producer", "_stage", "_index")

    def __init__(self, producer: Producer, stage: _Stage, index: int):
        self._producer = producer
        self._stage = stage
        self._index = index

    def result(self, timeout: float | None = None) -> _producer.Delivered:
        producer = self._producer
        stage = self._stage
        producer._ship_now(stage)
        stage.shipped.result(timeout)
        delivery = stage.deliveries[self._index]
        return producer._thread.call(_awaited(delivery), timeout)


async def _awaited(awaitable):
    return await awaitable


class Producer:
    """A blocking producer; the arguments are those of lance_net.client.Producer.

    send() only appends to a staging list (one lock, no I/O); the list goes to the loop
    thread when it holds batch_bytes of values, after linger_ms, or at flush().
    """

    def __init__(self, endpoint: str = _producer.DEFAULT_ENDPOINT, topic: _admin.TopicRef = "",
                 **kwargs: Any):
        self._thread = _LoopThread("lance-producer")
        self._async = _producer.Producer(endpoint, topic, **kwargs)
        self._lock = threading.Lock()
        self._stage = _Stage()
        self._stage_bytes = self._async.batch_bytes
        self._linger_s = max(self._async.linger_s, 0.001)
        try:
            self._thread.call(self._async.start())
        except BaseException:
            self._thread.stop()
            raise

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def producer(self) -> _producer.Producer:
        """The asyncio producer underneath (its stats, topic_id, producer_id)."""
        return self._async

    def send(self, value, rtype: int = RAW) -> Delivery:
        with self._lock:
            stage = self._stage
            records = stage.records
            records.append((value, rtype))
            stage.size += len(value) if type(value) is not tuple else len(value[-1])
            index = len(records) - 1
            full = stage.size >= self._stage_bytes
            if full:
                self._stage = _Stage()
        if full:
            self._ship(stage)
        elif index == 0:
            self._thread.loop.call_soon_threadsafe(self._linger, stage)
        return Delivery(self, stage, index)

    def _linger(self, stage: _Stage) -> None:
        self._thread.loop.call_later(self._linger_s, self._ship_now, stage)

    def _ship_now(self, stage: _Stage) -> None:
        """Hand `stage` to the loop unless it went already (any thread)."""
        with self._lock:
            if stage.shipped is not None:
                return
            if self._stage is stage:
                self._stage = _Stage()
        self._ship(stage)

    def _ship(self, stage: _Stage) -> None:
        with self._lock:
            if stage.shipped is not None:
                return
            stage.shipped = self._thread.submit(self._hand_over(stage))

    async def _hand_over(self, stage: _Stage) -> None:
        producer = self._async
        send = producer.send
        deliveries = stage.deliveries
        for value, rtype in stage.records:
            while True:
                try:
                    deliveries.append(send(value, rtype))
                    break
                except _producer.BufferFull:
                    await producer.ready()

    def flush(self, timeout: float | None = None) -> None:
        """Send everything staged and wait until it is acknowledged or failed."""
        with self._lock:
            stage = self._stage
        self._ship_now(stage)
        if stage.shipped is not None:
            stage.shipped.result(timeout)
        self._thread.call(self._async.flush(), timeout)

    def close(self, timeout: float | None = None) -> None:
        try:
            self.flush(timeout)
            self._thread.call(self._async.close(timeout))
        finally:
            self._thread.stop()

    def __getattr__(self, name: str):
        # stats, topic_id, producer_id, ... of the asyncio producer
        return getattr(self._async, name)


def _blocking(name: str, doc_from: type):
    method = getattr(doc_from, name)

    def call(self, *args, timeout: float | None = None, **kwargs):
        return self._thread.call(getattr(self._async, name)(*args, **kwargs), timeout)

    call.__name__ = name
    call.__doc__ = method.__doc__
    return call


class Consumer:
    """A blocking consumer; the arguments are those of lance_net.client.Consumer."""

    def __init__(self, endpoint: str = _consumer.DEFAULT_ENDPOINT, topic: _admin.TopicRef = "",
                 **kwargs: Any):
        self._thread = _LoopThread("lance-consumer")
        self._async = _consumer.Consumer(endpoint, topic, **kwargs)
        try:
            self._thread.call(self._async.start())
        except BaseException:
            self._thread.stop()
            raise

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self):
        while True:
            yield from self.poll()

    @property
    def position(self) -> int:
        return self._async.position

    @property
    def topic_id(self) -> int:
        return self._async.topic_id

    poll = _blocking("poll", _consumer.Consumer)
    poll_batch = _blocking("poll_batch", _consumer.Consumer)
    seek = _blocking("seek", _consumer.Consumer)
    seek_to_earliest = _blocking("seek_to_earliest", _consumer.Consumer)
    seek_to_latest = _blocking("seek_to_latest", _consumer.Consumer)
    seek_to_time = _blocking("seek_to_time", _consumer.Consumer)
    offsets = _blocking("offsets", _consumer.Consumer)
    commit = _blocking("commit", _consumer.Consumer)

    def close(self) -> None:
        try:
            self._thread.call(self._async.close())
        finally:
            self._thread.stop()


class Admin:
    """A blocking admin client; the arguments are those of lance_net.client.Admin."""

    def __init__(self, endpoint: str = _admin.DEFAULT_ENDPOINT, **kwargs: Any):
        self._thread = _LoopThread("lance-admin")
        self._async = _admin.Admin(endpoint, **kwargs)

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    create_topic = _blocking("create_topic", _admin.Admin)
    list_topics = _blocking("list_topics", _admin.Admin)
    get_topic = _blocking("get_topic", _admin.Admin)
    find_topic = _blocking("find_topic", _admin.Admin)
    topic_id = _blocking("topic_id", _admin.Admin)
    delete_topic = _blocking("delete_topic", _admin.Admin)
    set_retention = _blocking("set_retention", _admin.Admin)
    list_offsets = _blocking("list_offsets", _admin.Admin)
    cluster_status = _blocking("cluster_status", _admin.Admin)

    def close(self) -> None:
        try:
            self._thread.call(self._async.close())
        finally:
            self._thread.stop()
