"""The framework floor of ``make bench``: a one-route Flask app, served by the same gunicorn settings as the
service (``gunicorn -c config/gunicorn.conf.py tools.bench_flask:app``). ``GET /`` answers a small JSON
object, as ``/v1/verify`` does; nothing else happens per request."""

from __future__ import annotations

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue

app = Flask(__name__)


@app.get("/")
def index() -> ResponseReturnValue:
    return jsonify(active=True)
