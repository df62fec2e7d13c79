"""The deploy folder's stages: each writes under OUT/stages/ and records its key (a hash of its
inputs and of the stages it depends on) in OUT/stages/<name>.json once complete; a later run with the
same key reuses it, so an interrupted deploy resumes where it stopped."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from mpqdm.core.errors import UserError
from mpqdm.core.io import write_json

STAGE_VERSION = 1          # bump when a stage's outputs change meaning: older records are then redone


class Stages:
    def __init__(self, out: Path, names: list[str], progress: bool = True):
        self.dir = out / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.names, self.progress = names, progress
        self.keys: dict[str, str] = {}
        self.seconds: dict[str, float] = {}
        self.reused: list[str] = []

    def say(self, name: str, text: str) -> None:
        if self.progress:
            print(f"deploy [{self.names.index(name) + 1}/{len(self.names)}] {name}: {text}", flush=True)

    def key(self, name: str, inputs: dict, needs: tuple[str, ...]) -> str:
        doc = {"stage": name, "version": STAGE_VERSION, "inputs": inputs, "needs": [self.keys[n] for n in needs]}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:20]

    def path(self, name: str) -> Path:
        return self.dir / name

    def run(self, name: str, inputs: dict, fn: Callable[[Path], dict], needs: tuple[str, ...] = (),
            what: str = "") -> dict:
        """Run `fn(stage folder)` unless a complete record with the same key exists; returns its result
        (a JSON-able dict). Errors name the stage."""
        key = self.key(name, inputs, needs)
        self.keys[name] = key
        record = self.dir / f"{name}.json"
        try:
            old = json.loads(record.read_text())
        except (OSError, ValueError):
            old = None
        if isinstance(old, dict) and old.get("key") == key:
            self.reused.append(name)
            self.seconds[name] = old.get("seconds", 0.0)
            self.say(name, "reused (inputs unchanged)")
            return old["result"]
        record.unlink(missing_ok=True)
        started = self.dir / f"{name}.started"          # a run of this stage that did not finish
        if started.is_file() and started.read_text() != key:
            for p in [self.path(name), *self.dir.glob(f"{name}.*")]:
                if p.is_dir():
                    shutil.rmtree(p)
                elif p != started:
                    p.unlink(missing_ok=True)
        started.write_text(key)
        self.say(name, what or "running")
        t0 = time.perf_counter()
        try:
            result = fn(self.path(name))
        except UserError as exc:
            raise UserError(f"stage {name}: {exc}") from None
        except OSError as exc:
            where = f" {str(exc.filename)!r}" if exc.filename else ""
            raise UserError(f"stage {name}: cannot use{where}: {exc.strerror or exc}. Possible solutions: check "
                            "the path, its permissions and the free space") from None
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 (a bug: say in which stage, keep the cause chained)
            raise RuntimeError(f"stage {name}: {type(exc).__name__}: {exc}") from exc
        self.seconds[name] = round(time.perf_counter() - t0, 1)
        write_json(record, {"key": key, "inputs": inputs, "seconds": self.seconds[name], "result": result})
        started.unlink()
        return result
