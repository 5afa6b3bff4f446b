"""An independent implementation of the Parley protocol, versions 1 to 4 (§13: relaying through a member,
signaling over the mesh; §14: chat and the recording notice, received; §15: fanning a voice out through a member),
written from docs/PROTOCOL.md.

Its purpose is to prove the specification complete: nothing here was learnt from the Swift sources.
Each module implements one section of docs/PROTOCOL.md and names it. Cryptography is libsodium's
through PyNaCl (plus Python's hashlib BLAKE2b, which is the same function), ICE is aioice (not
libnice), audio is libopus through opuslib, and the rendezvous client uses the `websockets` package.
The versions it offers in HELLO are `peer.SUPPORTED_VERSIONS`.
"""
