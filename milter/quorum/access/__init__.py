"""Local access rules (Postfix-style tables, header regex rules with RE2) and DNSBL checks."""
