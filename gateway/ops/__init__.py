"""Running the gateway: typed settings, logging and the access line, metrics, the expiry
sweeper."""
