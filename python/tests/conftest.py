"""Shared helpers: the CLI to compare against and the real-model fixtures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

# A shell starts background jobs with SIGINT ignored, and Python then installs no
# KeyboardInterrupt handler; the Ctrl-C tests need the handler an interactive session has.
signal.signal(signal.SIGINT, signal.default_int_handler)


def cli_bin() -> str:
    b = os.environ.get("DHURANDHAR_BIN") or str(REPO / "target" / "release" / "dhurandhar")
    if not Path(b).is_file():
        found = shutil.which("dhurandhar")
        if found is None:
            pytest.fail(f"no dhurandhar binary at {b}: build it (cargo build --release) or set DHURANDHAR_BIN")
        b = found
    return b


def cli_json(*args: str) -> Any:
    """Run `dhurandhar ARGS --json` and parse its document."""
    out = subprocess.run([cli_bin(), *args, "--json"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def as_json(v: Any) -> Any:
    """Through JSON, as the CLI's document is (tuples → lists, same floats)."""
    return json.loads(json.dumps(v))


def fixture(name: str) -> Path:
    d = os.environ.get("DHURANDHAR_FIXTURES")
    p = Path(d) / name if d else None
    if p is None or not p.is_file():
        if os.environ.get("DHURANDHAR_REQUIRE_FIXTURES"):
            pytest.fail(f"fixture {name} missing (DHURANDHAR_FIXTURES={d})")
        pytest.skip(f"fixture {name} not available (set DHURANDHAR_FIXTURES)")
    return p


@pytest.fixture(scope="session")
def gguf() -> Path:
    return fixture("SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="session")
def safetensors_model() -> Path:
    return fixture("all-MiniLM-L6-v2.safetensors")
