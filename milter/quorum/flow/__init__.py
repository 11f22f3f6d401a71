"""Flow control: how many messages one account, domain or client has in flight at once, shared by
every Quorum on the same Redis (leases, so a dead instance's slots come back)."""
