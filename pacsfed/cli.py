"""The ``pacsfed`` command: serve, query, check, connectors, cache, demo and schema."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import importlib.metadata
import json
import logging
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from connectors.registry import InstalledKind, check_connectors, installed_kinds
from dicom_facade import check_listen
from federation.access.auth import new_api_key
from federation.access.principals import AccessContext, local_principal
from federation.engine.request import HistoryRequest
from federation.errors import CacheError, ConfigError, PacsfedError
from federation.identity.resolver import IdentityLink, parse_links_csv
from federation.models import PatientHistory, PatientQuery, PersonNameGroups, SourceOutcome, SourceStatus
from federation.settings import Settings, load_connectors_settings, load_settings, settings_from_mapping
from federation.settings_security import ALL_SCOPES
from pacsfed.app import INSECURE_WARNING, create_app, services_from_settings
from pacsfed.cache_command import add_cache_parser, cache_command
from pacsfed.check_command import add_check_parser, check_command
from pacsfed.workers import STARTUP_FAILURE, WorkerSpec, leftover_journals, serve_workers, uvicorn_config
from schema.http import EXAMPLE_QUERY
from schema.query import build_schema
from web.http_server import uvicorn_options
from web.log_format import LOG_FORMATS, configure_logging

EXIT_CONFIG = 2
MAX_WORKERS = 64


def _installed_version() -> str:
    """The installed distribution's version (its metadata), as ``pip show pacsfed`` says it."""
    try:
        return importlib.metadata.version("pacsfed")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree never installed
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pacsfed", description="Federated cross-PACS exam search.")
    parser.add_argument("--version", action="version", version=f"pacsfed {_installed_version()}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument(
        "--log-format", choices=LOG_FORMATS, help="text, or one JSON event per line (default: logging.format)"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the GraphQL API")
    serve.add_argument("--config", required=True, help="YAML configuration file")
    serve.add_argument("--host", help="listen address (default: server.host)")
    serve.add_argument("--port", type=int, help="listen port (default: server.port)")
    serve.add_argument(
        "--workers",
        type=_workers,
        default=1,
        help="worker processes behind the one port (default 1; above 1 needs the Elasticsearch cache)",
    )
    serve.add_argument(
        "--insecure-dev",
        action="store_true",
        help="allow auth: {mode: none} (everyone gets every scope): development only, never with patient data",
    )

    query = commands.add_parser("query", help="query every source for one patient and print the history")
    query.add_argument("--config", required=True)
    who = query.add_mutually_exclusive_group(required=True)
    who.add_argument("--patient-id")
    who.add_argument("--national-id", help="the national number (identity.national_issuer)")
    query.add_argument("--issuer", help="issuer of the patient id")
    query.add_argument("--candidates", action="store_true", help="also list demographic candidates")
    query.add_argument("--deadline-ms", type=int)
    query.add_argument("--source", action="append", dest="sources", help="only this source (repeatable)")
    query.add_argument("--json", action="store_true", help="print the history as JSON")

    add_check_parser(commands)

    identity = commands.add_parser("identity", help="manage patient identity cross-references")
    identity_commands = identity.add_subparsers(dest="identity_command", required=True)
    importing = identity_commands.add_parser("import", help="import links from CSV: person,issuer,patient_id")
    importing.add_argument("--config", required=True)
    importing.add_argument("links", help="CSV file with the header person,issuer,patient_id")

    apikey = commands.add_parser("apikey", help="manage API keys of service accounts (EHR integrations)")
    apikey_commands = apikey.add_subparsers(dest="apikey_command", required=True)
    create = apikey_commands.add_parser("create", help="print a new key (once) and the config entry to add")
    create.add_argument("--id", required=True, help="the account's name, e.g. ehr-hospital-a")
    create.add_argument("--scope", action="append", dest="scopes", choices=ALL_SCOPES, help="repeatable")
    create.add_argument("--source", action="append", dest="sources", help="limit to this source (repeatable)")

    plugins = commands.add_parser("connectors", help="the installed connector kinds (built-ins and plugins)")
    plugin_commands = plugins.add_subparsers(dest="connectors_command", required=True)
    listing = plugin_commands.add_parser(
        "list",
        help="one line per kind: its package, version and capability flags; exit 1 if one fails to load",
    )
    listing.add_argument("--config", help="mark the kinds its connectors.allow leaves out (not loaded)")
    listing.add_argument("--json", action="store_true", help="print the kinds as JSON")

    demo = commands.add_parser("demo", help="run a self-contained demo with simulated hospitals")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)

    commands.add_parser("schema", help="print the GraphQL schema (SDL), as schema.graphql holds it")
    add_cache_parser(commands)
    return parser


