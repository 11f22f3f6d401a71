"""Backscatter filter: accept a bounce only if it refers to mail sent from here (recorded Message-ID or BATV tag)."""
