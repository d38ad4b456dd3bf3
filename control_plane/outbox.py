"""The email outbox: where the control plane's emails go until it has an email provider.

Each message is written as one RFC 5322 file (``.eml``, readable by any mail client and ready
for a later sender to deliver) under ``<data dir>/outbox/``: the directory is created with mode
0700, each file with 0600, because messages carry secrets (an invitation's token). Only the
fact that a message for an address was written is logged; its body never is.

Must not: log a message's subject or body, or write anywhere but the outbox directory.
"""

from __future__ import annotations

import logging
import os
import secrets
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

from flask import current_app

log = logging.getLogger(__name__)

SENDER = "MCP Mesh <mesh@localhost>"


def outbox_dir() -> Path:
    return current_app.config["MESH_SETTINGS"].data_dir / "outbox"


def send(to: str, subject: str, body: str) -> Path:
    """Write a message for ``to`` into the outbox; returns its file. Raises ``OSError`` when it
    cannot be written."""
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = to
    message["Subject"] = " ".join(subject.split())  # a name with a line break cannot add headers
    now = datetime.now(UTC)
    message["Date"] = format_datetime(now)
    message.set_content(body)
    directory = outbox_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"{now:%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(4)}.eml"
    # O_EXCL: never into a file that is already there (or a link planted in its place).
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(message.as_bytes())
    log.info("wrote a message for %s to the outbox (%s)", to, path.name)
    return path
