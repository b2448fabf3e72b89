"""A stand-in for a single-user notebook server, for a REAL JupyterHub to
spawn (`c.Spawner.cmd`): jupyterhub-singleuser is not in the test venv, and
the tests need only what a server's process has: the environment the Hub
gives it, its own JUPYTERHUB_API_TOKEN above all. It answers HTTP on the
port of $JUPYTERHUB_SERVICE_URL (so the Hub sees it start) and runs, with
that environment, either the seed notebook's cells (tests/hub_notebook.py)
or, with NOTEBOOK_CELLS=probe, one `GET /api/v1/options`. It writes a JSON
report to $NOTEBOOK_REPORT_DIR/<user>.json: the token's scopes as the Hub
states them, then the cells' results or the error they raised. The token
itself is never written anywhere.
"""

import http.server
import json
import os
import threading
import traceback
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path


class Alive(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"notebook server stand-in\n")

    def log_message(self, *args):
        pass


def hub_get(path):
    req = urllib.request.Request(os.environ["JUPYTERHUB_API_URL"] + path)
    req.add_header("Authorization", f"token {os.environ['JUPYTERHUB_API_TOKEN']}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


def options_status():
    """The gateway's answer to the client's first call, with this server's token."""
    from dask.config import get

    req = urllib.request.Request(get("gateway.address").rstrip("/") + "/api/v1/options")
    req.add_header("Authorization", f"jupyterhub {os.environ['JUPYTERHUB_API_TOKEN']}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return [resp.status, json.load(resp)]
    except urllib.error.HTTPError as e:
        return [e.code, json.load(e)]


def run(report_path):
    report = {}
    try:
        report["token_scopes"] = hub_get("/user")["scopes"]
        if os.environ.get("NOTEBOOK_CELLS") == "probe":
            report["options"] = options_status()
        else:
            from hub_notebook import run_cells

            report["cells"] = run_cells()
    except Exception:
        report["error"] = traceback.format_exc()
    partial = report_path.with_suffix(".partial")
    partial.write_text(json.dumps(report))
    partial.rename(report_path)


def main():
    url = urllib.parse.urlsplit(os.environ["JUPYTERHUB_SERVICE_URL"])
    report_path = Path(os.environ["NOTEBOOK_REPORT_DIR"]) / f"{os.environ['JUPYTERHUB_USER']}.json"
    server = http.server.ThreadingHTTPServer((url.hostname, url.port), Alive)
    threading.Thread(target=run, args=(report_path,), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
