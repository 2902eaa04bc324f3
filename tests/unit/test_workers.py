"""``pacsfed serve --workers``: the count checked, a journal directory per worker, leftovers found."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest

from pacsfed.cli import EXIT_CONFIG, main
from pacsfed.workers import journal_dir_of, leftover_journals, listen


@pytest.mark.parametrize("count", ["0", "-1", "many", "65"])
def test_a_worker_count_out_of_range_is_a_usage_error(count: str, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--config", str(tmp_path / "none.yaml"), "--workers", count])
    assert exited.value.code == 2


def test_worker_zero_keeps_the_single_process_journal_and_the_others_one_each(tmp_path: Path) -> None:
    assert journal_dir_of(tmp_path, 0) == tmp_path
    assert [journal_dir_of(tmp_path, i) for i in (1, 2)] == [tmp_path / "worker-1", tmp_path / "worker-2"]


def test_journals_beyond_the_worker_count_that_hold_segments_are_found(tmp_path: Path) -> None:
    for index in (1, 2, 3):
        (tmp_path / f"worker-{index}").mkdir()
    (tmp_path / "worker-2" / "audit-000000000001.jsonl").write_text("{}\n")
    (tmp_path / "worker-1" / "audit-000000000001.jsonl").write_text("{}\n")
    assert leftover_journals(tmp_path, 2) == [tmp_path / "worker-2"]
    assert leftover_journals(tmp_path, 3) == []
    assert leftover_journals(tmp_path / "absent", 1) == []


def test_the_memory_cache_with_two_workers_is_refused_like_any_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "pacsfed.yaml"
    config.write_text(json.dumps({"cache": {"backend": "memory"}, "audit": {"journal_dir": str(tmp_path)}}))
    assert main(["serve", "--config", str(config), "--workers", "2", "--insecure-dev"]) == EXIT_CONFIG
    assert "--workers 2 needs cache.backend: elasticsearch" in capsys.readouterr().err


async def test_connections_accepted_on_the_shared_socket_have_nagle_off() -> None:
    sock = listen("127.0.0.1", 0)
    nodelay: list[int] = []
    seen = asyncio.Event()

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nodelay.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        seen.set()
        writer.close()

    server = await asyncio.start_server(accepted, sock=sock)
    async with server:
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        await seen.wait()
        writer.close()
    assert nodelay == [1]  # asyncio sets TCP_NODELAY only on a socket that says it is TCP
