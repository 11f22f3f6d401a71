"""A labelled corpus (ham/, spam/, virus/) built at test time from material no test here wrote:
SpamAssassin's sample spam and non-spam, a real 1999 mail from libreadline8's docs, two Usenet
articles shipped with vim, GTUBE in several encodings (one mbox of two), and the Debian
clamav-testfiles (the ClamAV test program, raw and in archives, as attachments, plus the package's
own mail and mbox files). Used by `quorum evaluate`'s test, the cascade test and its bench."""

from __future__ import annotations

import hashlib
from email.message import EmailMessage
from pathlib import Path

from tests.harness.messages import GTUBE

SA_EXAMPLES = Path("/usr/share/doc/spamassassin/examples")
TESTFILES = Path("/usr/share/clamav-testfiles")
REAL_HAM = [
    SA_EXAMPLES / "sample-nonspam.txt",
    Path("/usr/share/doc/libreadline8/USAGE"),
    Path("/usr/share/vim/vim90/macros/maze/poster"),
    Path("/usr/share/vim/vim90/macros/hanoi/poster"),
]
ATTACHED = ["clam.exe", "clam.zip", "clam.7z", "clam.tar.gz", "clam.cab", "clam.arj", "clam.exe.bz2"]


def gtube_variants() -> dict[str, bytes]:
    def message(subject: str) -> EmailMessage:
        m = EmailMessage()
        m["From"], m["To"], m["Subject"] = "promo@shop.example", "bob@example.org", subject
        m["Message-ID"] = f"<{hashlib.md5(subject.encode()).hexdigest()}@shop.example>"
        return m

    plain = message("plain")
    plain.set_content("Buy now.\n\n" + GTUBE.decode() + "\n")
    b64 = message("base64")
    b64.set_content("Buy now.\n\n" + GTUBE.decode() + "\n", cte="base64")
    qp = message("quoted-printable")
    qp.set_content("Buy now = cheap.\n\n" + GTUBE.decode() + "\n", cte="quoted-printable")
    alt = message("alternative")
    alt.set_content("Buy now.\n" + GTUBE.decode() + "\n")
    alt.add_alternative(f"<html><body><p>Buy now.</p><p>{GTUBE.decode()}</p></body></html>", subtype="html")
    return {
        "gtube-plain.eml": bytes(plain),
        "gtube-base64.eml": bytes(b64),
        "gtube-alternative.eml": bytes(alt),
        "gtube-qp.eml": bytes(qp),
    }


def attachment(name: str) -> bytes:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "sender@example.net", "bob@example.org", f"the file {name}"
    m.set_content("See the attached file.\n")
    m.add_attachment((TESTFILES / name).read_bytes(), maintype="application", subtype="octet-stream", filename=name)
    return bytes(m)


def build_corpus(root: Path) -> None:
    for label in ("ham", "spam", "virus"):
        (root / label).mkdir(parents=True)
    for path in REAL_HAM:
        (root / "ham" / f"{path.parent.name}-{path.name}").write_bytes(path.read_bytes())
    (root / "spam" / "sample-spam.txt").write_bytes((SA_EXAMPLES / "sample-spam.txt").read_bytes())
    variants = gtube_variants()
    for name in ("gtube-plain.eml", "gtube-base64.eml"):
        (root / "spam" / name).write_bytes(variants[name])
    mbox = b"".join(
        b"From promo@shop.example Mon Jan  1 00:00:00 2024\n" + variants[n].replace(b"\r\n", b"\n") + b"\n"
        for n in ("gtube-alternative.eml", "gtube-qp.eml")
    )
    (root / "spam" / "gtube.mbox").write_bytes(mbox)
    for name in ATTACHED:
        (root / "virus" / f"{name}.eml").write_bytes(attachment(name))
    (root / "virus" / "clam.mail").write_bytes((TESTFILES / "clam.mail").read_bytes())
    (root / "virus" / "clam.exe.mbox.base64").write_bytes((TESTFILES / "clam.exe.mbox.base64").read_bytes())


def wire(raw: bytes) -> bytes:
    """The message as a milter gets it from Postfix: CRLF line ends, no mbox "From " line."""
    if raw.startswith(b"From "):
        raw = raw.split(b"\n", 1)[1]
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def messages(root: Path) -> list[tuple[str, str, bytes]]:
    """(name, truth, raw) as the corpus reader should see them: mbox split by hand here."""
    out = []
    for label in ("ham", "spam", "virus"):
        for path in sorted((root / label).iterdir()):
            raw = path.read_bytes()
            if path.name == "gtube.mbox":
                parts = raw.split(b"From promo@shop.example Mon Jan  1 00:00:00 2024\n")[1:]
                out += [(f"{label}/{path.name}#{i}", label, wire(p)) for i, p in enumerate(parts, 1)]
            else:
                out.append((f"{label}/{path.name}", label, wire(raw)))
    return out
