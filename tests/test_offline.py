"""The suite runs offline: the hub libraries are told so, and a connection off this machine fails loudly."""

import os
import socket
import threading

import pytest


def test_a_connection_off_this_machine_fails_loudly():
    with pytest.raises(ConnectionRefusedError, match="tests never reach the network"):
        socket.create_connection(("1.1.1.1", 443), timeout=2)  # a numeric address: no DNS lookup first
    from tmlib.core.hub import hub_reachable

    assert hub_reachable.__wrapped__() is False  # HF_HUB_OFFLINE: the hub check answers offline at once
    assert all(os.environ[k] == "1" for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


def test_this_machine_stays_reachable():
    """Jupyter kernels, the browser tests and the locks talk over loopback: the guard lets those through."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    threading.Thread(target=lambda: server.accept()[0].close(), daemon=True).start()
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    server.close()
