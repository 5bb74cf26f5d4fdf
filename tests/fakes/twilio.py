"""A fake of the parts of Twilio's REST API the product uses.

``POST /2010-04-01/Accounts/{sid}/Messages.json`` and ``Calls.json`` (create, 201),
``GET`` of both (list, for reconciliation). Requests must carry HTTP basic auth
with the configured SID and token. ``To`` numbers listed in ``invalid_numbers``
get Twilio's 400 / code 21211.
"""

from __future__ import annotations

import base64
import json
import secrets
from email.utils import formatdate

from tests.fakes._server import FakeServer, Recorded

INVALID_NUMBER = "+15005550001"  # Twilio's documented "invalid number" test value


class FakeTwilio(FakeServer):
    def __init__(self, account_sid: str, auth_token: str, invalid_numbers: tuple[str, ...] = (INVALID_NUMBER,)) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.invalid_numbers = set(invalid_numbers)
        self.messages: list[dict] = []
        self.calls: list[dict] = []
        super().__init__()

    def _json(self, status: int, payload: dict) -> tuple[int, dict[str, str], bytes]:
        return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()

    def handle(self, rec: Recorded):
        prefix = f"/2010-04-01/Accounts/{self.account_sid}/"
        expected = "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if rec.headers.get("Authorization") != expected:
            return self._json(401, {"code": 20003, "message": "Authenticate", "status": 401})
        if not rec.path.startswith(prefix):
            return self._json(404, {"code": 20404, "message": "not found", "status": 404})
        resource = rec.path[len(prefix) :]
        form = {k: v[0] for k, v in rec.form.items()}
        if rec.method == "POST" and resource in ("Messages.json", "Calls.json"):
            to = form.get("To", "")
            if to in self.invalid_numbers:
                return self._json(400, {"code": 21211, "message": f"The 'To' number {to} is not a valid phone number.",
                                        "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400})
            kind = "SM" if resource == "Messages.json" else "CA"
            sid = kind + secrets.token_hex(16)
            item = {
                "sid": sid, "account_sid": self.account_sid, "to": to, "from": form.get("From"),
                "status": "queued", "date_created": formatdate(usegmt=True), "date_updated": formatdate(usegmt=True),
                "api_version": "2010-04-01", "uri": f"{prefix}{resource[:-5]}/{sid}.json",
            }
            if kind == "SM":
                item |= {"body": form.get("Body", ""), "num_segments": "1", "direction": "outbound-api",
                         "date_sent": None}
                self.messages.append(item | {"_status_callback": form.get("StatusCallback")})
            else:
                item |= {"direction": "outbound-api", "start_time": None}
                self.calls.append(item | {"_twiml": form.get("Twiml"), "_status_callback": form.get("StatusCallback")})
            return self._json(201, item)
        if rec.method == "GET" and resource in ("Messages.json", "Calls.json"):
            to = rec.query.get("To", [None])[0]
            items = self.messages if resource == "Messages.json" else self.calls
            key = "messages" if resource == "Messages.json" else "calls"
            found = [{k: v for k, v in i.items() if not k.startswith("_")} for i in items if to in (None, i["to"])]
            return self._json(200, {key: found, "first_page_uri": rec.path, "next_page_uri": None, "page": 0,
                                    "page_size": 50, "previous_page_uri": None, "uri": rec.path, "end": len(found) - 1,
                                    "start": 0})
        return self._json(404, {"code": 20404, "message": "not found", "status": 404})

    # --- views for assertions --------------------------------------------------------

    def created(self, kind: str = "Messages") -> list[Recorded]:
        """Successful create requests for ``Messages`` or ``Calls``."""
        return [r for r in self.requests if r.method == "POST" and r.path.endswith(f"/{kind}.json") and r.status == 201]
