"""DNS zones for the tests, generated as text for tests/harness/dns.py (NSD)."""
