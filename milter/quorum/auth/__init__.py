"""Sender authentication (SPF, DKIM, DMARC), Authentication-Results, DNSBL and access lists."""
