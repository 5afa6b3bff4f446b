"""Command line of the Python peer.

    python -m parley_peer invite --rendezvous ws://127.0.0.1:7777 [--tls-pin HEX] [--turn URI ...]
    python -m parley_peer join INVITE [--name N] [--tone HZ | --wav FILE | --silence] [--frame-ms 20]
                                      [--host-address IP ...] [--relay-only] [--relay-pairs N]
                                      [--role lead|follower] [--fan-out-through NAME_OR_ID_PREFIX]
                                      [--record-dir DIR] [--ogg] [--status FILE]
                                      [--expect-peers N --audio-seconds S] [--timeout S]

The invite can also come from the environment (PARLEY_INVITE) so it never shows in a process list.
Exit status 0 when the run ended as asked (--expect-peers reached, or the timeout without one), 1 otherwise.
"""

import argparse
import asyncio
import logging
import os
import sys

from . import audio, relay
from .invite import Invite, InviteError, RendezvousURL, TURNHint
from .peer import Node, PeerOptions, restrict_host_addresses, seed_for_role


def relay_pairs(text: str) -> int:
    """0 to 64, as parleyd's --relay-pairs."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 64:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of pairs from 0 to 64")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m parley_peer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("invite", help="print a new invite")
    make.add_argument("--rendezvous", required=True)
    make.add_argument("--tls-pin", help="SHA-256 of the rendezvous' SubjectPublicKeyInfo, hex")
    make.add_argument("--turn", action="append", default=[], help="turn:host:port?transport=udp[,user,password]")
    join = commands.add_parser("join", help="join a meeting")
    join.add_argument("invite", nargs="?", help="the invite (default: $PARLEY_INVITE)")
    join.add_argument("--name", default="python")
    source = join.add_mutually_exclusive_group()
    source.add_argument("--tone", type=float, default=440.0, help="send a sine tone of this frequency")
    source.add_argument("--wav", help="send this 16-bit mono 48 kHz WAV, then silence")
    source.add_argument("--silence", action="store_true")
    join.add_argument("--frame-ms", type=int, default=20, choices=(10, 20, 40))
    join.add_argument("--bitrate", type=int, default=32000)
    join.add_argument("--host-address", action="append", help="offer only these host addresses to ICE")
    join.add_argument("--relay-only", action="store_true",
                      help="offer only TURN relay candidates (and relay for nobody, as parleyd)")
    join.add_argument("--relay-pairs", type=relay_pairs, default=relay.DEFAULT_PAIRS, metavar="N",
                      help="carry at most N pairs of other members whose direct path failed (0: never; §13.3)")
    join.add_argument("--role", choices=("lead", "follower"), help="pick an identity that leads (or follows)")
    join.add_argument("--fan-out-through", metavar="NAME_OR_ID_PREFIX",
                      help="send our media as one signed copy through this member while it can carry it (it relays "
                      "and its LINKS lists two or more of our other peers), direct copies to the peers it does not "
                      "reach (version 4, §15.3; default: a copy per peer)")
    join.add_argument("--record-dir", help="write what each peer sent as <identity>.wav (and .opus with --ogg)")
    join.add_argument("--ogg", action="store_true")
    join.add_argument("--status", help="keep a JSON status file here")
    join.add_argument("--packet-log", help="CSV of every media payload's arrival")
    join.add_argument("--expect-peers", type=int, default=0)
    join.add_argument("--audio-seconds", type=float, default=0.0)
    join.add_argument("--timeout", type=float, default=None)
    join.add_argument("--verbose", action="store_true")
    args = parser.parse_args()

    if args.command == "invite":
        hints = []
        for spec in args.turn:
            uri, *credentials = spec.split(",")
            hints.append(TURNHint(TURNHint.parse_uri(uri)[3], *(credentials or ["", ""])))
        invite = Invite(os.urandom(32), RendezvousURL.parse(args.rendezvous),
                        bytes.fromhex(args.tls_pin) if args.tls_pin else None, tuple(hints))
        print(invite.text())
        return 0

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    text = args.invite or os.environ.get("PARLEY_INVITE", "")
    try:
        invite = Invite.parse(text)
    except InviteError as error:
        print(f"parley-peer: {error}", file=sys.stderr)
        return 2
    if args.wav:
        source = audio.WavSource(args.wav)
    elif args.silence:
        source = audio.SilenceSource()
    else:
        source = audio.ToneSource(args.tone)
    restrict_host_addresses(args.host_address)
    options = PeerOptions(name=args.name, source=source, frame_ms=args.frame_ms, bitrate=args.bitrate,
                          relay_only=args.relay_only, relay_pairs=args.relay_pairs, record_dir=args.record_dir, write_ogg=args.ogg,
                          status_path=args.status, expect_peers=args.expect_peers, audio_seconds=args.audio_seconds,
                          identity=seed_for_role(args.role == "lead") if args.role else None,
                          log_packets=args.packet_log, fan_out_through=args.fan_out_through)
    if args.record_dir:
        os.makedirs(args.record_dir, exist_ok=True)
    reason = asyncio.run(Node(invite, options).run(args.timeout))
    print(f"parley-peer: {reason}", file=sys.stderr)
    return 0 if reason == "done" or (reason == "timeout" and not args.expect_peers) else 1


if __name__ == "__main__":
    sys.exit(main())
