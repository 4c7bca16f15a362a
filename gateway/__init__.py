"""preview-gateway: gives every port of a sandbox its own preview URL.

Layers, each importing only from the ones below it:

    cli, __main__                       composition: argv → Settings → uvloop → app.serve
    app                                 wiring: store, lookup, session, listeners, shutdown
    edge, control_api                   listeners (independent of each other)
    http_relay, ws_relay                move bytes; know nothing of routes or tokens
    routing_table, route_lookup, upstream   adapters: the only code that talks to Redis/sandboxes
    hostnames, headers, routes, route_cache, timeparse, api_models   pure core: no I/O
    errors, settings, log               foundation
"""

__version__ = "0.1.0"
