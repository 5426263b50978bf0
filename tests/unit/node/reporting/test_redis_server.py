"""The head's redis-server never gets `maxmemory 0`, which Redis reads as "no limit"."""

from __future__ import annotations

import pytest

from rayguard_node.errors import RayguardError
from rayguard_node.reporting.redis_server import RedisServer, render_config


@pytest.mark.parametrize("maxmemory", [0, -1])
def test_server_refuses_an_unlimited_maxmemory(tmp_path, maxmemory):
    with pytest.raises(RayguardError) as caught:
        RedisServer(6390, "pw", maxmemory, tmp_path)
    assert "maxmemory" in str(caught.value) and "unlimited" in str(caught.value)


def test_config_refuses_an_unlimited_maxmemory(tmp_path):
    with pytest.raises(RayguardError):
        render_config(6390, "pw", 0, "127.0.0.1", tmp_path)
    assert "maxmemory 8388608\n" in render_config(6390, "pw", 8 << 20, "127.0.0.1", tmp_path)
