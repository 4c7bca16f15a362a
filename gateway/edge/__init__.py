"""The preview listener: the server, the HTTP and WebSocket relays (the aiohttp relay and the
raw tunnel, both registered with the WebSocket hub), the upstream pool and the error pages."""
