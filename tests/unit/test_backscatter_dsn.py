"""Finding the bounced message's Message-ID in RFC 3464 reports and in common non-standard bounces."""

from __future__ import annotations

import base64

from quorum.backscatter.dsn import bounced_message_ids, normalise

ORIG = "<orig-123@Mail.Example.COM>"
WANT = ["<orig-123@mail.example.com>"]


def dsn(returned: str, *, headers_only: bool = False, ctype: str | None = None) -> bytes:
    kind = ctype or ("text/rfc822-headers" if headers_only else "message/rfc822")
    return (
        "From: MAILER-DAEMON@mx.remote.example\r\nTo: alice@example.com\r\nSubject: Undelivered Mail\r\n"
        "Message-ID: <bounce-1@mx.remote.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="BB"\r\n\r\n'
        "--BB\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--BB\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.remote.example\r\n\r\n"
        "Final-Recipient: rfc822; bob@remote.example\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        f"--BB\r\nContent-Type: {kind}\r\n\r\n{returned}\r\n--BB--\r\n"
    ).encode()


ORIGINAL = f"From: alice@example.com\r\nTo: bob@remote.example\r\nMessage-ID: {ORIG}\r\nSubject: hi\r\n\r\nbody\r\n"


def test_rfc3464_with_message_rfc822() -> None:
    assert bounced_message_ids(dsn(ORIGINAL)) == WANT


def test_rfc3464_with_rfc822_headers() -> None:
    assert bounced_message_ids(dsn(ORIGINAL.split("\r\n\r\n")[0], headers_only=True)) == WANT
    assert bounced_message_ids(dsn(ORIGINAL.split("\r\n\r\n")[0], ctype="message/rfc822-headers")) == WANT


def test_folded_message_id_header() -> None:
    folded = ORIGINAL.replace(f"Message-ID: {ORIG}", f"Message-ID:\r\n {ORIG}")
    assert bounced_message_ids(dsn(folded)) == WANT


def test_exim_bounce_text() -> None:
    raw = (
        "From: Mail Delivery System <Mailer-Daemon@mx.remote.example>\r\nMessage-Id: <E1x@mx.remote.example>\r\n"
        "Subject: Mail delivery failed: returning message to sender\r\n\r\n"
        "This message was created automatically by mail delivery software.\r\n\r\n"
        "A message that you sent could not be delivered to one or more of its recipients.\r\n\r\n"
        "------ This is a copy of the message, including all the headers. ------\r\n\r\n"
        "Return-path: <alice@example.com>\r\nReceived: from x\r\n"
        f"Message-Id: {ORIG}\r\nSubject: hi\r\n\r\nbody\r\n"
    ).encode()
    assert bounced_message_ids(raw) == WANT


def test_qmail_bounce_text() -> None:
    raw = (
        "From: MAILER-DAEMON@remote.example\r\nSubject: failure notice\r\n\r\n"
        "Hi. This is the qmail-send program at remote.example.\r\n"
        "<bob@remote.example>:\r\nSorry, no mailbox here by that name. (#5.1.1)\r\n\r\n"
        "--- Below this line is a copy of the message.\r\n\r\n"
        f"Return-Path: <alice@example.com>\r\nmessage-id: {ORIG}\r\n\r\nbody\r\n"
    ).encode()
    assert bounced_message_ids(raw) == WANT


def test_exchange_ndr_html_and_base64() -> None:
    html = (
        "<html><body><p>Delivery has failed to these recipients</p><p>Original message headers:</p>"
        f"<pre>Received: from x\nMessage-ID: &lt;{ORIG[1:-1]}&gt;\nSubject: hi</pre></body></html>"
    )
    encoded = base64.encodebytes(html.encode()).decode().replace("\n", "\r\n")
    raw = (
        "From: postmaster@remote.example\r\nMessage-ID: <ndr@remote.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/alternative; boundary="A"\r\n\r\n'
        "--A\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        f"{encoded}--A--\r\n"
    ).encode()
    assert bounced_message_ids(raw) == WANT


def test_quoted_headers_in_text() -> None:
    raw = f"Subject: bounce\r\n\r\nOriginal headers:\r\n> To: bob@remote.example\r\n> Message-ID: {ORIG}\r\n".encode()
    assert bounced_message_ids(raw) == WANT


def test_the_bounce_s_own_message_id_is_not_the_answer() -> None:
    raw = b"From: MAILER-DAEMON@x\r\nMessage-ID: <own@x>\r\n\r\nnothing quoted here\r\n"
    assert bounced_message_ids(raw) == []


def test_garbage_and_limits_never_raise() -> None:
    assert bounced_message_ids(b"") == []
    assert bounced_message_ids(b"\xff\xfe\x00garbage\r\n\r\n\x00\x01") == []
    assert bounced_message_ids(b'Content-Type: multipart/report; boundary="x"\r\n\r\n--x\r\nbroken') == []
    nested = (
        b'Content-Type: multipart/mixed; boundary="n"\r\n\r\n' + b"--n\r\nContent-Type: text/plain\r\n\r\nx\r\n" * 500
    )
    assert (
        bounced_message_ids(nested + f"--n\r\nContent-Type: text/plain\r\n\r\nMessage-ID: {ORIG}\r\n--n--".encode())
        == []
    )
    big = dsn(ORIGINAL)
    assert bounced_message_ids(b"X-Pad: " + b"a" * 2_000_000 + b"\r\n" + big) == []  # beyond max_bytes


def test_normalise() -> None:
    assert normalise(" <A.B@EXAMPLE.com> ") == "<A.B@example.com>"
    assert normalise("a@b") == "<a@b>"
    assert normalise("<a b@c>") == "" and normalise("") == "" and normalise("<" + "x" * 300 + ">") == ""
