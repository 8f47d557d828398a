"""LANCE network layer: the LWP protocol, the broker, replication and the client.

Subpackages are imported where they are used, so importing this package costs nothing.
"""
