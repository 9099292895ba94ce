"""Is the judge endpoint refusing us, or answering its steady background of 429s?

A shared endpoint answers a few per cent of requests 429 whatever we send: other clients'
traffic. Backing off on each of those held the limiter at 1-2 requests in flight under 8%
random 429s, where 8 slots would have run 8 times faster. So the limiter (limiter.py) backs
off on a *burst*: more than BURST_SHARE of the last `window` requests sent answered 429.

The share is counted over requests *sent* (the last `window` sends, none older than
HORIZON_S), not over answers received: a 429 comes back in milliseconds, a judgement in
seconds, so counting answers as they arrive inflates the share whenever the send rate rises.
While fewer than half a window of sends is at hand (start-up, or a slow endpoint) the share is
taken over half a window, so a couple of 429s among few requests is not a burst.

At BURST_SHARE = 18% over 100 sends, 8% random 429s look like a burst about once in ten
thousand requests (a binomial tail), while a sustained refusal is one after ~18 requests.
The price: against a strict token bucket the limiter sits further past the edge than one that
backs off on every 429 (bench/RESULTS.md has both figures).
"""

from __future__ import annotations

from collections import deque

BURST_SHARE = 0.18
WINDOW = 100
# Sends older than this say nothing about now: after a burst ends, its 429s stop counting
# within this time even when the limiter sends slowly.
HORIZON_S = 30.0


class BurstDetector:
    def __init__(self, window: int = WINDOW, share: float = BURST_SHARE) -> None:
        if window < 2 or not 0 < share < 1:
            raise ValueError("window must be >= 2 and share in (0, 1)")
        self.window = window
        self.burst_share = share
        self._sends: deque[float] = deque(maxlen=window)  # send times of the last requests
        self._limited: deque[float] = deque()  # send times of those that were answered 429

    def sent(self, now: float) -> None:
        self._sends.append(now)

    def rate_limited(self, sent_at: float) -> None:
        """A 429 for the request sent at `sent_at`."""
        self._limited.append(sent_at)

    def share(self, now: float) -> float:
        """The 429 share of the recent sends (over at least half a window)."""
        while self._sends and self._sends[0] < now - HORIZON_S:
            self._sends.popleft()
        oldest = self._sends[0] if self._sends else now
        while self._limited and self._limited[0] < oldest:
            self._limited.popleft()
        return len(self._limited) / max(len(self._sends), self.window // 2)

    def is_burst(self, now: float) -> bool:
        return self.share(now) > self.burst_share
