"""The default notifier when no provider credentials are set: shows exactly what would be sent."""

from __future__ import annotations

import json
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from risklib.adapters.notifiers._base import OutboundMessage
from risklib.adapters.notifiers._render import email_parts, voice_twiml


class ConsoleNotifier:
    """Prints each message and appends it, as one JSON line, to ``path``.

    Email is shown with its HTML part and voice with the TwiML the call would
    run, so an operator sees the exact content a provider would receive.

    Parameters
    ----------
    path
        JSONL file to append to (parent folders are created); None prints only.
    stream
        Where to print; default stdout.
    gather_url
        Template of the key-press webhook (``{code}`` and ``{nid}``), as in the Twilio notifier.
    """

    provider = "console"

    def __init__(self, path: str | Path | None = None, *, stream: TextIO | None = None, gather_url: str = "", digit: str = "1") -> None:
        self.path = Path(path) if path is not None else None
        self.stream = stream
        self.gather_url = gather_url
        self.digit = digit
        self._lock = threading.Lock()

    def send(self, message: OutboundMessage) -> str:
        record: dict[str, object] = {
            "at": datetime.now(timezone.utc).isoformat(),
            "notification_id": message.notification_id,
            "channel": message.channel,
            "to": message.recipient,
            "subject": message.subject,
            "body": message.body,
            "reply_code": message.reply_code,
        }
        if message.channel == "email":
            record["html"] = email_parts(message)[1]
        elif message.channel == "voice":
            record["twiml"] = voice_twiml(message, self.gather_url, self.digit)
        stream = self.stream or sys.stdout
        lines = [f"--- would send {message.channel} to {message.recipient} [{message.notification_id}]"]
        if message.channel == "email":
            lines.append(f"Subject: {message.subject}")
        lines.append(record.get("twiml") or message.body)
        with self._lock:
            # one write: the pipeline's progress lines are printed from another thread meanwhile
            stream.write("\n".join(lines) + "\n")
            stream.flush()
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record, sort_keys=True) + "\n")
        return f"console-{message.notification_id}"
