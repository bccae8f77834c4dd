"""A stdlib-only JSON API: GET /version. Checks itself once it listens."""
import json
import platform
import sys
import threading
import tomllib
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def debian_version() -> str:
    with open("/etc/os-release", encoding="utf-8") as f:
        fields = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
    return fields.get("VERSION_ID", "?").strip('"')


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/version":
            self.send_error(404)
            return
        body = json.dumps({"python": platform.python_version(), "debian": debian_version()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def self_check(port: int) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=5) as r:
        v = json.load(r)
    major_minor = ".".join(v["python"].split(".")[:2])
    print(f"KILN-COMPAT-OK trixie-slim: GET /version {r.status} python {major_minor} on Debian {v['debian']}")


def main() -> None:
    with open(sys.argv[1], "rb") as f:
        cfg = tomllib.load(f)["server"]
    server = ThreadingHTTPServer((cfg["host"], cfg["port"]), Handler)
    threading.Thread(target=self_check, args=(cfg["port"],), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
