"""Read an offline W&B run (`run-*.wandb`) back from disk; wandb 0.31 has no public reader.

The file is a 7-byte header (":W&B" magic, version) then LevelDB-log blocks of 32 KiB; each
record has a 7-byte header (crc32 u32, length u16, type u8: 1 full, 2 first, 3 middle, 4 last)
and the records reassemble into `wandb_internal_pb2.Record` messages.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from wandb.proto import wandb_internal_pb2

FILE_HEADER = 7
BLOCK = 32 * 1024
RECORD_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    run: dict = field(default_factory=dict)

    def series(self, key: str) -> list:
        return [row[key] for row in self.history if key in row]


def _payloads(data: bytes):
    offset, pending = FILE_HEADER, b""
    while offset + RECORD_HEADER <= len(data):
        room = BLOCK - offset % BLOCK
        if room < RECORD_HEADER:  # block trailer padding
            offset += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[offset : offset + RECORD_HEADER])
        chunk = data[offset + RECORD_HEADER : offset + RECORD_HEADER + length]
        offset += RECORD_HEADER + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""
        elif kind == 0 and length == 0:  # zero padding to the end of a block
            offset += room - RECORD_HEADER
            continue


def read_offline_run(path: str | Path) -> OfflineRun:
    """Parse a `run-*.wandb` file, or the newest one under a directory."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("run-*.wandb"), key=lambda p: p.stat().st_mtime)
        if not files:
            raise FileNotFoundError(f"no run-*.wandb under {path}")
        path = files[-1]
    out = OfflineRun()
    for payload in _payloads(path.read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            out.history.append(
                {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            )
        elif kind == "summary":
            for item in record.summary.update:
                out.summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind in ("config", "run"):
            config = record.config if kind == "config" else record.run.config
            for item in config.update:
                out.config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
            if kind == "run":
                out.run = {
                    "name": record.run.display_name,
                    "group": record.run.run_group,
                    "job_type": record.run.job_type,
                    "id": record.run.run_id,
                }
    return out
