"""What the pipeline needs of a recipient domain's policy, and of whatever resolves it.

The tenants feature implements both (`quorum.tenants.EffectivePolicy`, `TenantPolicies`); the
composition root hands the pipeline its resolver. The pipeline reads only these members: the
decision rules, the reply texts, which engines scan (with the domain's overrides), whether
scanning is bypassed, and the fingerprint (equal fingerprints may share one transaction).
Features that read their own per-domain values get the full object from the tenants feature.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from quorum.config.model import EngineSettings, PolicySettings, ReplyTexts


class TenantPolicy(Protocol):
    @property
    def domain(self) -> str | None: ...  # the tenant entry that applied; None: the global policy

    @property
    def fingerprint(self) -> str: ...

    @property
    def policy(self) -> PolicySettings: ...

    @property
    def replies(self) -> ReplyTexts: ...

    @property
    def bypass(self) -> bool: ...

    @property
    def extensions(self) -> Mapping[str, Any]: ...  # features' per-domain values, by feature name

    def uses_engine(self, name: str) -> bool: ...

    def engine_settings(self, configured: Iterable[EngineSettings]) -> dict[str, EngineSettings]: ...


class TenantDirectory(Protocol):
    @property
    def global_policy(self) -> TenantPolicy: ...

    def policy_for(self, recipient: str) -> TenantPolicy: ...

    def close(self) -> None: ...