def _workers(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"a number of processes from 1 to {MAX_WORKERS}")
    return count


def _table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def _source_line(outcome: SourceOutcome) -> str:
    detail = f" ({outcome.error})" if outcome.error else ""
    count = f" {outcome.exam_count} exams" if outcome.status is SourceStatus.OK else ""
    return f"{outcome.source.id:<20} {outcome.status.value:<12} {outcome.latency_ms:>6} ms{count}{detail}"


def _whole_name(groups: PersonNameGroups | None) -> str:
    """A name in every script it was given in, as DICOM writes it: ``Yamada^Tarou=山田^太郎=やまだ^たろう``."""
    if groups is None:
        return ""
    return "=".join(g or "" for g in (groups.alphabetic, groups.ideographic, groups.phonetic)).rstrip("=")


def render_history(history: PatientHistory) -> str:
    """A terminal view of one history: a table of exams, then one line per source."""
    rows = [
        (
            exam.study_date.isoformat() if exam.study_date else "?",
            exam.study_time.strftime("%H:%M") if exam.study_time else "",
            ",".join(exam.modalities),
            exam.description or "",
            _whole_name(exam.patient_name_groups),
            ",".join(location.source.id for location in exam.locations),
            exam.study_instance_uid,
        )
        for exam in history.exams
    ]
    out = [_table(rows, ("date", "time", "mod", "description", "patient", "sources", "study uid"))]
    out.append("")
    out += [_source_line(outcome) for outcome in history.sources]
    for candidate in history.candidates:
        out.append(
            f"candidate {candidate.score:.2f} {candidate.source.id} {candidate.patient_id or ''}"
            f" {_whole_name(candidate.patient_name_groups)} {candidate.birth_date or ''} ({len(candidate.exams)} exams;"
            f" {', '.join(candidate.reasons)})"
        )
    out += [f"warning: {warning}" for warning in history.warnings]
    out.append(
        f"{'complete' if history.complete else 'PARTIAL'}: {len(history.exams)} exams in {history.elapsed_ms} ms,"
        f" cache {history.cache_status.value}"
    )
    return "\n".join(out)


def _local_access() -> AccessContext:
    """The operator on the server's own shell: every scope, audited as cli:<os user>."""
    return AccessContext(local_principal(getpass.getuser()), client_address="local", channel="cli")


async def _query(settings: Settings, args: argparse.Namespace) -> int:
    async with services_from_settings(settings) as services:
        history = await services.history.patient_history(
            PatientQuery(patient_id=args.patient_id, issuer=args.issuer, national_id=args.national_id),
            _local_access(),
            HistoryRequest(
                deadline_ms=args.deadline_ms,
                source_ids=tuple(args.sources) if args.sources is not None else None,
                include_candidates=args.candidates,
            ),
        )
    print(history.model_dump_json(indent=2) if args.json else render_history(history))
    return 0 if history.complete else 1


def _read_links(path: str) -> list[IdentityLink]:
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from exc
    return parse_links_csv(text, added_by=f"cli:{getpass.getuser()}")


