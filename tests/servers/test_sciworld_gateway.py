"""ScienceWorld's Java gateway listens on a loopback port that runs any Java it is sent: without its
token, another local process (a browser page's request, another user) gets nothing from it. Before
the token, an outside gateway client read the server's user name (and could have run anything)."""

from __future__ import annotations

import pytest
from py4j.java_gateway import GatewayParameters, JavaGateway
from py4j.protocol import Py4JError

from gymwire.servers.sciworld.jvm import JavaProcess


async def test_the_gateway_answers_only_with_its_token():
    java = JavaProcess(heap_mb=256, call_timeout_s=120)
    try:
        assert await java.call(lambda: java.gateway.jvm.java.lang.System.getProperty("java.version"))
        outsider = JavaGateway(gateway_parameters=GatewayParameters(port=java.gateway.gateway_parameters.port))
        with pytest.raises(Py4JError, match="Authentication"):
            outsider.jvm.java.lang.System.getProperty("user.name")
        outsider.close()
    finally:
        java.kill("the test is over")
