"""Which trials the GPU generates next. Pure: no torch, no I/O, no clock.

Order: trial index first, then a fixed hash order inside each index, so every batch mixes
concepts, layers, strengths and controls, and a sweep stopped half-way has results spread over
the whole grid rather than the first few cells.
"""

from __future__ import annotations

import hashlib
from collections import deque

from introspectd.protocol.trials import Trial


def _mix_key(trial: Trial) -> tuple[int, bytes]:
    return trial.spec.trial, hashlib.blake2b(trial.trial_id.encode(), digest_size=8).digest()


class Scheduler:
    def __init__(self, trials: list[Trial]) -> None:
        self._waiting = deque(sorted(trials, key=_mix_key))
        self._in_flight: dict[str, Trial] = {}
        self.num_done = 0

    def take(self, n: int) -> list[Trial]:
        """Up to `n` trials to start now."""
        out: list[Trial] = []
        while self._waiting and len(out) < n:
            trial = self._waiting.popleft()
            self._in_flight[trial.trial_id] = trial
            out.append(trial)
        return out

    def add(self, trials: list[Trial]) -> None:
        """More trials to generate (an adaptive sweep's next round), after those waiting."""
        self._waiting.extend(sorted(trials, key=_mix_key))

    def complete(self, trial_ids: list[str]) -> list[Trial]:
        """Mark trials generated; returns the ones that were in flight."""
        done = [t for t in (self._in_flight.pop(i, None) for i in trial_ids) if t is not None]
        self.num_done += len(done)
        return done

    def requeue_in_flight(self) -> int:
        """Put abandoned in-flight trials back at the front of the queue; returns how many."""
        abandoned = sorted(self._in_flight.values(), key=_mix_key)
        self._in_flight.clear()
        self._waiting.extendleft(reversed(abandoned))
        return len(abandoned)

    @property
    def is_finished(self) -> bool:
        return not self._waiting and not self._in_flight

    @staticmethod
    def vectors_needed(trials: list[Trial]) -> set[tuple[str, int]]:
        """(concept, layer) pairs these trials need, controls included (records carry the norm);
        a pooled control has neither (protocol/trials.py)."""
        return {(t.spec.concept, t.spec.layer) for t in trials if not t.spec.is_pooled}
