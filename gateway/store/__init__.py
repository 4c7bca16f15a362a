"""The routing table: the store contract, the embedded and Redis stores, and the route lookup
(cache, coalescing, invalidations) that the edge reads through."""
