"""Pure decisions, no I/O: hostnames, header policy, admission, tokens, route records, the route
cache, time parsing and errors. Imports nothing else of the gateway."""