async def _identity_import(settings: Settings, links: list[IdentityLink]) -> int:
    async with services_from_settings(settings) as services:
        if services.engine.identity_store is None:
            raise ConfigError("no identity store is configured")
        try:
            added = await services.history.add_identity_links(_local_access(), links)
        except CacheError as exc:
            print(f"pacsfed: the identity store is unavailable ({exc})", file=sys.stderr)
            return 1
    persons = len({link.person for link in links})
    print(f"imported {added} links for {persons} persons")
    return 0


def _apikey_create(args: argparse.Namespace) -> int:
    key, digest = new_api_key(args.id)
    scopes = args.scopes or ["history:read"]
    print(
        f"API key for {args.id} (shown once; give it to the integration, store it as a secret):\n\n  {key}\n"
    )
    print("Add to auth.api_keys in the configuration (only the hash is kept):\n")
    print(f"  - id: {args.id}\n    sha256: {digest}\n    scopes: [{', '.join(scopes)}]")
    if args.sources:
        print(f"    sources: [{', '.join(args.sources)}]")
    print(f"\nCallers send: Authorization: ApiKey {key[:8]}…")
    return 0


async def _demo(args: argparse.Namespace) -> int:
    from pacsfed.demo import start_demo_hospitals
    from pacsfed.demo.patients import patient_summaries
    from pacsfed.demo.signer import DemoSigner

    try:  # listen first: a banner with a fresh token must never precede "address already in use"
        listener = socket.create_server((args.host, args.port))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.host}:{args.port} ({exc.strerror})") from exc
    hospitals = await start_demo_hospitals()
    state = Path(tempfile.mkdtemp(prefix="pacsfed-demo-"))
    try:
        signer = DemoSigner(state / "keys")
        settings = settings_from_mapping(
            {
                "cache": {"backend": "memory"},
                "sources": hospitals.sources_config(),
                "auth": signer.auth_config(),
                "audit": {"journal_dir": str(state / "audit")},
                "server": {"mode": "development"},
            }
        )
        token = signer.token()
        app = create_app(settings, owns_process=True, demo_token=token)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=args.host,
                port=args.port,
                log_level="warning",
                **uvicorn_options(settings.server, app),
            )
        )
        url = f"http://{args.host}:{args.port}/graphql"
        print(f"pacsfed demo: {len(settings.sources)} simulated hospitals, memory cache")
        for source in settings.sources:
            print(f"  - {source.id:<20} {source.kind:<9} {source.name}")
        print("\nSynthetic patients (the same ID at every hospital; no real patient data):")
        for line in patient_summaries():
            print(f"  {line}")
        print(
            "No image viewer: the simulated hospitals hold no images, so no exam has a viewer link."
            "\nA real deployment gives each source a viewer_url template (README, Configuration reference)."
        )
        print(f"\nAudit journal: {state / 'audit'}")
        print(f"\nA token for a demo physician (every scope, valid 12 h):\n\n  {token}\n")
        print(
            f"The physician's page: open http://{args.host}:{args.port}/ (signed in as the demo physician)."
        )
        print(f"GraphiQL: open {url} in a browser; in its headers pane, replace <paste token> with it.")
        print(f"Example query:\n\n{EXAMPLE_QUERY}\n")
        print(
            f'Or from a shell:\n  TOKEN={token}\n  curl -s {url} -H "authorization: Bearer $TOKEN" \\\n'
            "    -H 'content-type: application/json' \\\n"
            '    -d \'{"query": "{ patientHistory(patient: {id: \\"DEMO-001\\"}) { complete exams { studyDate modalities description } } }"}\'\n'
        )
        print("Ctrl-C stops the demo.", flush=True)
        await server.serve(sockets=[listener])
    finally:
        listener.close()
        await hospitals.stop()
    return 0


