"""A gate in front of moto's Route 53 (moto accepts any signature).

It checks each request's SigV4 signature with botocore's own signer (an
implementation independent of the agent's) against the secret of the key
id it names, and answers 403 SignatureDoesNotMatch / InvalidClientTokenId
as Route 53 does. Good requests are forwarded to moto. The test can queue
faults for the next writes (POST): answer 400 Throttling without
forwarding, or forward and then drop the connection without an answer
("lost"). Every request is logged to stdout, one JSON object per line.

usage: sigv4_gate.py LISTEN_HOST LISTEN_PORT MOTO_URL KEY_ID SECRET
control: POST /__gate {"throttle": N, "lose": N}; GET /__gate gives counts.
"""

import datetime
import http.client
import time
import http.server
import json
import re
import sys
import threading
import urllib.parse

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

HOST, PORT, MOTO, KEY_ID, SECRET = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
MOTO_URL = urllib.parse.urlparse(MOTO)
LOCK = threading.Lock()
FAULTS = {"throttle": 0, "lose": 0}
COUNTS = {"requests": 0, "refused": 0, "throttled": 0, "lost": 0, "writes": 0}

AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
    r"SignedHeaders=([^,]+), Signature=([0-9a-f]+)"
)


def error_xml(code, message):
    return (
        '<?xml version="1.0"?>\n<ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">'
        f"<Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
        "<RequestId>gate</RequestId></ErrorResponse>"
    ).encode()


def verify(method, path, headers, body):
    """None when the signature is right, else (status, code, message)."""
    m = AUTH.match(headers.get("authorization", ""))
    if not m:
        return 403, "MissingAuthenticationToken", "no SigV4 Authorization header"
    key_id, _date, region, service, signed, signature = m.groups()
    if key_id != KEY_ID:
        return 403, "InvalidClientTokenId", "The security token included in the request is invalid."
    names = signed.split(";")
    missing = [n for n in names if n not in headers]
    if missing:
        return 403, "SignatureDoesNotMatch", f"signed headers missing: {missing}"
    req = AWSRequest(
        method=method,
        url=f"http://{headers['host']}{path}",
        data=body,
        headers={n: headers[n] for n in names},
    )
    amz_date = headers.get("x-amz-date", "")
    req.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(key_id, SECRET), service, region)
    canonical = signer.canonical_request(req)
    expected = signer.signature(signer.string_to_sign(req, canonical), req)
    if expected != signature:
        return 403, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided."
    try:
        t = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return 403, "IncompleteSignature", "bad x-amz-date"
    if abs((datetime.datetime.now(datetime.timezone.utc) - t).total_seconds()) > 300:
        return 403, "SignatureDoesNotMatch", "Signature expired"
    return None


class Gate(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, content_type="text/xml"):
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def handle_any(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        if self.path.startswith("/__gate"):
            with LOCK:
                if self.command == "POST":
                    for k, v in json.loads(body or b"{}").items():
                        FAULTS[k] = int(v)
                out = json.dumps(dict(COUNTS, **{"pending_" + k: v for k, v in FAULTS.items()})).encode()
            return self.reply(200, out, "application/json")
        with LOCK:
            COUNTS["requests"] += 1
        bad = verify(self.command, self.path, headers, body)
        entry = {
            "method": self.command,
            "path": self.path,
            "verdict": "ok" if bad is None else bad[1],
            "node": headers.get("x-vantage-node"),
            "term": headers.get("x-vantage-term"),
        }
        if bad is not None:
            with LOCK:
                COUNTS["refused"] += 1
            print(json.dumps(entry), flush=True)
            return self.reply(bad[0], error_xml(bad[1], bad[2]))
        fault = None
        if self.command == "POST":
            with LOCK:
                COUNTS["writes"] += 1
                for f in ("throttle", "lose"):
                    if FAULTS[f] > 0:
                        FAULTS[f] -= 1
                        COUNTS["throttled" if f == "throttle" else "lost"] += 1
                        fault = f
                        break
        entry["fault"] = fault
        if fault == "throttle":
            print(json.dumps(entry), flush=True)
            return self.reply(400, error_xml("Throttling", "Rate exceeded"))
        conn = http.client.HTTPConnection(MOTO_URL.hostname, MOTO_URL.port, timeout=30)
        fwd = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "content-length")}
        conn.request(self.command, self.path, body=body or None, headers=fwd)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        if fault == "lose":
            # Applied by moto; the client never hears.
            print(json.dumps(entry), flush=True)
            self.close_connection = True
            return
        self.reply(resp.status, data, resp.getheader("content-type") or "text/xml")
        # Logged once answered, with the time: the moment the provider acknowledged it.
        entry["status"] = resp.status
        entry["t"] = time.time()
        print(json.dumps(entry), flush=True)

    do_GET = handle_any
    do_POST = handle_any


server = http.server.ThreadingHTTPServer((HOST, PORT), Gate)
print(json.dumps({"listening": f"{HOST}:{PORT}"}), flush=True)
server.serve_forever()
