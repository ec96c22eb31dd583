"""`knight run --proposer claude` against a local stand-in for the Messages API (loopback only)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cli_runner import knight_here

ROOT = Path(__file__).resolve().parents[1]
COLS = "COLS_PER_TILE = {}  # columns per normalise / multiply / store step"


def _message(n: int) -> dict:
    new = 2048 if n == 1 else 1024
    old = 512 if n == 1 else 2048
    return {
        "id": f"msg_{n}",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-5-5",
        "content": [
            {
                "type": "text",
                "text": "Fewer, wider column tiles amortise per-instruction and per-DMA costs.",
            },
            {
                "type": "tool_use",
                "id": f"toolu_{n}",
                "name": "submit_patch",
                "input": {
                    "hypothesis": f"Use {new}-column tiles instead of {old}.",
                    "rationale": "The profile is dominated by fixed costs of small steps.",
                    "tags": ["tiling"],
                    "skills_used": ["reading-the-profile"],
                    "edits": [
                        {
                            "file": "kernel.py",
                            "search": COLS.format(old),
                            "replace": COLS.format(new),
                        }
                    ],
                },
            },
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 3000,
            "output_tokens": 200,
            "cache_creation_input_tokens": 2500,
            "cache_read_input_tokens": 0 if n == 1 else 2500,
        },
    }


STORM = [  # status, error type: what an overloaded provider answers
    (429, "rate_limit_error"),
    (529, "overloaded_error"),
    (500, "api_error"),
]


class _StandIn(BaseHTTPRequestHandler):
    requests: list[dict] = []
    failures_first = 0  # answer this many requests with a 429/529/500 storm before serving

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        cls = type(self)
        cls.requests.append(
            {
                "path": self.path,
                "auth": self.headers.get("authorization"),
                "x-api-key": self.headers.get("x-api-key"),
                "body": body,
            }
        )
        n = len(cls.requests)
        if n <= cls.failures_first:
            status, kind = STORM[(n - 1) % len(STORM)]
            error = {"type": "error", "error": {"type": kind, "message": "try again later"}}
            self._send(status, json.dumps(error).encode(), {"retry-after": "0"})
            return
        self._send(200, json.dumps(_message(n - cls.failures_first)).encode(), {})

    def _send(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def stand_in():
    _StandIn.requests = []
    _StandIn.failures_first = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _StandIn.requests
    server.shutdown()


def _knight(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC")}
    env.update(
        ANTHROPIC_API_KEY="sk-test-not-a-real-key",
        ANTHROPIC_BASE_URL=url,
        KNIGHT_BASELINES=str(ROOT / "baselines"),
        KNIGHT_SKILLS=str(ROOT / "skills"),
        KNIGHT_CACHE=str(tmp_path / "cache"),
    )
    return subprocess.run(
        [sys.executable, "-m", "knight.cli", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )


def test_claude_run_sends_the_tool_schema_applies_the_patch_and_records_usage(tmp_path, stand_in):
    url, requests = stand_in
    res = _knight(
        tmp_path,
        url,
        "run",
        "--budget",
        "2",
        "--proposer",
        "claude",
        "--problem",
        "rmsnorm",
        "--db",
        "k.db",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["iterations"] == 2 and summary["accepted"] >= 1 and summary["cost_usd"] > 0

    first = requests[0]["body"]
    assert requests[0]["path"].endswith("/v1/messages")
    tools = {t["name"]: t for t in first["tools"]}
    schema = tools["submit_patch"]["input_schema"]
    assert set(schema["required"]) == {"hypothesis", "rationale", "tags", "skills_used", "edits"}
    assert schema["additionalProperties"] is False
    edit_schema = schema["properties"]["edits"]["items"]
    assert (
        set(edit_schema["properties"]) == {"file", "search", "replace"}
        and edit_schema["additionalProperties"] is False
    )
    assert "read_skill" in tools and "temperature" not in first
    assert first["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert "COLS_PER_TILE" in json.dumps(
        first["messages"]
    )  # the champion's source is in the prompt

    history = json.loads(knight_here("history", "--db", "k.db", "--json", cwd=tmp_path).stdout)[
        "iterations"
    ]
    assert (
        history[0]["status"] == "accepted"
        and history[0]["hypothesis"] == "Use 2048-column tiles instead of 512."
    )
    shown = json.loads(knight_here("show", "1", "--db", "k.db", "--json", cwd=tmp_path).stdout)
    assert shown["edits"][0]["replace"] == COLS.format(2048)
    call = shown["llm_calls"][0]
    assert (
        call["input_tokens"] == 3000
        and call["output_tokens"] == 200
        and call["cache_write_tokens"] == 2500
    )
    assert call["cost_usd"] > 0
    assert shown["transcript"], "the conversation is kept"
    text = knight_here("show", "1", "--db", "k.db", cwd=tmp_path).stdout
    assert "conversation:" in text and "submit_patch" in text and "model calls: 1" in text
    second = json.loads(knight_here("show", "2", "--db", "k.db", "--json", cwd=tmp_path).stdout)
    assert second["llm_calls"][0]["cache_read_tokens"] == 2500
    stored = (tmp_path / "k.db").read_bytes()
    assert b"sk-test-not-a-real-key" not in stored
    listed = json.loads(
        knight_here("skills", "list", "--db", "k.db", "--json", cwd=tmp_path).stdout
    )
    usage = {s["name"]: s["usage"] for s in listed}
    assert usage["reading-the-profile"]["cited"] == 2 and usage["reading-the-profile"]["won"] >= 1


def test_a_provider_storm_spends_no_iteration(tmp_path, stand_in):
    """The first 9 requests get 429/529/500 with retry-after: 0; the run still gets 3 iterations."""
    url, requests = stand_in
    _StandIn.failures_first = 9
    res = _knight(
        tmp_path,
        url,
        "run",
        "--budget",
        "3",
        "--proposer",
        "claude",
        "--problem",
        "rmsnorm",
        "--db",
        "k.db",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["iterations"] == 3 and summary["status"] == "finished"
    history = json.loads(knight_here("history", "--db", "k.db", "--json", cwd=tmp_path).stdout)[
        "iterations"
    ]
    assert len(history) == 3 and all(it["category"] != "proposer_error" for it in history)
    assert history[0]["status"] == "accepted"
    assert "waiting for the model provider: Anthropic API" in res.stderr
    with sqlite3.connect(tmp_path / "k.db") as db:
        outage = db.execute(
            "select count(*) from llm_calls where iteration_number is null and status = 'error'"
        ).fetchone()[0]
    assert outage == 9 and len(requests) >= 12
