"""Test harness: real services (Postfix, clamd, rspamd, spamd, Redis, DNS, Quorum) on 127.0.0.1."""
