"""§10.1 REPORT's optional `queue_delay_ms` in the Python peer: the wire format (28 and 30 bytes, 65535 for no
estimate, the PROTOCOL example byte for byte) and the receiver's estimate, fed per primary frame and carried by
every REPORT the peer sends."""

import asyncio
import time

import pytest

from parley_peer import control
from parley_peer.envelope import Hello
from parley_peer.identity import Identity
from parley_peer.invite import Invite, RendezvousURL
from parley_peer.media import Frame, MediaPayload
from parley_peer.peer import QUEUE_BASE_WINDOW, Link, Node, PeerOptions, ReportState

h = bytes.fromhex
EXAMPLE = h("01" "01020304" "11121314" "000000fa" "000003e8" "000003f2" "000a" "00001194" "01" "00" "000c")
FRAME = 960  # 20 ms at 48 kHz


# MARK: the wire format


def test_the_protocol_example_round_trips():
    report = control.Report(0x01020304, 0x11121314, 250, 1000, 1010, 10, 4500, control.MUTED, queue_delay_ms=12)
    assert report.encode() == EXAMPLE
    assert control.parse(EXAMPLE) == report


def test_a_28_byte_report_has_no_queue_delay():
    parsed = control.parse(EXAMPLE[:-2])
    assert parsed.queue_delay_ms is None
    assert parsed.jitter_us == 4500 and parsed.muted  # the rest as before
    assert control.parse(EXAMPLE[:-3]) is None  # shorter than 28 bytes: dropped
    assert control.parse(EXAMPLE[:-1]).queue_delay_ms is None  # 29 bytes: a partial field is none


def test_a_30_byte_report_and_longer():
    assert control.parse(EXAMPLE[:-2] + h("0000")).queue_delay_ms == 0
    assert control.parse(EXAMPLE[:-2] + h("fffe")).queue_delay_ms == 65534
    assert control.parse(EXAMPLE + b"later fields").queue_delay_ms == 12  # §10: longer is allowed


def test_65535_is_no_estimate():
    assert control.parse(EXAMPLE[:-2] + h("ffff")).queue_delay_ms is None
    none = control.Report(1, queue_delay_ms=None).encode()
    assert len(none) == 31 and none[-2:] == h("ffff")
    assert control.parse(none).queue_delay_ms is None
    # an estimate never goes out as "none"
    assert control.Report(1, queue_delay_ms=70000).encode()[-2:] == h("fffe")
    assert control.Report(1, queue_delay_ms=65535).encode()[-2:] == h("fffe")


# MARK: the estimate


def feed(state: ReportState, start: float, timestamp: int, frames: int, delay=lambda i: 0.0) -> tuple[float, int]:
    """`frames` primaries of 20 ms from `start` (monotonic s) and `timestamp`, the i-th held up `delay(i)` s;
    returns where the next frame starts."""
    for i in range(frames):
        state.note_primary(start + i * 0.02 + 0.05 + delay(i), (timestamp + i * FRAME) % 2**32, FRAME)
    return start + frames * 0.02, timestamp + frames * FRAME


def test_a_constant_transit_is_no_queue_even_across_the_timestamp_wrap():
    state = ReportState()
    assert state.queue_delay_ms is None
    feed(state, 1000.0, 2**32 - 100 * FRAME, 250)  # wraps after 2 s
    assert state.queue_delay == pytest.approx(0, abs=1e-6)
    assert state.queue_delay_ms == 0
    assert state.jitter == pytest.approx(0, abs=1e-3)  # the same transits feed the RFC 3550 jitter


def test_a_growing_queue_raises_the_estimate():
    state = ReportState()
    at, timestamp = feed(state, 50.0, 123456, 100)  # 2 s of a clean path
    feed(state, at, timestamp, 50, delay=lambda i: 0.1 * (i + 1) / 50)  # then 100 ms more over 1 s
    assert state.queue_delay_ms > 60  # it lags the queue by about 16 frames, well past 40 ms
    assert state.queue_delay_ms <= 100


def test_reaching_the_back_off_level_is_said_once():
    """§10.1: the frame whose estimate reaches 40 ms from below asks for a REPORT at once; the frames after it,
    still queued, do not (the periodic REPORTs carry the rest)."""
    state = ReportState()
    at, timestamp = feed(state, 50.0, 123456, 100)
    reached = [state.note_primary(at + i * 0.02 + 0.05 + 0.1 * (i + 1) / 50, (timestamp + i * FRAME) % 2**32, FRAME)
               for i in range(50)]
    assert reached.count(True) == 1
    assert state.queue_delay_ms >= 40


