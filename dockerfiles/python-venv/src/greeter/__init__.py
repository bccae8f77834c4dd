"""greeter: says hello, then stays up like a service."""
import argparse
import sys
import time
from importlib.metadata import version


def main() -> None:
    parser = argparse.ArgumentParser(prog="greeter")
    parser.add_argument("--name", default="world")
    args = parser.parse_args()
    print(f"KILN-COMPAT-OK python-venv: greeter {version('greeter')} from {sys.prefix}, hello {args.name}", flush=True)
    while True:
        time.sleep(3600)
