"""The local Ray's ports: distinct, free, on loopback (no Ray started here)."""

import socket

from marlscale.cluster import LOOPBACK, OWN_PORTS, free_ports


def test_the_local_rays_ports_are_distinct_and_free():
    """`ray start` refuses two components on one port; probes closed one at a time could be
    handed the same port twice (a CI run once gave the GCS and the metrics exporter 50889)."""
    for _ in range(2000):  # probes closed one at a time repeat a port in about 0.3% of starts
        ports = free_ports(1 + len(OWN_PORTS))
        assert len(set(ports)) == len(ports), ports
    for port in free_ports(8):  # released when picked: each can be bound again
        with socket.socket() as probe:
            probe.bind((LOOPBACK, port))
