"""The sliding replay window of §8.4 (RFC 6479's acceptance rule), also used for envelopes (§6.4)."""

REJECT_AFTER_MESSAGES = 2**64 - 2**13 - 1


class ReplayWindow:
    """Accepts a counter when it is new and either beyond every accepted one or less than `width` behind.

    Bit i of `seen` records whether `greatest - i` was accepted. RFC 6479 keeps a ring of blocks for
    speed; the acceptance rule, which is what interoperation depends on, is the same.
    """

    def __init__(self, width: int):
        self.width = width
        self.greatest: int | None = None
        self.seen = 0

    def would_accept(self, counter: int) -> bool:
        if counter >= REJECT_AFTER_MESSAGES:
            return False
        if self.greatest is None or counter > self.greatest:
            return True
        behind = self.greatest - counter
        return behind < self.width and not (self.seen >> behind) & 1

    def record(self, counter: int) -> None:
        """Call only after `would_accept` and after the message authenticated (§8.4 step 6)."""
        if self.greatest is None:
            self.greatest, self.seen = counter, 1
        elif counter > self.greatest:
            shift = counter - self.greatest
            self.seen = ((self.seen << shift) | 1) & ((1 << self.width) - 1) if shift < self.width else 1
            self.greatest = counter
        else:
            self.seen |= 1 << (self.greatest - counter)
