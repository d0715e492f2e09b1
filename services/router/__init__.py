"""Router: consumes the bus; seq, store once, cursors, fan-out to connectors."""
