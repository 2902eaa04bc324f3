"""`pacsfed demo` as a user runs it: a process that serves GraphiQL and answers the example query."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx
from peers import free_port


def test_demo_answers_the_printed_example_query() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "pacsfed.cli", "demo", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 60
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line, "the demo exited early:\n" + "".join(lines)
            lines.append(line)
            if "Ctrl-C stops the demo" in line:
                break
        banner = "".join(lines)
        assert f"http://127.0.0.1:{port}/graphql" in banner
        assert all(f"DEMO-00{n}  " in banner for n in range(1, 9))  # every synthetic patient is named
        assert "No image viewer" in banner and "viewer_url" in banner
        example = banner.split("Example query:", 1)[1].split("Or from a shell:", 1)[0].strip()
        token = banner.split("A token for a demo physician", 1)[1].split("\n\n", 1)[1].split()[0]
        url = f"http://127.0.0.1:{port}/graphql"
        for _ in range(50):
            try:
                refused = httpx.post(url, json={"query": example}, timeout=10)
                break
            except httpx.ConnectError:
                time.sleep(0.1)
        assert refused.status_code == 401  # the demo enforces authentication too
        headers = {"authorization": f"Bearer {token}"}
        response = httpx.post(url, json={"query": example}, headers=headers, timeout=10)
        body = response.json()
        assert "errors" not in body, body
        history = body["data"]["patientHistory"]
        assert history["complete"] is True
        assert {s["status"] for s in history["sources"]} == {"OK"}
        held_by = {loc["source"]["id"] for exam in history["exams"] for loc in exam["locations"]}
        assert len(held_by) == 3  # the demo patient has exams at every simulated hospital
        assert any(len(exam["locations"]) == 2 for exam in history["exams"])  # and a shared one
        page = httpx.get(f"http://127.0.0.1:{port}/graphql", headers={"accept": "text/html"}, timeout=10)
        assert "GraphiQL" in page.text
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
