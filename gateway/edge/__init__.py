"""The preview listener: the server, the HTTP and WebSocket relays, the upstream pool and the
error pages."""
