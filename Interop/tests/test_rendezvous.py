"""The Python rendezvous client (§4) against the real parley-rendezvous: join proofs admitted and refused,
presence, relay to one member and to everyone, services in WELCOME, and the subprotocol negotiation."""

import asyncio
import os

import pytest
from websockets.asyncio.client import connect

from parley_peer.invite import Invite, RendezvousURL
from parley_peer.keys import RoomKeys
from parley_peer.rendezvous import (DELIVER, ERROR, ERROR_NAMES, EVERYONE, JOIN, MEMBER_JOINED, MEMBER_LEFT,
                                    RendezvousClient, RendezvousError, shard_path)


def invite_for(url: str) -> Invite:
    return Invite(os.urandom(32), RendezvousURL.parse(url.rstrip("/")))


async def next_event(client, kinds, timeout=5.0):
    async def first():
        async for event in client.events():
            if event.kind in kinds:
                return event
    return await asyncio.wait_for(first(), timeout)


def test_join_relay_and_presence(rendezvous):
    async def scenario():
        invite = invite_for(rendezvous.url)
        keys = RoomKeys.derive(invite.room_secret)
        alice, bob, carol = (RendezvousClient(invite, keys) for _ in range(3))
        welcome_a = await alice.connect()
        assert welcome_a.members == ()
        assert welcome_a.stun_servers == (f"127.0.0.1:{rendezvous.stun[1]}",)
        welcome_b = await bob.connect()
        assert welcome_b.members == (welcome_a.member_id,)
        joined = await next_event(alice, {MEMBER_JOINED})
        assert joined.member_id == welcome_b.member_id
        welcome_c = await carol.connect()
        assert set(welcome_c.members) == {welcome_a.member_id, welcome_b.member_id}
        await next_event(alice, {MEMBER_JOINED})
        await next_event(bob, {MEMBER_JOINED})
        await alice.send(welcome_b.member_id, b"to bob only")
        event = await next_event(bob, {DELIVER})
        assert (event.member_id, event.payload) == (welcome_a.member_id, b"to bob only")
        big = os.urandom(16379)  # §4.1: the largest SEND payload every server relays
        await carol.send(EVERYONE, big)
        for receiver in (alice, bob):
            event = await next_event(receiver, {DELIVER})
            assert (event.member_id, event.payload) == (welcome_c.member_id, big)
        await carol.close()
        for receiver in (alice, bob):
            assert (await next_event(receiver, {MEMBER_LEFT})).member_id == welcome_c.member_id
        # Nothing was echoed to the sender: alice's next delivery is bob's.
        await bob.send(EVERYONE, b"from bob")
        event = await next_event(alice, {DELIVER})
        assert event.payload == b"from bob"
        await alice.close()
        await bob.close()

    asyncio.run(scenario())


def test_bad_join_proof_is_refused(rendezvous):
    async def scenario():
        invite = invite_for(rendezvous.url)
        keys = RoomKeys.derive(invite.room_secret)
        forger = RoomKeys.derive(os.urandom(32))
        # The room id of one secret with a proof made by another key.
        mixed = RoomKeys(forger.room_key_seed, keys.signaling_key, keys.noise_psk, keys.mac_key)
        client = RendezvousClient(invite, mixed)
        client.room_keys = type("Keys", (), {"room_id": keys.room_id, "join_proof": mixed.join_proof})()
        with pytest.raises(RendezvousError, match="bad-proof") as error:
            await client.connect()
        assert not error.value.retryable

    asyncio.run(scenario())


def test_subprotocol_is_required(rendezvous):
    async def scenario():
        with pytest.raises(Exception):
            async with connect(rendezvous.url, subprotocols=["parley.v2"]) as websocket:
                await websocket.recv()

    asyncio.run(scenario())


def test_shard_path_is_checked_against_the_room(rendezvous):
    """§4.1: the Python client's shard path is accepted by the Swift server (the keys agree: a client whose key
    were wrong would be refused), and a connection routed by another room's key is refused as misrouted."""
    async def scenario():
        invite = invite_for(rendezvous.url)
        keys = RoomKeys.derive(invite.room_secret)
        other = RoomKeys.derive(os.urandom(32))
        good = RendezvousClient(invite, keys)
        assert (await good.connect()).member_id != 0
        path = shard_path(invite.rendezvous_url.request_path, other.room_id)
        async with connect(rendezvous.url.rstrip("/") + path, subprotocols=["parley.v1"]) as websocket:
            challenge = await websocket.recv()
            await websocket.send(bytes([JOIN]) + keys.room_id + keys.join_proof(challenge[1:]))
            error = await websocket.recv()
        assert error[0] == ERROR and int.from_bytes(error[1:3], "big") == 10
        assert ERROR_NAMES[10] == "misrouted" and b"shard key" in error[5:]
        await good.close()

    asyncio.run(scenario())
