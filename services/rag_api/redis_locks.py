"""Locks in Redis for API replicas and workers on several machines.

With a queue (TUNESTACK_QUEUE_URL), the processes that write a collection or the
deployment record may run on different nodes, where an flock(2) on a shared volume is
only as good as the network filesystem's lock support. So every such writer also takes a
lock in Redis, the queue's own store. A lock is a lease (lease_s seconds) that a thread
renews while the holder works: a holder that dies (SIGKILL, a lost node) frees it within
lease_s, and nobody waits on a dead one forever.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from redis import Redis
from redis.exceptions import LockError

from services.common.errors import Conflict

log = logging.getLogger("tunestack.rag_api.redis_locks")


@contextmanager
def redis_lock(
    redis: Redis,
    name: str,
    *,
    timeout: float | None = None,
    waiting: Callable[[], None] | None = None,
    what: str = "this resource",
    lease_s: float = 30.0,
) -> Iterator[None]:
    """Hold tunestack:lock:<name> for the `with` block; timeout=None waits as long as it
    takes, else Conflict after `timeout` seconds; `waiting` is called once if it is busy."""
    lock = redis.lock(f"tunestack:lock:{name}", timeout=lease_s, thread_local=False)
    if not lock.acquire(blocking=False):
        if waiting is not None:
            waiting()
        if not lock.acquire(blocking=True, blocking_timeout=timeout):
            raise Conflict(
                f"{what} is busy (another ingest, reindex or deploy holds it).",
                hint="Wait for it to finish and try again.",
            )
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease_s / 3):
            try:
                lock.reacquire()
            except LockError as e:  # lost (Redis restarted, or a pause past the lease)
                log.warning("lock %s lost: %s", name, e)
                return

    renewer = threading.Thread(target=renew, name=f"lock-{name}", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        try:
            lock.release()
        except LockError:
            log.warning("lock %s expired before it was released", name)
