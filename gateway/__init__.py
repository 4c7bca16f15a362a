"""preview-gateway: gives every port of a sandbox its own preview URL.

Layers, each importing only from the ones below it:

    cli, __main__, api_cli, demo        composition: argv → Settings → uvloop → app.serve
    app                                 wiring: store, lookup, sessions, listeners, shutdown
    edge, edge_pages, control_api       listeners (independent of each other)
    http_relay, ws_relay                move bytes; know nothing of tokens
    routing_table, route_lookup, upstream   adapters: the only code that talks to Redis/sandboxes
    hostnames, headers, admission, tokens, routes, route_cache, timeparse, api_models, openapi,
    api_keys                            pure core: decisions, no I/O
    errors, settings, log, metrics      foundation
"""

__version__ = "0.1.0"
