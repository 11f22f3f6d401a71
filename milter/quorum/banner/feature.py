"""The banner feature: `[banner]` (quorum.banner.settings), `[domains."d".banner]` and its stage,
which runs in the post-decision hook's first phase, before DKIM signing and ARC sealing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quorum.banner.settings import BannerSettings
from quorum.config.fields import Table

if TYPE_CHECKING:
    from quorum.pipeline.stages import Stage

TABLES: dict[str, Any] = {"banner": BannerSettings}


def parse(root: Table) -> BannerSettings | None:
    """None without a `[banner]` table (domain tables alone need one, even empty, to switch it on)."""
    if "banner" not in root.data:
        return None
    return root.model("banner", BannerSettings)


def build(config: Any, settings: BannerSettings) -> list[Stage]:
    from quorum.banner.stage import BannerStage

    return [BannerStage(settings)]
