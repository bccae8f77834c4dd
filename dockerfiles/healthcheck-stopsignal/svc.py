"""A service with a health endpoint; nothing but the health probe calls it. SIGINT stops it cleanly."""
from http.server import BaseHTTPRequestHandler, HTTPServer

probes = 0


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        global probes
        if self.path != "/healthz":
            self.send_error(404)
            return
        probes += 1
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok\n")
        if probes == 1:
            print(f"KILN-COMPAT-OK healthcheck-stopsignal: health probe {probes} answered 200")

    def log_message(self, *args):
        pass


server = HTTPServer(("0.0.0.0", 8090), Handler)
print("healthcheck-stopsignal: listening on :8090")
try:
    server.serve_forever()
except KeyboardInterrupt:
    print(f"healthcheck-stopsignal: SIGINT, stopping after {probes} probes")
