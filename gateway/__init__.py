"""preview-gateway: gives every port of a sandbox its own preview URL.

Layers, each importing only from the ones below it (enforced by the import-linter contract in
``pyproject.toml``; drawn in ``docs/architecture.md``):

    cli, app        command line and wiring: argv → Settings → uvloop → app.serve
    edge, control   the two listeners, independent of each other
    ops             settings, logging, metrics, the expiry sweeper
    store           the routing table (memory or Redis) and the cached route lookup
    core            pure decisions, no I/O: hostnames, header policy, admission, tokens, records
"""

__version__ = "0.1.0"
