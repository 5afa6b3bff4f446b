import pytest

from harness import start_rendezvous


@pytest.fixture
def rendezvous(tmp_path):
    """A real parley-rendezvous on 127.0.0.1, port 0, with a STUN responder; stopped after the test."""
    server = start_rendezvous(tmp_path, "--stun-listen", "127.0.0.1:0")
    yield server
    server.process.stop()