def test_the_base_moves_once_its_windows_pass():
    state = ReportState()
    # 5 s at 10 ms less transit, then the path gets 50 ms slower for good (a new route, not a queue).
    at, timestamp = feed(state, 0.0, 0, 250, delay=lambda i: -0.01)
    at, timestamp = feed(state, at, timestamp, 740, delay=lambda i: 0.04)  # arrivals until 19.87 s
    assert state.queue_delay_ms == 50  # the second window (from 10.04 s) has the first one's base as well
    assert QUEUE_BASE_WINDOW < state.base_window_start < 2 * QUEUE_BASE_WINDOW
    feed(state, at, timestamp, 100, delay=lambda i: 0.04)
    assert state.base_window_start > 2 * QUEUE_BASE_WINDOW  # a third window: the first one's base is gone
    assert state.queue_delay_ms == 0


def test_longer_packets_do_not_look_queued():
    """Transit counts to the frame's end: a sender that goes from 20 ms to 60 ms packets sends each 40 ms
    later after its first sample, and that is not a queue."""
    state = ReportState()
    at, timestamp = feed(state, 0.0, 0, 100)
    for i in range(30):  # 60 ms packets, each sent when its last sample is in
        state.note_primary(at + (i + 1) * 0.06 + 0.05 - 0.02, (timestamp + i * 3 * FRAME) % 2**32, 3 * FRAME)
    assert state.queue_delay_ms == 0


def test_a_sender_that_restarts_its_timestamps_is_no_queue():
    state = ReportState()
    at, timestamp = feed(state, 0.0, 0, 100)
    feed(state, at, (timestamp - 10 * 48000) % 2**32, 20)  # 10 s earlier: a transit 10 s larger
    assert state.queue_delay_ms == 0


def test_a_faster_path_is_the_base_at_once():
    state = ReportState()
    at, timestamp = feed(state, 0.0, 0, 100)
    feed(state, at, timestamp, 100, delay=lambda i: -0.03)
    assert state.queue_delay_ms == 0


def test_no_media_since_the_last_report_is_no_estimate():
    state = ReportState()
    assert state.queue_delay_for_report() is None  # none yet
    at, timestamp = feed(state, 0.0, 0, 50)
    assert state.queue_delay_for_report() == 0
    assert state.queue_delay_for_report() is None  # nothing came since: 65535, not the stale 0
    assert state.queue_delay_ms == 0  # while the status keeps showing the latest estimate
    feed(state, at + 5, timestamp + 250 * FRAME, 1)
    assert state.queue_delay_for_report() == 0


# MARK: in the peer: its REPORTs and its status


def test_reports_and_status_carry_the_queue_delay():
    me, other = Identity.generate(), Identity.generate()
    invite = Invite(bytes(range(32)), RendezvousURL.parse("ws://127.0.0.1:7777"))
    node = Node(invite, PeerOptions(identity=me))
    link = Link(node, other.identity_key, Hello(other.static_key, other.binding_signature, 1, (1, 2), "other"),
                member_id=1, version=2)
    status = link.status()
    assert status["queue_delay_ms"] is None and status["peer_queue_delay_ms"] is None
    assert control.parse(link.make_report(time.monotonic())).queue_delay_ms is None

    now = time.monotonic()
    for i in range(20):  # a queue of 60 ms builds up in the peer's uplink
        payload = MediaPayload(Frame(7 + i, 1000 + i * FRAME, FRAME, b"\xf8\x01"))
        link.on_media(payload.encode(), now + i * 0.02 + 0.003 * i)
    sent = control.parse(link.make_report(now + 0.5))
    assert sent.queue_delay_ms == link.status()["queue_delay_ms"] > 20
    assert control.parse(link.make_report(now + 1.5)).queue_delay_ms is None  # no media since

    asyncio.run(link.on_control(control.Report(node.clock_ms(), queue_delay_ms=12).encode()))
    assert link.status()["peer_queue_delay_ms"] == 12
    asyncio.run(link.on_control(control.Report(node.clock_ms()).encode()[:-2]))  # a 28-byte REPORT
    assert link.status()["peer_queue_delay_ms"] is None
