"""§10.3 liveness: when a link counts as lost. Plain values without I/O: the link (peer.py) feeds in what arrives
and asks, on its timer, how long a silence it allows.

A link is lost when nothing authenticated arrived over its session for 2 s (REPORTs come every second), or for
1 s when packets had been arriving at least every 400 ms (media, or a DTX pause's REPORTs every 250 ms: three or
more missing in a row are no longer bad luck). But while the peer's media comes through a member that fans it
out (§15.2: a frame of the peer verified within the last 2 s), only its REPORTs come over the link, a second
apart, however densely its last packets came: then the 2 s rule applies. Frames a member passed on are no sign
of life of the link itself: they are noted here only to choose the rule, never as a packet.
"""

from __future__ import annotations

from dataclasses import dataclass

LOST_AFTER = 2.0  # seconds of silence, when the peer's packets come a second apart (REPORTs only) ...
QUICK_LOST_AFTER = 1.0  # ... and when they came densely
DENSE_INTERVAL = 0.4  # packets this close together are dense
# How densely packets come is measured between arrivals at least this far apart, so that packets sent together
# (a REPORT and the LINKS that goes with it, §13.1) do not look dense; a DTX pause's REPORTs, 250–275 ms apart,
# are each measured.
SPACING_SAMPLE = 0.2
FANNED_RECENTLY = 2.0  # §10.3: a frame of the peer verified through a member this recently: the 2 s rule


@dataclass
class Liveness:
    sampled_at: float | None = None  # the latest arrival that the spacing was measured at
    spacing: float | None = None  # between the last two such arrivals
    fanned_in_at: float | None = None  # when a frame of the peer a member passed on last verified (§15.2)

    def packet(self, now: float) -> None:
        """An authenticated packet of the link's own session arrived (over its direct path or a relay, §13)."""
        if self.sampled_at is None:
            self.sampled_at = now
        elif now - self.sampled_at >= SPACING_SAMPLE:
            self.spacing, self.sampled_at = now - self.sampled_at, now

    def fanned_in(self, now: float) -> None:
        """A frame of the peer that a member passed on (FAN_DELIVER) verified: its media comes that way now."""
        self.fanned_in_at = now

    @property
    def dense(self) -> bool:
        return self.spacing is not None and self.spacing <= DENSE_INTERVAL

    def silence_limit(self, now: float) -> float:
        """The silence after which the link counts as lost at `now`."""
        fanned = self.fanned_in_at is not None and now - self.fanned_in_at < FANNED_RECENTLY
        return QUICK_LOST_AFTER if self.dense and not fanned else LOST_AFTER
