"""Verdict cache for outbreaks: antivirus verdicts by content hash and signature version."""
