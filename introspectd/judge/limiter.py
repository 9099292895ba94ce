"""Adaptive concurrency for the judge: AIMD on the number of requests in flight, with pacing.

A rate-limited endpoint answers 429 once we send faster than it allows. The number of requests
in flight sets the send rate (rate ≈ limit / round-trip time), so we adapt the limit:

- never more than `max_concurrency` in flight, never fewer than `min_limit` ([judge]
  min_concurrency);
- slow start: begin with `min_limit` requests, add one slot per success (doubling per round
  trip) until the first burst of 429s or `max_concurrency`;
- only a *burst* of 429s is taken as ours to fix (burst.py): a shared endpoint answers a steady
  few per cent of 429s whatever we send, and shrinking on each of those held the limit at 1-2
  under 8% random 429s. A 429 outside a burst only delays its own retry (the client waits its
  Retry-After);
- in a burst, a 429 shrinks the limit multiplicatively, once per congestion event (429s for
  requests sent before the last decrease are echoes of the same event, not new evidence), and
  pauses EVERY sender until the server's Retry-After has passed, so waiting callers cannot
  turn the burst into a storm;
- afterwards each success grows the limit by a step sized so that the event's decreases (all
  of them, down to the limit it started from) are won back over `probe_successes` successes:
  probing the edge once per ~100 requests rather than once per round trip (as TCP does), yet
  back near the old limit within ~100 requests after a burst that drove it to the floor. The
  step doubles every further `probe_successes` successes without a decrease, so once past the
  old edge the limit climbs ever faster towards new capacity (as TCP CUBIC does).

Sends are paced `srtt / limit` apart (srtt: smoothed round-trip time of successful requests):
without pacing, every caller released at once by a pause or a burst of completions would fire
together and overrun a token bucket that has capacity for the average rate but not the burst.
Pacing with the fractional limit also gives fine rate control when only 1-3 requests fit.

Single event loop, no threads: state changes are plain attribute updates between awaits.
Waiters queue first in, first out, and only the head of the queue watches the clock and the
slots; the others sleep until their turn comes. Each acquire, release or pacing tick thus wakes
one task: waking every waiter on every change (the obvious design) costs O(waiters) wake-ups
per request, and with the judge pool's dozens of waiting workers that CPU is taken from the
decode loop sharing the process.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass

import anyio

from introspectd.judge.burst import BurstDetector

LOW_SHARE = 0.25  # a limit at most this share of max_concurrency "sits far below" it


class Signal(enum.Enum):
    OK = "ok"  # the server accepted the request (whatever the content)
    RATE_LIMITED = "rate_limited"  # 429 (not a quota error)
    NEUTRAL = "neutral"  # errors that say nothing about the rate (5xx, timeouts, ...)


@dataclass(frozen=True)
class Ticket:
    """Proof of one acquired slot; `sent_at` dates the request for congestion bookkeeping."""

    sent_at: float


class AdaptiveLimiter:
    def __init__(
        self,
        max_concurrency: int,
        *,
        decrease: float = 0.9,
        exit_decrease: float = 0.7,
        probe_successes: int = 100,
        min_limit: int = 1,
        bursts: BurstDetector | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if not (0 < decrease < 1 and 0 < exit_decrease < 1):
            raise ValueError("decrease factors must be in (0, 1)")
        if not 1 <= min_limit <= max_concurrency:
            raise ValueError("min_limit must be between 1 and max_concurrency")
        self.max_concurrency = max_concurrency
        self._decrease = decrease
        self._exit_decrease = exit_decrease  # slow start may overshoot further: cut deeper
        self._probe = max(1, probe_successes)
        self._since_step = 0  # successes since the step last changed
        self._min_limit = float(min_limit)
        self._limit = self._min_limit
        self._slow_start = True
        self._step = 0.0
        self._bursts = bursts or BurstDetector()
        self._sends_since_decrease = 1 << 62  # a decrease this many sends later: a new event
        self._event_top = 0.0  # the limit the current congestion event started from
        self._low_since: float | None = None  # since when the limit sits far below the cap
        self._in_flight = 0
        self._srtt: float | None = None
        self._next_send = -math.inf
        self._paused_until = -math.inf
        self._last_decrease = -math.inf
        self._closed = False
        self._queue: deque[_Turn] = deque()  # waiting acquirers, first come first served

    # --- what the progress view reads -----------------------------------------------------

    @property
    def limit(self) -> int:
        """Requests allowed in flight right now."""
        return min(self.max_concurrency, max(1, math.ceil(self._limit - 1e-9)))

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def closed(self) -> bool:
        return self._closed

    def pause_left(self) -> float:
        """Seconds until senders may go again (0 when not paused)."""
        return max(0.0, self._paused_until - anyio.current_time())

    def low_for(self) -> float:
        """Seconds the limit has sat at or below LOW_SHARE of max_concurrency after slow start
        (0 when it does not): a burst that will not end, or an endpoint that allows less."""
        return 0.0 if self._low_since is None else anyio.current_time() - self._low_since

    def share_429(self) -> float:
        """The 429 share of the recent sends (burst.py), for the progress view."""
        return self._bursts.share(anyio.current_time())

    # --- acquire / release ----------------------------------------------------------------

    async def acquire(self) -> Ticket | None:
        """Wait for a free slot, the pacing interval and the end of any pause, in arrival order.
        None once the limiter is closed."""
        if self._closed:
            return None
        if not self._queue:  # nobody ahead: no await at all when a send may go now
            ticket = self._try_take(anyio.current_time())
            if ticket is not None:
                return ticket
        turn = _Turn()
        self._queue.append(turn)
        try:
            return await self._wait_turn(turn)
        finally:
            # Taken, closed or cancelled: either way the next in line may be able to go now.
            self._queue.remove(turn)
            self._wake_head()

    def release(self, ticket: Ticket, signal: Signal, pause_s: float = 0.0) -> None:
        """Give the slot back and learn from how the request went. Synchronous on purpose, so
        it also runs from a `finally` under cancellation. `pause_s`: a 429's Retry-After, which
        every sender waits out when the 429 is part of a burst."""
        # Grow only when the limit is (nearly) used: an idle limiter learns nothing about the
        # server, and inflating it would let a sudden burst through.
        saturated = self._in_flight >= 0.8 * self.limit
        self._in_flight -= 1
        now = anyio.current_time()
        if signal is Signal.OK:
            rtt = now - ticket.sent_at
            self._srtt = rtt if self._srtt is None else 0.9 * self._srtt + 0.1 * rtt
            if saturated:
                self._grow()
        elif signal is Signal.RATE_LIMITED:
            self._bursts.rate_limited(ticket.sent_at)
            if self._bursts.is_burst(now):
                self._paused_until = max(self._paused_until, now + pause_s)
                if ticket.sent_at >= self._last_decrease:
                    self._shrink(now)
        self._watch_low(now)
        self._wake_head()

    def close(self) -> None:
        """Stop handing out slots (the quota breaker); every waiter returns None at once."""
        self._closed = True
        for turn in self._queue:
            turn.wake()

    # --- internals ------------------------------------------------------------------------

    def _grow(self) -> None:
        if self._slow_start:
            step = 1.0
        else:
            self._since_step += 1
            if self._since_step >= self._probe:
                self._step *= 2
                self._since_step = 0
            step = self._step
        self._limit = min(float(self.max_concurrency), self._limit + step)

    def _shrink(self, now: float) -> None:
        factor = self._exit_decrease if self._slow_start else self._decrease
        self._slow_start = False
        before = self._limit
        if self._sends_since_decrease >= self._bursts.window:  # not the last event going on
            self._event_top = before
        self._sends_since_decrease = 0
        self._limit = max(self._min_limit, before * factor)
        # Additive increase that wins the event back over `probe_successes` successes.
        self._step = max((self._event_top - self._limit) / self._probe, 1e-3)
        self._since_step = 0
        self._last_decrease = now

    def _watch_low(self, now: float) -> None:
        is_low = not self._slow_start and self.limit <= LOW_SHARE * self.max_concurrency
        if not is_low:
            self._low_since = None
        elif self._low_since is None:
            self._low_since = now

    def _try_take(self, now: float) -> Ticket | None:
        """Take a slot if pacing, pause and limit allow a send now."""
        if now < max(self._paused_until, self._next_send) or self._in_flight >= self.limit:
            return None
        self._in_flight += 1
        self._sends_since_decrease += 1
        self._bursts.sent(now)
        if self._srtt is not None:
            # Slow start paces at twice the window rate (as TCP does) so that the window, not
            # the pacing, is what fills up and drives the doubling.
            gain = 2.0 if self._slow_start else 1.0
            self._next_send = now + self._srtt / (gain * self._limit)
        return Ticket(sent_at=now)

    async def _wait_turn(self, turn: _Turn) -> Ticket | None:
        """Sleep until this turn heads the queue, then until a send may go."""
        while True:
            if self._closed:
                return None
            timeout: float | None = None
            if self._queue[0] is turn:
                now = anyio.current_time()
                ticket = self._try_take(now)
                if ticket is not None:
                    return ticket
                not_before = max(self._paused_until, self._next_send)
                if now < not_before:  # else all slots are taken: a release wakes us
                    timeout = not_before - now
            await self._wait(turn, timeout)

    async def _wait(self, turn: _Turn, timeout: float | None) -> None:
        """One sleep of a waiter (its own method so tests can count wake-ups)."""
        await turn.wait(timeout)

    def _wake_head(self) -> None:
        if self._queue:
            self._queue[0].wake()


class _Turn:
    """One waiting acquirer: woken when it reaches the head of the queue, when a slot may have
    freed up while it is the head, and on close."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = anyio.Event()

    def wake(self) -> None:
        self._event.set()

    async def wait(self, timeout: float | None) -> None:
        if timeout is None:
            await self._event.wait()
        else:
            with anyio.move_on_after(timeout):
                await self._event.wait()
        if self._event.is_set():  # an Event cannot be cleared: arm a fresh one
            self._event = anyio.Event()
