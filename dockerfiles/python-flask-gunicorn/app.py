"""A small Flask application, as served in production by gunicorn."""
from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/healthz")
def healthz():
    return jsonify(status="ok")


@app.get("/")
def index():
    return jsonify(service="python-flask-gunicorn")
