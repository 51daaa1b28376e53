"""Serve trytond's own WSGI application on 127.0.0.1 for the tests (run as a subprocess).

``python -m tests.tryton.serve CONFIG`` is ``trytond -c CONFIG`` (werkzeug, threaded) with one
difference: a database that appears after start (a test's fresh copy of the template) gets its
pool loaded on its first request. trytond 8.2 only loads pools eagerly for the databases named
with ``-d`` at start (its lazy path finds an empty pool), and a fresh ``trytond`` process per
test costs several seconds more than loading one pool.
"""
from __future__ import annotations

import os
import sys
import threading


def main() -> None:
    config_file = sys.argv[1]
    os.environ["TRYTOND_CONFIG"] = config_file
    from trytond import config
    config.update_etc(config_file)
    from trytond.pool import Pool
    from trytond.wsgi import app
    from werkzeug.serving import run_simple

    Pool.start()
    ready: set[str] = set()
    lock = threading.Lock()

    def application(environ, start_response):
        parts = environ.get("PATH_INFO", "/").strip("/").split("/")
        name = parts[0] if parts and parts[0] and parts[0] != "rpc" else None
        if name and name not in ready and os.path.isfile(
                os.path.join(config.get("database", "path"), name + ".sqlite")):
            with lock:
                if name not in ready:
                    Pool(name).init()
                    ready.add(name)
        return app(environ, start_response)

    host, port = config.split_netloc(config.get("web", "listen"))
    run_simple(host, port, application, threaded=True)


if __name__ == "__main__":
    main()
