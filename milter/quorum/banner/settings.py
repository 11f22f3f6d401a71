"""`[banner]` and `[domains."d".banner]`, validated at load (the same models for both)."""

from __future__ import annotations

import html

from pydantic import Field, model_validator

from quorum.config.schema import Network, Settings, Size

MAX_TEXT = 4096  # a banner is a line or a paragraph; a page of text is a mistake in the config


class BannerText(Settings):
    """One banner as plain text and as HTML. `html` defaults to the text, escaped, in a paragraph;
    it is the operator's own markup, inserted as written (never anything from a message)."""

    text: str = Field(min_length=1, max_length=MAX_TEXT)
    html: str = Field("", max_length=4 * MAX_TEXT)

    @model_validator(mode="after")
    def _html(self) -> BannerText:
        if not self.html:
            escaped = html.escape(self.text).replace("\n", "<br>\n")
            object.__setattr__(self, "html", f"<p>{escaped}</p>")
        return self


class DomainBanner(Settings):
    """A domain's own banners (`[domains."d".banner]`): replace the global ones field by field;
    `enabled = false` turns both off for the domain."""

    enabled: bool = True
    external_warning: BannerText | None = None  # mail from outside to this domain
    footer: BannerText | None = None  # mail this domain's users send


class BannerSettings(Settings):
    """`[banner]`: which mail gets which banner.

    Outbound (a trusted submitter: an SMTP AUTH session or a client in `networks`) gets `footer`
    at the bottom, chosen by the sender's domain; inbound (everyone else) gets `external_warning`
    at the top, chosen by the recipients' domain. Messages above `max_size` are left as they are."""

    external_warning: BannerText | None = None
    footer: BannerText | None = None
    networks: tuple[Network, ...] = ()  # trusted submitters whose mail is outbound without AUTH
    max_size: Size = Field(10 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024)
    max_part: Size = Field(1024 * 1024, ge=1024, le=50 * 1024 * 1024)  # a text part larger than this is skipped
