"""The rendezvous' STUN responder (§4.5, `--stun-listen`) answers STUN clients we did not write: the `stun`
package from PyPI (its RFC 3489/5389 NAT-type client) and aioice's STUN codec."""

import asyncio
import os
import socket

import aioice.stun
import aiostun


def test_aiostun_reads_the_mapped_address(rendezvous):
    async def scenario():
        async with aiostun.Client(*rendezvous.stun, local_addr="127.0.0.1", local_port=0) as client:
            mapped = await client.get_mapped_address()
            local = client.get_local_addr()
        assert mapped, "no Binding success response"
        assert (mapped["ip"], mapped["port"]) == tuple(local[:2]), (mapped, local)

    asyncio.run(scenario())


def test_aioice_stun_codec(rendezvous):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        request = aioice.stun.Message(message_method=aioice.stun.Method.BINDING,
                                      message_class=aioice.stun.Class.REQUEST, transaction_id=os.urandom(12))
        request.add_fingerprint()
        sock.sendto(bytes(request), rendezvous.stun)
        data, source = sock.recvfrom(2048)
        assert source == rendezvous.stun
        response = aioice.stun.parse_message(data)  # checks the FINGERPRINT
        assert response.message_class == aioice.stun.Class.RESPONSE
        assert response.transaction_id == request.transaction_id
        assert response.attributes["XOR-MAPPED-ADDRESS"] == sock.getsockname()
        assert "FINGERPRINT" in response.attributes

        # An unknown comprehension-required attribute gets 420 with UNKNOWN-ATTRIBUTES (RFC 8489 §6.3.1.1).
        raw = bytearray(bytes(aioice.stun.Message(message_method=aioice.stun.Method.BINDING,
                                                  message_class=aioice.stun.Class.REQUEST,
                                                  transaction_id=os.urandom(12))))
        raw += bytes.fromhex("7f01 0004 00000000")
        raw[2:4] = (len(raw) - 20).to_bytes(2, "big")
        sock.sendto(bytes(raw), rendezvous.stun)
        error = aioice.stun.parse_message(sock.recvfrom(2048)[0])
        assert error.message_class == aioice.stun.Class.ERROR
        assert error.attributes["ERROR-CODE"][0] == 420
