"""Hand one notice to the relay over SMTP with the null envelope sender `<>`."""

from __future__ import annotations

import smtplib
import socket


class SendError(Exception):
    """The relay did not take the notice; `permanent` for a 5xx answer (retrying would not help)."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class SmtpRelay:
    def __init__(self, host: str, port: int, timeout: float = 30.0, helo: str | None = None) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.helo = helo or socket.gethostname()  # smtplib's default, getfqdn(), may wait on DNS

    def __call__(self, to: str, data: bytes, smtputf8: bool = False) -> None:
        options = ["SMTPUTF8"] if smtputf8 else []
        try:
            with smtplib.SMTP(self.host, self.port, self.helo, timeout=self.timeout) as smtp:
                smtp.sendmail("", [to], data, mail_options=options)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()), (0, b""))
            raise SendError(f"{code} {_text(text)}", permanent=code >= 500) from exc
        except smtplib.SMTPResponseException as exc:
            raise SendError(f"{exc.smtp_code} {_text(exc.smtp_error)}", permanent=exc.smtp_code >= 500) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise SendError(f"relay {self.host}:{self.port}: {exc or type(exc).__name__}") from exc


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
