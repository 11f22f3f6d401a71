"""Find and render the template for a notice: `<dir>/<tenant>/<event>[-<audience>].txt`, then
`<dir>/<event>[-<audience>].txt`, then the package default `<event>.txt`.

An operator template that fails in any way (syntax, undefined name, sandbox violation, time, size)
is logged at error and the package default is used, so a notice is still sent. Templates are read
on every notice, so edits apply at once.

A template is Jinja2 text (sandboxed, no autoescape, undefined names are errors). An optional first
line `Subject: ...` sets the subject. Variables: event, audience (admin|recipient|sender), to,
sender ("" for <>), recipients (list), subject (RFC 2047 decoded), client ("name [ip]"), client_ip,
queue_id, verdict, virus_name (joined), virus_names (list), rule, reason, date (RFC 5322),
tenant, headers (list of [name, value]: From/To/Cc/Subject/Date/Message-ID of the original);
for `digest`: messages (list of {queue_id, date, sender, subject, reason}) and message_count.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import Template

from quorum.notify.isolate import render_isolated
from quorum.notify.sandbox import RenderError, environment, render_source
from quorum.notify.settings import ALL_EVENTS

log = logging.getLogger("quorum.notify")

MAX_TEMPLATE = 64 << 10
MAX_SUBJECT = 200
_SUBJECT = re.compile(r"\ASubject:[ \t]*([^\n]*)\n(?:[ \t]*\n)?", re.IGNORECASE)
_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
DEFAULT_SUBJECTS = {
    "virus": "Virus found in a message",
    "quarantine": "A message was held",
    "rule": "A message was refused by a filter rule",
    "spam_reject": "A message was refused as spam",
    "digest": "Messages held for you",
}

Isolate = Callable[[str, Mapping[str, Any], int, float], str]


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str
    template: str  # which file was used ("default:virus.txt" for the package's)


def default_source(event: str) -> str:
    return resources.files("quorum.notify").joinpath("templates", f"{event}.txt").read_text(encoding="utf-8")


@functools.cache
def default_template(event: str) -> Template:
    """The package's template for `event`, compiled once (it is trusted: rendered in process)."""
    return environment().from_string(default_source(event))


def split_subject(text: str, event: str) -> tuple[str, str]:
    """An optional first line `Subject: ...` (then an optional blank line) sets the subject."""
    match = _SUBJECT.match(text)
    subject, body = (match.group(1), text[match.end() :]) if match else (DEFAULT_SUBJECTS[event], text)
    subject = " ".join(subject.split())[:MAX_SUBJECT] or DEFAULT_SUBJECTS[event]
    return subject, body


class Renderer:
    def __init__(
        self,
        directory: Path | None = None,
        max_size: int = 65536,
        timeout: float = 2.0,
        isolate: Isolate = render_isolated,
    ) -> None:
        self.directory = directory
        self.max_size = max_size
        self.timeout = timeout
        self.isolate = isolate
        self.errors = 0

    def candidates(self, event: str, audience: str, tenant: str) -> list[Path]:
        if self.directory is None or event not in ALL_EVENTS:
            return []
        names = [f"{event}-{audience}.txt", f"{event}.txt"]
        dirs = [self.directory]
        domain = tenant.strip().lower().rstrip(".")
        if domain and _DOMAIN.match(domain):  # never a path: "..", "/" or empty labels are not domains
            dirs.insert(0, self.directory / domain)
        return [d / n for d in dirs for n in names]

    def render(self, event: str, audience: str, tenant: str, variables: Mapping[str, Any]) -> Rendered:
        for path in self.candidates(event, audience, tenant):
            if not path.is_file():
                continue
            try:
                source = self._read(path)
                text = self.isolate(source, variables, self.max_size, self.timeout)
                return Rendered(*split_subject(text, event), str(path))
            except RenderError as exc:
                self.errors += 1
                log.error("notify: template %s failed, using the default: %s", path, exc)
            break  # the most specific existing template failed: the default, not a less specific one
        text = render_source(default_template(event), variables, self.max_size)
        return Rendered(*split_subject(text, event), f"default:{event}.txt")

    def _read(self, path: Path) -> str:
        try:
            with path.open("rb") as f:
                data = f.read(MAX_TEMPLATE + 1)
        except OSError as exc:
            raise RenderError(f"cannot read: {exc.strerror or exc}") from exc
        if len(data) > MAX_TEMPLATE:
            raise RenderError(f"larger than {MAX_TEMPLATE} bytes")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RenderError(f"not UTF-8 ({exc.reason})") from exc
