"""A webhook receiver for bridge in Python: verify, then act. Standard library HTTP server plus
the Standard Webhooks reference library (pip install standardwebhooks).

    WEBHOOK_SECRET=whsec_... PORT=8080 python receiver.py

Register it (its public HTTPS address, in production) as an endpoint:

    curl -s $BRIDGE/v1/endpoints -H "Authorization: Bearer $KEY" \
      -d '{"url": "https://receiver.example.com/webhooks",
           "events": ["job.succeeded", "job.failed"]}'
"""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

verifier = Webhook(os.environ["WEBHOOK_SECRET"])
seen: set[str] = set()  # webhook-id repeats on a retry: handle each event once


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        try:
            event = verifier.verify(body, dict(self.headers))
        except WebhookVerificationError:
            self.send_response(400)  # not from bridge, or altered: refuse it
            self.end_headers()
            return
        if event["id"] not in seen:
            seen.add(event["id"])
            job = event["data"]
            if event["type"] == "job.succeeded":
                print(f"{job['id']} succeeded: {job['result']['video_url']}", flush=True)
            else:
                print(f"{event['type']} {job.get('id')}", flush=True)
        self.send_response(204)  # any 2xx: delivered; anything else is retried
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8080"))), Receiver)
    print(json.dumps({"listening": server.server_address[1]}), flush=True)
    server.serve_forever()
