"""Outbound DKIM signing (issue 19): `[signing]`, `[[signing.keys]]`, `quorum dkim keygen|check`.

feature.py (tables, parse, build), settings.py (the models; key files read at load), keys.py
(PEM keys, key generation, TXT records), dkimsign.py (body hash and signatures), stage.py (the
post-decision hook), metrics.py, cli.py (`quorum dkim`).
"""
