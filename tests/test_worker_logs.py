"""The worker logs as the servers do: JSON lines (TP_LOG_FORMAT=json, the default without
DEBUG), each one object with its level, logger and message."""

from __future__ import annotations

import json
from pathlib import Path

from .test_scale_out import start_worker


def test_the_worker_writes_json_lines(tmp_path: Path, transactional_db: None) -> None:
    worker = start_worker(tmp_path, "jsonlog", TP_LOG_FORMAT="json")
    try:
        lines = [line for line in worker.log().splitlines() if line.startswith("{")]
        ready = [json.loads(line) for line in lines if "ready." in line]
    finally:
        worker.stop()
    assert ready, worker.log()
    assert ready[0]["level"] == "INFO" and ready[0]["message"].endswith("ready.")
    assert {"ts", "logger"} <= set(ready[0])