def _kind_line(kind: InstalledKind, width: int) -> str:
    """``dimse  pacsfed 0.1.0  demographic_search=yes …``: one installed connector kind."""
    where = f"{kind.kind:<{width}}  {kind.package} {kind.version}"
    if not kind.allowed:
        return f"{where}  not loaded: not in connectors.allow"
    if kind.error is not None:
        return f"{where}  FAILED: {kind.error}"
    flags = " ".join(f"{name}={'yes' if value else 'no'}" for name, value in kind.capabilities.items())
    return f"{where}  {flags}"


def _connectors_list(args: argparse.Namespace) -> int:
    allow = load_connectors_settings(args.config).allow if args.config else None
    kinds = installed_kinds(allow)
    if args.json:
        print(json.dumps([dataclasses.asdict(kind) for kind in kinds], indent=2))
    else:
        width = max((len(kind.kind) for kind in kinds), default=0)
        for kind in kinds:
            print(_kind_line(kind, width))
    return 1 if any(kind.error is not None for kind in kinds) else 0


def _serve(args: argparse.Namespace) -> int:
    settings = _load(args)
    if args.workers > 1 and settings.cache.backend == "memory":
        raise ConfigError(
            f"--workers {args.workers} needs cache.backend: elasticsearch: with the memory cache, share"
            " codes, break-the-glass windows and lock-outs would live in one worker each"
        )
    app = create_app(settings, insecure_dev=args.insecure_dev, owns_process=True)
    if settings.dicom_facade is not None:  # a taken port: exit 2 now, not a lifespan traceback
        asyncio.run(check_listen(settings.dicom_facade))
    # Every source's connector is built once now: a kind that refuses its settings exits 2 here.
    asyncio.run(check_connectors(settings.sources, settings.connectors.allow))
    if settings.auth.mode == "none":
        print(f"pacsfed: WARNING: {INSECURE_WARNING}", file=sys.stderr)
    for left in leftover_journals(settings.audit.journal_dir, args.workers):
        print(
            f"pacsfed: WARNING: {left} is the journal of a worker beyond --workers {args.workers}:"
            " records it has not shipped wait until a worker of its index runs again",
            file=sys.stderr,
        )
    host, port = args.host or settings.server.host, args.port or settings.server.port
    log_format = args.log_format or settings.logging.format
    configure_logging(args.log_level, log_format)
    if args.workers > 1:
        spec = WorkerSpec(
            args.config, host, port, args.log_level, args.insecure_dev, args.workers, log_format
        )
        return serve_workers(spec)
    server = uvicorn.Server(uvicorn_config(app, settings, host, port, args.log_level, log_format))
    server.run()
    return 0 if server.started else STARTUP_FAILURE


def _load(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def _for_cli(settings: Settings) -> Settings:
    """The settings with the audit journal in ``<journal_dir>/cli``: a running server holds the main one."""
    audit = settings.audit.model_copy(update={"journal_dir": settings.audit.journal_dir / "cli"})
    return settings.model_copy(update={"audit": audit})


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pacsfed`` console script."""
    args = _parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format or "text")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    if args.log_level != "DEBUG":  # one INFO line per Elasticsearch request cost ~6 % CPU under load
        logging.getLogger("elastic_transport").setLevel(logging.WARNING)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "query":
            return asyncio.run(_query(_for_cli(_load(args)), args))
        if args.command == "check":
            return asyncio.run(check_command(_load(args), args))
        if args.command == "identity":
            return asyncio.run(_identity_import(_for_cli(_load(args)), _read_links(args.links)))
        if args.command == "apikey":
            return _apikey_create(args)
        if args.command == "connectors":
            return _connectors_list(args)
        if args.command == "demo":
            return asyncio.run(_demo(args))
        if args.command == "cache":
            return asyncio.run(cache_command(_for_cli(_load(args)), args))
        if args.command == "schema":
            print(build_schema())
            return 0
    except ConfigError as exc:
        print(f"pacsfed: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except PacsfedError as exc:
        print(f"pacsfed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
