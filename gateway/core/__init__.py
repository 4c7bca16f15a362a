"""Pure decisions, no I/O: hostnames, header policy, admission, tokens, route records, the route
cache, time parsing, errors, and for WebSockets the frame scanner, close codes and
re-admission. Imports nothing else of the gateway."""
