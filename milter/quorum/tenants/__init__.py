"""Tenants: per-domain policy from `[domains."d"]` tables in the file and one Redis record per domain.

policies = TenantPolicies(config)            # once per config (re)load; thread-safe
policy = policies.policy_for("bob@example.com")
policy.fingerprint                            # equal fingerprints = one transaction may hold both
"""

from quorum.tenants.effective import EffectivePolicy, EngineOverride, GlobalLayer, effective, fingerprint, merge
from quorum.tenants.extensions import DomainExtension, register_extension
from quorum.tenants.names import DomainMatcher, DomainNameError, normalise_domain, normalise_pattern, recipient_domain
from quorum.tenants.resolver import TenantPolicies, TenantStats
from quorum.tenants.schema import DomainEntry, SchemaContext, parse_fragment
from quorum.tenants.settings import TenantSettings
from quorum.tenants.store import RedisTenantStore

__all__ = [
    "DomainEntry",
    "DomainExtension",
    "DomainMatcher",
    "DomainNameError",
    "EffectivePolicy",
    "EngineOverride",
    "GlobalLayer",
    "RedisTenantStore",
    "SchemaContext",
    "TenantPolicies",
    "TenantSettings",
    "TenantStats",
    "effective",
    "fingerprint",
    "merge",
    "normalise_domain",
    "normalise_pattern",
    "parse_fragment",
    "recipient_domain",
    "register_extension",
]
