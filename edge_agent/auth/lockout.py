"""Keypad lockout, pure: after ``max_failures`` wrong PINs in a row the keypad refuses input
for ``lockout_s``.

A booking PIN has 7 MAC digits and the verifier accepts at most 49 start slots, so one guess
succeeds with probability at most 5e-6 (protocols.pins docstring); five guesses per five
minutes makes an online brute force take years. Only a PIN the agent accepts clears the
failures: a real PIN it refuses (used, revoked, early, late) neither counts nor clears
(:class:`edge_agent.auth.authorizer.Authorizer`), so a known old PIN typed between guesses
does not reset the count.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class Lockout:
    max_failures: int = 5
    lockout_s: float = 300.0
    failures: int = 0
    locked_until: float | None = None

    def locked(self, mono: float) -> bool:
        return self.locked_until is not None and mono < self.locked_until

    def record(self, *, accepted: bool, mono: float) -> Lockout:
        """The state after one PIN attempt at ``mono``."""
        if accepted:
            return replace(self, failures=0, locked_until=None)
        failures = self.failures + 1
        if failures >= self.max_failures:
            return replace(self, failures=0, locked_until=mono + self.lockout_s)
        return replace(self, failures=failures)
