"""Connector: holds client sockets (TCP, WebSocket); send path, delivery, retransmit."""
