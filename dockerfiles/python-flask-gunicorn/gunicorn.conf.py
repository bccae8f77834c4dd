"""gunicorn settings; when_ready checks that the service answers before announcing it."""
import threading
import time
import urllib.request

bind = "0.0.0.0:8000"
workers = 2
accesslog = "-"


def when_ready(server):
    def check():
        for _ in range(60):
            try:
                with urllib.request.urlopen("http://127.0.0.1:8000/healthz", timeout=2) as r:
                    body = r.read().decode().strip()
                    print(f"KILN-COMPAT-OK python-flask-gunicorn: GET /healthz {r.status} {body}", flush=True)
                    return
            except OSError:
                time.sleep(1)
        print("python-flask-gunicorn: no answer on :8000", flush=True)

    threading.Thread(target=check, daemon=True).start()
