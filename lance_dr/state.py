"""The small state file behind `lance-dr verify --since-last`: what the last clean verify checked.

One JSON document keyed by target URL; written atomically, never required (absent means "check everything").
"""
from __future__ import annotations

import json
import os
import time

from lance_store import fsutil


def default_state_path() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "lance-dr", "verify.json")


class VerifyState:
    def __init__(self, path: str | None = None):
        self.path = path or default_state_path()
        try:
            with open(self.path, "rb") as f:
                self.doc = json.loads(f.read())
            if not isinstance(self.doc, dict):
                self.doc = {}
        except (FileNotFoundError, ValueError):
            self.doc = {}

    def clean_objects(self, url: str) -> dict[str, tuple[int, str]]:
        """{object: (size, blake3)} verified clean by the last clean verify of `url`."""
        entry = self.doc.get(url) or {}
        return {k: (int(v[0]), str(v[1])) for k, v in (entry.get("objects") or {}).items()}

    def last_clean(self, url: str) -> dict | None:
        entry = self.doc.get(url)
        return None if not entry else {k: v for k, v in entry.items() if k != "objects"}

    def record_clean(self, url: str, generation: int, objects: dict[str, tuple[int, str]]) -> None:
        self.doc[url] = {"generation": generation, "verified_at_ns": time.time_ns(),
                         "objects": {k: list(v) for k, v in sorted(objects.items())}}
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        fsutil.write_json(self.path, self.doc)
