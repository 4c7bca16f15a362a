"""The command line: ``python -m gateway`` (serve, demo, settings table) and the operators' API
client (``python -m gateway api``)."""
