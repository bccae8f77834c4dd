"""A queue worker: reads its jobs from YAML, records each in SQLite, then idles like a long-running worker."""
import argparse
import os
import sqlite3
import time

import yaml


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    with open(args.config, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    db = sqlite3.connect(config["database"])
    db.execute("CREATE TABLE IF NOT EXISTS done (name TEXT PRIMARY KEY, weight INTEGER)")
    for job in config["jobs"]:
        db.execute("INSERT OR REPLACE INTO done VALUES (?, ?)", (job["name"], job["weight"]))
    db.commit()
    (count,) = db.execute("SELECT COUNT(*) FROM done").fetchone()
    print(f"KILN-COMPAT-OK python-worker: processed {count} jobs as uid {os.getuid()} gid {os.getgid()}")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
