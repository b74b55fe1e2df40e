#!/usr/bin/env python3
"""A tiny token issuer for distribution's `auth: token` mode, for rbuild's registry tests.

Serves GET (basic auth) and POST (OAuth2 password / refresh_token grants) on /token and
answers with an RS256 JWT whose `kid` is the libtrust key ID of the signing certificate, which
distribution trusts through its `rootcertbundle`. Every request is appended to a log file as
one JSON line (method, scopes, user) so tests can check what was asked for. Repositories
named in a `deny` file next to the log are left out of every token.

usage: issuer.py KEY.pem CERT.pem ISSUER SERVICE USER:PASSWORD LOGFILE PORTFILE
"""

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

KEY, CERT, ISSUER, SERVICE, CREDS, LOG, PORTFILE = sys.argv[1:8]
USER, PASSWORD = CREDS.split(":", 1)
REFRESH = "refresh-" + uuid.uuid4().hex


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def libtrust_kid(cert_path: str) -> str:
    pub = subprocess.run(
        ["openssl", "x509", "-in", cert_path, "-pubkey", "-noout"],
        check=True, capture_output=True).stdout
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "DER"],
        input=pub, check=True, capture_output=True).stdout
    s = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(s[i:i + 4] for i in range(0, len(s), 4))


KID = libtrust_kid(CERT)


def sign(claims: dict) -> str:
    header = {"typ": "JWT", "alg": "RS256", "kid": KID}
    signing_input = (b64url(json.dumps(header).encode()) + "." +
                     b64url(json.dumps(claims).encode())).encode()
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", KEY],
                         input=signing_input, check=True, capture_output=True).stdout
    return signing_input.decode() + "." + b64url(sig)


def denied():
    """Repositories listed in `deny` next to the log get no access at all."""
    try:
        with open(os.path.join(os.path.dirname(LOG), "deny")) as f:
            return {line.strip() for line in f if line.strip()}
    except FileNotFoundError:
        return set()


def access(scopes):
    out = []
    deny = denied()
    for scope in scopes:
        for one in scope.split(" "):
            parts = one.split(":")
            if len(parts) >= 3 and parts[0] == "repository":
                name = ":".join(parts[1:-1])
                if name in deny:
                    continue
                out.append({"type": "repository", "name": name,
                            "actions": parts[-1].split(",")})
    return out


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, user, scopes, method, extra=None):
        with open(LOG, "a") as f:
            f.write(json.dumps({"method": method, "user": user, "scopes": scopes}) + "\n")
        if user is None:
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}')
            return
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": user, "aud": SERVICE, "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex,
                  "access": access(scopes)}
        body = {"token": sign(claims), "expires_in": 300}
        if method == "POST":
            body = {"access_token": body["token"], "expires_in": 300}
        if extra:
            body.update(extra)
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        q = parse_qs(urlparse(self.path).query)
        user = None
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            u, _, p = base64.b64decode(auth[6:]).decode().partition(":")
            if (u, p) == (USER, PASSWORD):
                user = u
        self.answer(user, q.get("scope", []), "GET")

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        form = parse_qs(self.rfile.read(n).decode())
        grant = form.get("grant_type", [""])[0]
        user = None
        extra = None
        if grant == "password" and form.get("username") == [USER] and form.get("password") == [PASSWORD]:
            user = USER
            extra = {"refresh_token": REFRESH}
        elif grant == "refresh_token" and form.get("refresh_token") == [REFRESH]:
            user = USER
        scopes = form.get("scope", [])
        self.answer(user, scopes, "POST", extra)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(PORTFILE + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(PORTFILE + ".tmp", PORTFILE)
with open(os.path.join(os.path.dirname(LOG), "refresh_token"), "w") as f:
    f.write(REFRESH)
server.serve_forever()
