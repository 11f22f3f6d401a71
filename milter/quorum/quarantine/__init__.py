"""Quarantine management on Postfix's hold queue: list, show, release, delete and expire what Quorum held."""
