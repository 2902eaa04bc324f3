"""DICOM facade idle cost: the CPU and threads of a C-FIND SCP holding N idle associations.

A fresh process serves on a loopback port, either pacsfed's facade (``dicom_facade.DicomFacade``,
the asyncio transport) or, as the yardstick, pynetdicom's own threaded SCP (``AE.start_server``)
accepting the same contexts. This process opens N associations to it with raw PDUs on the event
loop (so the callers cost nothing), leaves them idle, and the server process reports its CPU time
over IDLE seconds as a percentage of one core, and its thread count, with 0 and with N
associations open: the ratio N / 0 is what holding idle callers costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import sys
import time
from pathlib import Path

from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import pdu
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import PresentationContext

VERIFICATION = "1.2.840.10008.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


def _threads() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise RuntimeError("no Threads: line in /proc/self/status")


async def _child(kind: str, idle_s: float) -> None:
    """Serve; on each line read from stdin, measure IDLE seconds and print the figures as JSON."""
    if kind == "facade":
        from dicom_facade import DicomFacade, FindAnswer, FindCall
        from federation.settings import DicomFacadeSettings

        async def nothing(_: FindCall) -> FindAnswer:
            return FindAnswer([], 0)

        settings = DicomFacadeSettings(port=1, allowed_calling_aes=["BENCH"], max_associations=1000)
        facade = DicomFacade(settings.model_copy(update={"port": 0}), nothing)
        await facade.start()
        port = facade.port
    else:
        from pynetdicom import AE, evt

        ae = AE(ae_title="PACSFED")
        ae.maximum_associations = 1000
        ae.add_supported_context(VERIFICATION)
        ae.add_supported_context(STUDY_ROOT_FIND)
        server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_FIND, lambda e: [])])
        port = server.server_address[1]
    print(json.dumps({"port": port}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.readline():
        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.sleep(idle_s)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(json.dumps({"cpu_percent": 100 * cpu / wall, "threads": _threads()}), flush=True)
    if kind != "facade":
        server.shutdown()


def _associate_rq() -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = "BENCH"
    primitive.called_ae_title = "PACSFED"
    contexts = []
    for index, abstract in enumerate((VERIFICATION, STUDY_ROOT_FIND)):
        context = PresentationContext()
        context.context_id = 2 * index + 1
        context.abstract_syntax = abstract
        context.add_transfer_syntax(ImplicitVRLittleEndian)
        contexts.append(context)
    primitive.presentation_context_definition_list = contexts
    length = MaximumLengthNotification()
    length.maximum_length_received = 16384
    primitive.user_information = [length]
    request = pdu.A_ASSOCIATE_RQ()
    request.from_primitive(primitive)
    return bytes(request.encode())


async def _open(port: int) -> asyncio.StreamWriter:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_associate_rq())
    header = await reader.readexactly(6)
    await reader.readexactly(struct.unpack(">L", header[2:])[0])
    if header[0] != 0x02:
        raise SystemExit(f"association not accepted (PDU type {header[0]:#04x})")
    return writer


async def _measure(kind: str, associations: int, idle_s: float) -> tuple[dict[str, float], dict[str, float]]:
    """The server's figures with no association, then with ``associations`` idle ones."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.dicom_facade_idle", "--child", kind, "--idle-s", str(idle_s),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdin is not None
    assert process.stdout is not None
    port = json.loads(await process.stdout.readline())["port"]

    async def figures() -> dict[str, float]:
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write(b"measure\n")
        result: dict[str, float] = json.loads(await process.stdout.readline())
        return result

    await asyncio.sleep(1)
    empty = await figures()
    writers = [await _open(port) for _ in range(associations)]
    await asyncio.sleep(1)
    held = await figures()
    for writer in writers:
        writer.close()
    process.stdin.close()
    await process.wait()
    return empty, held


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--associations", type=int, default=50)
    parser.add_argument("--idle-s", type=float, default=5.0)
    parser.add_argument("--child", choices=["facade", "pynetdicom"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        asyncio.run(_child(args.child, args.idle_s))
        return
    n = args.associations
    print(f"DICOM facade idle cost: C-FIND SCP with 0 and {n} idle associations ({args.idle_s:.0f} s each)")
    print(
        f"{'server':>12} {'CPU % idle, 0':>14} {f'CPU % idle, {n}':>15} {'threads, 0':>11} {f'threads, {n}':>12}"
    )
    for kind in ("facade", "pynetdicom"):
        empty, held = asyncio.run(_measure(kind, n, args.idle_s))
        print(
            f"{kind:>12} {empty['cpu_percent']:>14.2f} {held['cpu_percent']:>15.2f}"
            f" {empty['threads']:>11.0f} {held['threads']:>12.0f}"
        )
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
