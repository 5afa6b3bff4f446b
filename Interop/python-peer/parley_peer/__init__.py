"""An independent implementation of the Parley protocol, version 1, written from docs/PROTOCOL.md.

Its purpose is to prove the specification complete: nothing here was learnt from the Swift sources.
Each module implements one section of docs/PROTOCOL.md and names it. Cryptography is libsodium's
through PyNaCl (plus Python's hashlib BLAKE2b, which is the same function), ICE is aioice (not
libnice), audio is libopus through opuslib, and the rendezvous client uses the `websockets` package.
"""

PROTOCOL_VERSION = 1
