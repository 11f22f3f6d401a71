#!/usr/bin/env python3
"""Compose test sink: an SMTP server that accepts everything Postfix relays to it and
stores each message, plus a tiny HTTP API so tests on the host can read what arrived.

    SMTP  :25    accepts any sender/recipient; 8BITMIME, SMTPUTF8, SIZE, PIPELINING
    HTTP  :8025  GET /messages       -> JSON list [{id, mail_from, rcpt_to, received, size, data}]
                 GET /messages/<id>  -> the raw message (message/rfc822)
                 DELETE /messages    -> drop everything
                 GET /health         -> "ok"

Messages are kept as files in SINK_DIR (default /var/spool/sink): <id>.eml (raw bytes as
received after dot-unstuffing) and <id>.json (envelope).  `data` in the JSON list is the raw
message decoded as UTF-8 with invalid bytes replaced.  Standard library only.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SINK_DIR = Path(os.environ.get("SINK_DIR", "/var/spool/sink"))
SMTP_PORT = int(os.environ.get("SINK_SMTP_PORT", "25"))
HTTP_PORT = int(os.environ.get("SINK_HTTP_PORT", "8025"))
HOSTNAME = os.environ.get("SINK_HOSTNAME", "sink.quorum.test")
MAX_SIZE = 64 * 1024 * 1024
_counter = itertools.count(1)
_lock = threading.Lock()


def log(msg: str) -> None:
    print(f"sink: {msg}", flush=True)


def _store(mail_from: str, rcpts: list[str], data: bytes) -> str:
    with _lock:
        msg_id = f"{time.time_ns()}-{next(_counter)}"
        (SINK_DIR / f"{msg_id}.eml").write_bytes(data)
        meta = {"id": msg_id, "mail_from": mail_from, "rcpt_to": rcpts, "received": time.time(), "size": len(data)}
        tmp = SINK_DIR / f".{msg_id}.json.tmp"
        tmp.write_text(json.dumps(meta))
        tmp.rename(SINK_DIR / f"{msg_id}.json")
    return msg_id


def _addr(arg: str) -> str | None:
    m = re.match(r"(?i)^(?:FROM|TO):\s*<([^>]*)>", arg.strip())
    return m.group(1) if m else None


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    peer = writer.get_extra_info("peername")

    async def reply(text: str) -> None:
        writer.write(text.encode() + b"\r\n")
        await writer.drain()

    mail_from: str | None = None
    rcpts: list[str] = []
    try:
        await reply(f"220 {HOSTNAME} ESMTP quorum-sink")
        while True:
            line = await reader.readline()
            if not line:
                return
            cmd, _, arg = line.decode("utf-8", "replace").rstrip("\r\n").partition(" ")
            verb = cmd.upper()
            if verb == "EHLO":
                await reply(
                    f"250-{HOSTNAME}\r\n250-PIPELINING\r\n250-SIZE {MAX_SIZE}\r\n250-8BITMIME\r\n"
                    "250-SMTPUTF8\r\n250 ENHANCEDSTATUSCODES"
                )
            elif verb == "HELO":
                await reply(f"250 {HOSTNAME}")
            elif verb == "MAIL":
                addr = _addr(arg)
                if addr is None:
                    await reply("501 5.5.4 Syntax: MAIL FROM:<address>")
                    continue
                mail_from, rcpts = addr, []
                await reply("250 2.1.0 Ok")
            elif verb == "RCPT":
                addr = _addr(arg)
                if mail_from is None:
                    await reply("503 5.5.1 Need MAIL first")
                elif addr is None:
                    await reply("501 5.5.4 Syntax: RCPT TO:<address>")
                else:
                    rcpts.append(addr)
                    await reply("250 2.1.5 Ok")
            elif verb == "DATA":
                if mail_from is None or not rcpts:
                    await reply("503 5.5.1 Need MAIL and RCPT first")
                    continue
                await reply("354 End data with <CR><LF>.<CR><LF>")
                chunks: list[bytes] = []
                while True:
                    dl = await reader.readline()
                    if not dl:
                        return
                    if dl in (b".\r\n", b".\n"):
                        break
                    chunks.append(dl[1:] if dl.startswith(b".") else dl)
                msg_id = _store(mail_from, rcpts, b"".join(chunks))
                log(f"stored {msg_id} from=<{mail_from}> to={rcpts} peer={peer}")
                await reply(f"250 2.0.0 Ok: queued as {msg_id}")
                mail_from, rcpts = None, []
            elif verb == "RSET":
                mail_from, rcpts = None, []
                await reply("250 2.0.0 Ok")
            elif verb == "NOOP":
                await reply("250 2.0.0 Ok")
            elif verb == "QUIT":
                await reply("221 2.0.0 Bye")
                return
            else:
                await reply("502 5.5.2 Command not implemented")
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


class Api(BaseHTTPRequestHandler):
    def log_message(self, fmt: str, *args: object) -> None:  # quiet: the SMTP side logs
        pass

    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, b"ok\n", "text/plain")
        elif self.path == "/messages":
            out = []
            for meta_path in sorted(SINK_DIR.glob("*.json")):
                try:
                    meta = json.loads(meta_path.read_text())
                    raw = meta_path.with_suffix(".eml").read_bytes()
                except (OSError, ValueError):
                    continue
                meta["data"] = raw.decode("utf-8", "replace")
                out.append(meta)
            self._send(200, json.dumps(out).encode())
        elif self.path.startswith("/messages/"):
            name = self.path.rsplit("/", 1)[1]
            path = SINK_DIR / f"{name}.eml"
            if re.fullmatch(r"[0-9-]+", name) and path.is_file():
                self._send(200, path.read_bytes(), "message/rfc822")
            else:
                self._send(404, b'{"error": "no such message"}')
        else:
            self._send(404, b'{"error": "not found"}')

    def do_DELETE(self) -> None:
        if self.path != "/messages":
            self._send(404, b'{"error": "not found"}')
            return
        with _lock:
            for p in SINK_DIR.iterdir():
                if p.suffix in (".eml", ".json"):
                    p.unlink(missing_ok=True)
        self._send(200, b'{"deleted": true}')


async def main() -> None:
    SINK_DIR.mkdir(parents=True, exist_ok=True)
    httpd = ThreadingHTTPServer(("0.0.0.0", HTTP_PORT), Api)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    server = await asyncio.start_server(handle, "0.0.0.0", SMTP_PORT, limit=MAX_SIZE)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log(f"SMTP on :{SMTP_PORT}, HTTP on :{HTTP_PORT}, storing in {SINK_DIR}")
    async with server:
        await stop.wait()
    httpd.shutdown()
    log("stopped")


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
