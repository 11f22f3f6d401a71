"""Notice templates: sandboxed (no Python internals), bounded (time, size, memory), defaults as fallback."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from quorum.notify.facts import NoticeFacts
from quorum.notify.isolate import render_isolated
from quorum.notify.sandbox import RenderError, render_source
from quorum.notify.settings import AUDIENCES, EVENTS
from quorum.notify.templates import DEFAULT_SUBJECTS, Renderer, split_subject
from quorum.notify.variables import decode_text, variables

FACTS = NoticeFacts(
    sender="alice@example.org",
    recipients=("bob@example.com", "carol@example.com"),
    subject="=?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=",
    client_ip="192.0.2.9",
    client_name="mx.example.org",
    queue_id="4XyZ1A",
    verdict="virus",
    virus_names=("Eicar-Signature",),
    rule="no-exe",
    reason="attachment type exe",
    tenant="example.com",
    header_summary=(("From", "Alice <alice@example.org>"), ("Subject", "=?utf-8?q?Gr=C3=BC=C3=9Fe?="), ("X-Spam", "x")),
    received_at=1_800_000_000.0,
)
VARS = variables("virus", "admin", "postmaster@example.com", FACTS.recipients, FACTS)

HOSTILE = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ sender.__class__ }}",
    "{{ recipients.__class__.__base__ }}",
    "{{ range.__globals__ }}",
    "{{ sender.mro() }}",
    "{{ ().__class__.mro }}",
    "{{ sender|attr('__class__') }}",
    "{{ '{0.__class__}'.format(sender) }}",
    "{{ recipients.append('x') }}",
    "{{ range(10**9)|list|length }}",
    "{% for x in range(10**9) %}{% endfor %}",
    "{% include '/etc/passwd' %}",
    "{% import 'os' as os %}",
    "{{ self.__init__.__globals__ }}",
    "{{ no_such_variable }}",
    "{{ unclosed",
]
NESTED_LOOPS = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"


@pytest.mark.parametrize("source", HOSTILE)
def test_sandbox_refuses_internals_and_abuse(source: str) -> None:
    with pytest.raises(RenderError):
        render_source(source, VARS, 65536)


def test_output_is_capped() -> None:
    with pytest.raises(RenderError, match="exceeds"):
        render_source("{% for i in range(5000) %}0123456789{% endfor %}", VARS, 1000)


def test_isolated_render_renders_variables() -> None:
    assert render_isolated("{{ sender }} -> {{ recipients|join(',') }}", VARS, 1000, 5.0) == (
        "alice@example.org -> bob@example.com,carol@example.com"
    )


def test_isolated_render_bounds_time() -> None:
    with pytest.raises(RenderError, match="longer than"):
        render_isolated(NESTED_LOOPS, VARS, 1000, 1.0)


def test_isolated_render_bounds_memory() -> None:
    with pytest.raises(RenderError):
        render_isolated("{{ ('x' * 100000) * 100000 }}", VARS, 1000, 5.0)


def test_isolated_render_reports_sandbox_errors() -> None:
    with pytest.raises(RenderError, match=r"SecurityError|UndefinedError"):
        render_isolated("{{ sender.__class__ }}", VARS, 1000, 5.0)


@pytest.mark.parametrize("event", EVENTS)
@pytest.mark.parametrize("audience", AUDIENCES)
def test_package_defaults_render_every_event_and_audience(event: str, audience: str) -> None:
    rendered = Renderer().render(event, audience, "example.com", variables(event, audience, "x@example.com", (), FACTS))
    assert rendered.template == f"default:{event}.txt"
    assert rendered.subject and "\n" not in rendered.subject
    assert "4XyZ1A" in rendered.body
    assert "{{" not in rendered.body and "{%" not in rendered.body


def test_default_virus_notice_shows_the_facts_and_the_header_summary() -> None:
    body = Renderer().render("virus", "admin", "example.com", VARS).body
    for text in ("Eicar-Signature", "alice@example.org", "bob@example.com, carol@example.com", "4XyZ1A"):
        assert text in body
    assert "mx.example.org [192.0.2.9]" in body
    assert "Subject: Grüße" in body  # decoded RFC 2047
    assert "X-Spam" not in body  # only From/To/Cc/Subject/Date/Message-ID of the original
    assert "Fri, 15 Jan 2027 08:00:00 +0000" in body


def test_sender_notices_do_not_name_the_rule_or_client() -> None:
    facts_vars = variables("rule", "sender", "alice@example.org", FACTS.recipients, FACTS)
    body = Renderer().render("rule", "sender", "example.com", facts_vars).body
    assert "no-exe" not in body and "192.0.2.9" not in body


def test_lookup_order_domain_then_global_then_default(tmp_path: Path) -> None:
    (tmp_path / "example.com").mkdir()
    (tmp_path / "virus.txt").write_text("Subject: global\n\nglobal {{ queue_id }}\n")
    renderer = Renderer(tmp_path, timeout=5.0)
    assert renderer.render("virus", "admin", "example.com", VARS).body == "global 4XyZ1A\n"
    (tmp_path / "example.com" / "virus.txt").write_text("Subject: domain {{ tenant }}\n\ndomain\n")
    rendered = renderer.render("virus", "admin", "example.com", VARS)
    assert (rendered.subject, rendered.body) == ("domain example.com", "domain\n")
    (tmp_path / "example.com" / "virus-recipient.txt").write_text("for you\n")
    rendered = renderer.render("virus", "recipient", "example.com", VARS)
    assert (rendered.subject, rendered.body) == (DEFAULT_SUBJECTS["virus"], "for you\n")
    assert renderer.render("rule", "admin", "example.com", VARS).template == "default:rule.txt"


def test_tenant_names_never_become_paths(tmp_path: Path) -> None:
    renderer = Renderer(tmp_path / "templates")
    for tenant in ("..", "../..", "a/b", "/etc", "", "ex ample.com"):
        for path in renderer.candidates("virus", "admin", tenant):
            assert path.parent == tmp_path / "templates"


@pytest.mark.parametrize(
    "source", [*HOSTILE, "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"]
)
def test_hostile_template_falls_back_to_the_default_and_logs(
    tmp_path: Path, source: str, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "virus.txt").write_text(source)
    renderer = Renderer(tmp_path, timeout=1.0)
    with caplog.at_level(logging.ERROR, "quorum.notify"):
        rendered = renderer.render("virus", "admin", "example.com", VARS)
    assert rendered.template == "default:virus.txt"
    assert "Eicar-Signature" in rendered.body
    assert renderer.errors == 1
    assert any("virus.txt failed, using the default" in r.getMessage() for r in caplog.records)


def test_oversized_or_binary_template_files_fall_back(tmp_path: Path) -> None:
    (tmp_path / "virus.txt").write_bytes(b"x" * (70 << 10))
    (tmp_path / "rule.txt").write_bytes(b"\xff\xfe bad")
    renderer = Renderer(tmp_path)
    assert renderer.render("virus", "admin", "", VARS).template == "default:virus.txt"
    assert renderer.render("rule", "admin", "", VARS).template == "default:rule.txt"
    assert renderer.errors == 2


def test_subject_line_is_one_line_and_capped() -> None:
    assert split_subject("Subject:  a   b \nbody\n", "virus") == ("a b", "body\n")
    assert split_subject("no subject line\n", "rule") == (DEFAULT_SUBJECTS["rule"], "no subject line\n")
    assert len(split_subject("Subject: " + "x" * 500 + "\n\nbody", "virus")[0]) == 200


def test_decoding_of_headers() -> None:
    assert decode_text("=?utf-8?q?Gr=C3=BC=C3=9Fe?=") == "Grüße"
    assert decode_text("=?bogus-charset?q?abc?=") == "=?bogus-charset?q?abc?="
    assert decode_text("line\r\n\tfolded\x00") == "line folded"
    assert decode_text("8bit \udcc3\udcbc") == "8bit ü"  # surrogate-escaped raw UTF-8 bytes
