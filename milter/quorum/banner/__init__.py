"""Banners and disclaimers: an external-sender warning on inbound mail, a footer on outbound mail,
inserted MIME-correctly before DKIM signing (quorum.banner.insert does the MIME work)."""
