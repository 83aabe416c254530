"""The ``motcua`` command line, run as a user runs it (a real process, a real database)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import CORPUS, FIXTURES


def motcua(tmp_path: Path, *args: str, db_url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MOTCUA_DATABASE_URL": db_url or f"sqlite:///{tmp_path / 'cli.sqlite3'}"}
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


def test_init_deploy_start_complete(tmp_path: Path) -> None:
    assert motcua(tmp_path, "init-db").returncode == 0
    first = motcua(tmp_path, "deploy", str(FIXTURES / "rework_loop.bpmn"))
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("1.999002 version 1 (new version)")
    again = motcua(tmp_path, "deploy", str(FIXTURES / "rework_loop.bpmn"))
    assert "version 1 (unchanged)" in again.stdout
    started = motcua(tmp_path, "dossier", "start", "1.999002", "--data", '{"applicant": "Trần Thị C"}', "--agency", "000.17.22.H56")
    assert started.returncode == 0, started.stderr
    code = started.stdout.split()[0]
    assert re.fullmatch(r"000\.17\.22\.H56-\d{6}-0001", code)
    task_id = re.search(r"task (\d+): Xử lý hồ sơ", started.stdout).group(1)
    done = motcua(tmp_path, "complete", task_id, "--data", '{"note": "ok"}')
    assert "Duyệt" in done.stdout and "Đang xử lý" in done.stdout
    twice = motcua(tmp_path, "complete", task_id)
    assert twice.returncode == 1 and "already completed" in twice.stderr


def test_deploy_rejection_prints_problems_and_exits_1(tmp_path: Path) -> None:
    motcua(tmp_path, "init-db")
    result = motcua(tmp_path, "deploy", str(CORPUS / "miwg" / "A.1.0.bpmn"))
    assert result.returncode == 1
    assert "Rejected A.1.0.bpmn" in result.stderr
    assert re.search(r"A\.1\.0\.bpmn:\d+ \[_ec59e164-68b4-4f94-98de-ffb1c58a84af\] error: Step 'Task 1'", result.stderr)


def test_validate(tmp_path: Path) -> None:
    ok = motcua(tmp_path, "validate", str(FIXTURES / "parallel_main.bpmn"), str(FIXTURES / "parallel_called.bpmn"))
    assert ok.returncode == 0 and ok.stdout.startswith("OK")
    bad = motcua(tmp_path, "validate", str(FIXTURES / "parallel_main.bpmn"))
    assert bad.returncode == 1 and "'Verify'" in bad.stderr


def test_calendar_due_prints_iso_with_offset(tmp_path: Path) -> None:
    result = motcua(tmp_path, "calendar", "due", "--start", "2026-02-13T10:00:00+07:00", "--working-days", "3")
    assert result.stdout.strip() == "2026-02-25T10:00:00+07:00"
    hours = motcua(tmp_path, "calendar", "due", "--start", "2026-04-29T16:00", "--working-hours", "2")
    assert hours.stdout.strip() == "2026-05-04T08:30:00+07:00"  # 30/4 and 1/5 are holidays
    both = motcua(tmp_path, "calendar", "due", "--start", "2026-02-13T10:00", "--working-days", "1", "--working-hours", "1")
    assert both.returncode == 2


def test_calendar_reads_overrides_from_the_database(tmp_path: Path) -> None:
    motcua(tmp_path, "init-db")
    assert motcua(tmp_path, "calendar", "override", "2026-03-03", "--day-off", "--note", "nghỉ").returncode == 0
    result = motcua(tmp_path, "calendar", "due", "--start", "2026-03-02T08:00+07:00", "--working-days", "2")
    assert result.stdout.strip() == "2026-03-05T08:00:00+07:00"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_answers_health_over_real_http(tmp_path: Path) -> None:
    motcua(tmp_path, "init-db")
    port = _free_port()
    env = {**os.environ, "MOTCUA_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite3'}"}
    server = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "serve", "--port", str(port)], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    body = json.load(response)
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail("server did not answer: " + (server.stdout.read().decode() if server.poll() is not None else ""))
                time.sleep(0.2)
        assert body == {"status": "ok", "database": "ok", "backend": "sqlite"}
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/nothing-here", timeout=2)
        assert missing.value.code == 404
        assert json.load(missing.value)["status"] == 404
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_demo_sets_up_the_bundled_procedures_and_the_home_page_lists_them(tmp_path: Path) -> None:
    result = motcua(tmp_path, "demo", "--no-serve", "--simulated", "30")
    assert result.returncode == 0, result.stderr
    assert "2.000815 version 1" in result.stdout
    assert "dong-nai.yaml: 10 agencies, 33 officers" in result.stdout
    assert '"received": 30' in result.stdout and "30/30 hồ sơ (100 %)" in result.stderr  # a simulated quarter of history
    again = motcua(tmp_path, "demo", "--no-serve", "--simulated", "30")
    assert again.returncode == 0 and '"received"' not in again.stdout  # run twice: no second history
    from api.app import create_app
    from engine import config

    app = create_app(config.load(database_url=f"sqlite:///{tmp_path / 'cli.sqlite3'}"))
    page = app.test_client().get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Danh mục thủ tục" in html and "2.000815" in html and "Chứng thực" in html
    login = app.test_client().post("/api/v1/auth/login", json={"username": "motcua.phuocan", "password": "motcua-demo"})
    assert login.status_code == 200 and login.get_json()["roles"] == [{"agency": "000.17.22.H19", "role": "receptionist"}]
