"""deploy/docker/Dockerfile: a slim multi-stage build, a non-root user, the lock file, and its command run as the image runs it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import httpx
from peers import ElasticsearchNode, OrthancPeer, free_port
from peers.process import ManagedProcess

from deploy.dockerfile import parse, words
from deploy.image import DOCKERFILE, REPO, VENV, final_stage, image_run
from pacsfed.demo.signer import DemoSigner

BUILD_TOOLS = ("gcc", "g++", "make", "build-essential", "apt-get install", "apk add", "cargo", "rustc")


def test_the_image_is_multi_stage_on_a_slim_base_without_build_tools() -> None:
    args, stages = parse(DOCKERFILE)
    assert len(stages) >= 2, "a build stage and a final stage"
    final = stages[-1]
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", final.base), final.base
    assert all(stage.base == final.base for stage in stages), "the runtime matches the build's Python"
    final_text = " ".join(i.value for i in final.instructions)
    assert not any(tool in final_text for tool in BUILD_TOOLS), final_text
    copies = final.all("COPY")
    assert copies == [f"--from={stages[0].name} {VENV} {VENV}"], "only the built virtualenv enters the image"
    built = " ".join(stages[0].all("RUN"))
    assert "pip uninstall --yes pip setuptools" in built, "no installer in the runtime virtualenv"
    assert "PYTHON_IMAGE" in args


def test_the_image_installs_from_the_lock_file_with_hashes() -> None:
    build = parse(DOCKERFILE)[1][0]
    runs = build.all("RUN")
    locked = [run for run in runs if "-r deploy/requirements.lock" in run]
    assert locked, runs
    assert all(flag in locked[0] for flag in ("--require-hashes", "--only-binary=:all:", "--no-deps"))
    assert "deploy/requirements.lock deploy/requirements.lock" in build.all("COPY")
    project = [run for run in runs if "pip install --no-deps ." in run]
    assert project and "pip check" in project[0], "pacsfed itself adds no unlocked dependency"


def test_the_image_runs_as_a_non_root_user_with_a_healthcheck_on_healthz() -> None:
    final = final_stage()
    user = final.last("USER")
    assert user is not None
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, "a numeric non-root uid (runAsNonRoot can check it)"
    assert any(f"--uid {uid}" in run for run in final.all("RUN")), "the user exists in the image"
    healthcheck = final.last("HEALTHCHECK")
    assert healthcheck is not None
    command = healthcheck.split(" CMD ", 1)[1]
    assert "http://127.0.0.1:8000/healthz" in command
    assert words(final.last("ENTRYPOINT") or "") == ["pacsfed"]
    assert words(final.last("CMD") or "")[:3] == ["serve", "--config", "/etc/pacsfed/pacsfed.yaml"]
    assert "8000" in (final.last("EXPOSE") or "")
    assert final.last("WORKDIR") == "/var/lib/pacsfed"
    assert "/var/lib/pacsfed" in (final.last("VOLUME") or ""), "the audit journal lives on a volume"


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    for stage in parse(DOCKERFILE)[1]:
        for copy in stage.all("COPY"):
            if copy.startswith("--from="):
                continue
            *sources, _target = copy.split()
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"


def _healthcheck_argv(port: int, python: Path) -> list[str]:
    healthcheck = final_stage().last("HEALTHCHECK") or ""
    argv = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert argv[0] == "python"
    return [str(python), *(arg.replace(":8000/", f":{port}/") for arg in argv[1:])]


def test_the_images_command_serves_from_the_locked_install(
    locked_install: Path,
    compose_hospitals: dict[str, OrthancPeer],
    elasticsearch: ElasticsearchNode,
    tmp_path: Path,
) -> None:
    """ENTRYPOINT + CMD, ENV and WORKDIR as the image has them, a config mounted where CMD reads it."""
    port = free_port()
    run = image_run(tmp_path / "image", locked_install, port)
    peer = compose_hospitals["orthanc-b"]
    signer = DemoSigner(tmp_path / "keys")
    config = {
        "cache": {"backend": "elasticsearch", "url": elasticsearch.url, "index_prefix": "deploy-image"},
        "server": {"mode": "production"},
        "auth": signer.auth_config(),
        "sources": [{"id": "az-sint-jan", "kind": "dicomweb", "url": peer.dicomweb_url}],
    }
    config_path = Path(run.argv[run.argv.index("--config") + 1])
    config_path.write_text(json.dumps(config), encoding="utf-8")
    process = ManagedProcess(
        "pacsfed (image command)", run.argv, log_path=tmp_path / "serve.log", cwd=run.cwd, env=run.env
    )
    process.start()
    try:
        healthcheck = _healthcheck_argv(port, locked_install / "python")
        process.wait_until(
            lambda: subprocess.run(healthcheck, check=False, timeout=10, env=run.env).returncode == 0,
            timeout=90,
            what="the image's HEALTHCHECK",
            interval=0.5,
        )
        token = signer.token(scopes=("history:read",))
        response = httpx.post(
            f"http://127.0.0.1:{port}/graphql",
            json={
                "query": '{ patientHistory(patient: {id: "DEMO-001"}) { exams { studyInstanceUid } sources { status } } }'
            },
            headers={"authorization": f"Bearer {token}"},
            timeout=30,
        )
        history = response.json()["data"]["patientHistory"]
        assert [s["status"] for s in history["sources"]] == ["OK"]
        assert len(history["exams"]) == 3, "AZ Sint-Jan holds three of DEMO-001's demo studies"
        assert any((run.cwd / "pacsfed-audit").glob("audit-*.jsonl")), "the journal is in WORKDIR, the volume"
    finally:
        process.stop()
