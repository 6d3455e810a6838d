"""Executor-side settings a node reads from its environment, checked without a cluster."""

from __future__ import annotations

import socket

import pytest

from tfos.cluster import node


def test_tensorboard_port_from_the_environment(monkeypatch):
    monkeypatch.delenv("TENSORBOARD_PORT", raising=False)
    assert node._tensorboard_port() == 0  # any free port
    with socket.socket() as probe:
        probe.bind(("", 0))
        free = probe.getsockname()[1]
    monkeypatch.setenv("TENSORBOARD_PORT", str(free))
    sock = node._reserve_port(node._tensorboard_port())
    try:
        assert sock.getsockname()[1] == free
        with pytest.raises(node.NodeStartError, match=f"cannot bind port {free} \\(TENSORBOARD_PORT\\)"):
            node._reserve_port(free)
    finally:
        sock.close()


@pytest.mark.parametrize("value", ["tb", "0", "70000"])
def test_a_bad_tensorboard_port_is_named(monkeypatch, value):
    monkeypatch.setenv("TENSORBOARD_PORT", value)
    with pytest.raises(node.NodeStartError, match=f"TENSORBOARD_PORT='{value}' is not a port number"):
        node._tensorboard_port()
