"""How much memory the REST server may spend on request bodies at once (serve.rest_body_budget_mb).

A request reserves its body's size before the body is read, and what parsing
it will take (json_body.ParsedBody.cost_bytes) before the parse builds
anything; it keeps both until its answer is written. A reservation that does
not fit is refused at once, never queued: a queue of bodies waiting to be
parsed is itself memory, which is what the budget bounds.

An eighth of the budget is kept for small requests: a reservation that
grows past that eighth may only fill the other seven, so large bodies never
leave a small request without room.
"""

from __future__ import annotations

import threading


class BodyBudget:
    """A number of bytes shared by the requests in flight; reserve() never waits."""

    def __init__(self, capacity_bytes: int):
        self.capacity = capacity_bytes
        self.small = capacity_bytes // 8  # a request holding at most this much is small
        self.largest = capacity_bytes - self.small  # what one request may hold at most
        self._lock = threading.Lock()
        self._used = 0

    @property
    def used(self) -> int:
        with self._lock:
            return self._used

    def reserve(self, size: int) -> Reservation | None:
        """A reservation of size bytes, or None when the bytes in use leave no room for it now."""
        reservation = Reservation(self)
        return reservation if reservation.grow(size) else None

    def _take(self, size: int, held_after: int) -> bool:
        limit = self.capacity if held_after <= self.small else self.largest
        with self._lock:
            if self._used + size > limit:
                return False
            self._used += size
            return True

    def _give_back(self, size: int) -> None:
        with self._lock:
            self._used -= size


class Reservation:
    """Bytes one request holds; grown as it learns what it needs, released once (a context manager)."""

    def __init__(self, budget: BodyBudget):
        self.budget = budget
        self.held = 0

    def grow(self, size: int) -> bool:
        """Hold size more bytes; False (holding nothing more) when the budget has no room for them now."""
        if size <= 0:
            return True
        if not self.budget._take(size, self.held + size):
            return False
        self.held += size
        return True

    def release(self) -> None:
        self.budget._give_back(self.held)
        self.held = 0

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
