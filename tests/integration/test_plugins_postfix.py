"""Plug-ins from outside the tree, through the real Postfix and clamd: the two packages under
examples/ (installed into the test venv by ./run.sh) are found through their entry points and
work with nothing but a config table.

- `examples/feature-hello`: `[hello] greeting` adds `X-Hello` to every delivered message through
  the post-decision hook; a refused message never gets it; a bad greeting is a config error naming
  `hello.greeting`.
- `examples/engine-keyword`: `type = "keyword"` votes spam on its words and clean otherwise.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from tests.conftest import MailStack
from tests.harness.clamd import Clamd
from tests.harness.messages import EICAR, HAM, mail
from tests.harness.quorum import engine_table
from tests.harness.sink import delivered, engines_header
from tests.harness.smtp_client import send

pytestmark = pytest.mark.integration


def test_the_examples_are_installed_as_entry_points() -> None:
    """./run.sh installs them; without them the tests below would test nothing."""
    assert "hello" in {ep.name for ep in entry_points(group="quorum.features")}
    assert "keyword" in {ep.name for ep in entry_points(group="quorum.engines")}


def sent(stack: MailStack, body: bytes, subject: str = "Lunch tomorrow") -> tuple[int, str]:
    token = uuid.uuid4().hex
    result = send(stack.postfix.smtp_port, "alice@example.com", ["bob@example.org"], mail(token, body, subject))
    return result.code, token


def test_feature_hello_adds_its_header_to_delivered_mail_only(mail_stack: MailStack, clamd: Clamd) -> None:
    body = '[hello]\ngreeting = "Hello from a plug-in"\n\n' + engine_table("clamav", "clamav", address=clamd.address)
    mail_stack.start(body)
    code, token = sent(mail_stack, HAM)
    assert code == 250
    msg = delivered(mail_stack.sink, token)
    assert msg.header_all("X-Hello") == ["Hello from a plug-in"]
    assert msg.header("X-Quorum-Verdict") == "clean"
    code, token = sent(mail_stack, HAM + b"\r\n" + EICAR)
    assert code == 554  # refused: the post-decision hook never ran for it


def test_engine_keyword_votes_with_the_others(mail_stack: MailStack, clamd: Clamd) -> None:
    body = engine_table("clamav", "clamav", address=clamd.address) + engine_table(
        "words", "keyword", words=["casino", "Cheap Watches"]
    )
    mail_stack.start(body)
    code, token = sent(mail_stack, HAM)
    assert code == 250
    ham = delivered(mail_stack.sink, token)
    assert engines_header(ham)["words"] == "clean(0.00/1.00)" and ham.header("X-Quorum-Verdict") == "clean"
    code, token = sent(mail_stack, b"Win big at the CASINO tonight!")
    assert code == 250
    spam = delivered(mail_stack.sink, token)
    assert engines_header(spam)["words"] == "spam(casino)"
    assert (spam.header("X-Quorum-Verdict") or "").startswith("spam")


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ('[hello]\ngreeting = ""\n', "hello.greeting"),
        ('[hello]\ngreeting = "' + "x" * 65 + '"\n', "hello.greeting"),
        ('[hello]\ngreeting = "caf\u00e9"\n', "hello.greeting"),
        ('[hello]\ngreeting = "hi"\ngretting = "typo"\n', "hello.gretting"),
        ('[engines.words]\ntype = "keyword"\n', "engines.words.words"),
        ('[engines.words]\ntype = "keyword"\nwords = [1]\n', "engines.words.words[0]"),
    ],
)
def test_plug_in_config_errors_name_their_key(tmp_path: Path, table: str, key: str) -> None:
    path = tmp_path / "quorum.toml"
    path.write_text(table, encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "quorum", "check-config", "-c", str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode != 0 and key in out.stdout + out.stderr, out
    assert "Traceback" not in out.stderr
