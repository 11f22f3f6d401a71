"""Per-domain rate counters in Redis: atomic, one round trip, fail-open."""
