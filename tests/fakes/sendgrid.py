"""A fake of SendGrid's ``POST /v3/mail/send`` (202 Accepted with ``X-Message-Id``)."""

from __future__ import annotations

import json
import secrets

from tests.fakes._server import FakeServer, Recorded


class FakeSendGrid(FakeServer):
    def __init__(self, api_key: str, invalid_suffix: str = "@invalid.test") -> None:
        self.api_key = api_key
        self.invalid_suffix = invalid_suffix
        super().__init__()

    def handle(self, rec: Recorded):
        if rec.headers.get("Authorization") != f"Bearer {self.api_key}":
            return 401, {"Content-Type": "application/json"}, json.dumps(
                {"errors": [{"field": None, "message": "The provided authorization grant is invalid, expired, or revoked"}]}
            ).encode()
        if rec.method != "POST" or rec.path != "/v3/mail/send":
            return 404, {"Content-Type": "application/json"}, b'{"errors":[{"message":"not found"}]}'
        mail = rec.json or {}
        for p in mail.get("personalizations", []):
            for to in p.get("to", []):
                if str(to.get("email", "")).endswith(self.invalid_suffix):
                    return 400, {"Content-Type": "application/json"}, json.dumps(
                        {"errors": [{"field": "personalizations.0.to.0.email", "message": "Does not contain a valid address."}]}
                    ).encode()
        return 202, {"X-Message-Id": secrets.token_urlsafe(16)}, b""

    def sent(self) -> list[Recorded]:
        return [r for r in self.requests if r.status == 202]
