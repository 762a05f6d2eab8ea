"""dicomnet against DCMTK and pynetdicom: ``make bench`` or ``python bench/run.py [--quick]``.

Runs the rows of bench/README.md, alternating implementations round-robin within each repetition,
checks that every instance arrived intact, and writes the table to bench/results.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shlex
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import data
from data import BENCH, DataSet
from peers import (
    AGENTS,
    BIN,
    PYTHON,
    Server,
    Timed,
    dcmtk,
    dcmtk_scp,
    dicomnet_cli,
    dicomnet_scp,
    machine,
    pynetdicom_scp,
    run_clients,
)

OUT = BENCH / "out"
# py-spy: collapsed stacks; BENCH_SPY adds options (e.g. "--native" or "--gil").
_SPY_EXTRA = os.environ.get("BENCH_SPY", "").split()
SPY_ARGS = ["--rate", "500", "--format", "raw", *_SPY_EXTRA]
if "--native" not in _SPY_EXTRA:  # py-spy cannot combine the two
    SPY_ARGS.append("--nonblocking")
# Leaf frames of threads that wait for work: left out of the profile like py-spy's idle samples.
WAITING = ("Condition.wait (threading.py", "Event.wait (threading.py", "Thread.join (threading.py")
DCMTK_PDU = ["-pdu", "131072"]  # storescp's and storescu's largest max PDU (default 16384)


@dataclass
class Case:
    """One implementation in one row: the clients it runs against which server, what it sends."""

    label: str
    role: str  # "dcmtk", "pynetdicom" or "dicomnet": the ratios compare dicomnet to the others
    server: str  # key into Group.servers
    clients: Callable[[Server, Path], list[list[str]]]
    files: list[Path] = field(default_factory=list)
    expected: dict[str, tuple[int, str]] = field(default_factory=dict)
    count: int = 0  # operations (instances or echoes)
    nbytes: int = 0
    inner_time: bool = False  # the client prints its own JSON timing
    rss: str = "server"  # whose peak RSS the row reports: "server" or "client"
    reps: int | None = None  # fewer repetitions than the group (slow peers)
    note: str = ""
    # Checks the server's folder instead of ``expected``'s raw pixel data (compressed output).
    verify: Callable[[Path], str | None] | None = None


@dataclass
class Group:
    id: str
    title: str
    unit: str  # "img" or "echo"
    servers: dict[str, Callable[[Path], Server]]
    cases: list[Case]


@dataclass
class Result:
    group: Group
    case: Case
    times: list[float] = field(default_factory=list)
    rss_mb: float | None = None
    cpu_s: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def error(self) -> str | None:
        """Why the case has no result: every run it tried failed."""
        return None if self.times or not self.failures else self.failures[-1]

    @property
    def best(self) -> float | None:
        return min(self.times) if self.times else None

    @property
    def rate(self) -> float | None:
        best = self.best
        return self.case.count / best if best else None

    @property
    def median_rate(self) -> float | None:
        return self.case.count / statistics.median(self.times) if self.times else None


# --- clients --------------------------------------------------------------------------------------


def _filelist(files: list[Path], logdir: Path) -> str:
    logdir.mkdir(parents=True, exist_ok=True)
    path = logdir / "files.txt"
    path.write_text("\n".join(str(f) for f in files))
    return str(path)


def storescu(files: list[Path]) -> Callable[[Server, Path], list[list[str]]]:
    return lambda s, _d: [
        [dcmtk("storescu"), *DCMTK_PDU, "127.0.0.1", str(s.port), *map(str, files)]
    ]


def storescu_parallel(chunks: list[list[Path]]) -> Callable[[Server, Path], list[list[str]]]:
    return lambda s, d: [storescu(chunk)(s, d)[0] for chunk in chunks]


def pynetdicom_storescu(files: list[Path]) -> Callable[[Server, Path], list[list[str]]]:
    def cmds(s: Server, logdir: Path) -> list[list[str]]:
        folder = data.link_folder(files, logdir / "send")
        return [[PYTHON, "-m", "pynetdicom", "storescu", "127.0.0.1", str(s.port), str(folder)]]

    return cmds


def dicomnet_store(files: list[Path]) -> Callable[[Server, Path], list[list[str]]]:
    def cmds(s: Server, logdir: Path) -> list[list[str]]:
        listed = [str(f) for f in files]
        return [
            [dicomnet_cli(), "store", "-q", "--async-ops", "8", "127.0.0.1", str(s.port), *listed]
        ]

    return cmds


def dicomnet_api(files: list[Path]) -> Callable[[Server, Path], list[list[str]]]:
    return lambda s, d: [[PYTHON, AGENTS, "dicomnet-store", str(s.port), _filelist(files, d)]]


# -- TLS (rows 1a-tls, 2a-tls): certificates made when the run starts, never checked in -------------


@functools.cache
def pki() -> Any:
    """A CA with a server and a client certificate (EC P-256, as tests/pki.py makes them)."""
    from tests.pki import make_pki

    return make_pki(OUT / "pki")


def dcmtk_tls(who: str) -> list[str]:
    """DCMTK's +tls options: our key and certificate, no key password, the CA to verify the
    peer with; the default BCP 195 profile, as dicomnet's."""
    issued = getattr(pki(), who)
    return ["+tls", str(issued.key), str(issued.cert), "-pw", "+cf", str(pki().ca)]


def dicomnet_tls(who: str) -> list[str]:
    issued = getattr(pki(), who)
    return ["--tls-ca", str(pki().ca), "--tls-cert", str(issued.cert), "--tls-key", str(issued.key)]


def storescu_tls(files: list[Path]) -> Callable[[Server, Path], list[list[str]]]:
    return lambda s, _d: [
        [
            dcmtk("storescu"),
            *DCMTK_PDU,
            *dcmtk_tls("ct1"),
            "127.0.0.1",
            str(s.port),
            *map(str, files),
        ]
    ]


def dcmsend_decompress(files: list[Path]) -> Callable[[Server, Path], list[list[str]]]:
    return lambda s, _d: [
        [
            dcmtk("dcmsend"),
            *DCMTK_PDU,
            "--decompress-lossless",
            "127.0.0.1",
            str(s.port),
            *map(str, files),
        ]
    ]


def dicomnet_store_tls(files: list[Path]) -> Callable[[Server, Path], list[list[str]]]:
    def cmds(s: Server, logdir: Path) -> list[list[str]]:
        listed = [str(f) for f in files]
        return [
            [
                dicomnet_cli(), "store", "-q", "--async-ops", "8", *dicomnet_tls("ct1"),
                "127.0.0.1", str(s.port), *listed,
            ]
        ]  # fmt: skip

    return cmds


def storescu_then_dcmcjpls(files: list[Path]) -> Callable[[Server, Path], list[list[str]]]:
    """What a DCMTK user does to keep instances JPEG-LS compressed: storescu into storescp,
    then dcmcjpls on every received file, as many at once as there are cores."""

    def cmds(s: Server, _d: Path) -> list[list[str]]:
        send = shlex.join([dcmtk("storescu"), *DCMTK_PDU, "127.0.0.1", str(s.port)])
        compress = shlex.join(
            ["sh", "-c", f'{shlex.quote(dcmtk("dcmcjpls"))} "$1" "$1.jls" && mv "$1.jls" "$1"', "_"]
        )
        script = (
            f"{send} \"$@\" && find {shlex.quote(str(s.folder))} -type f -name 'CT.*' "
            f"-print0 | xargs -0 -r -n 1 -P {os.cpu_count() or 1} {compress}"
        )
        return [["sh", "-c", script, "ingest", *map(str, files)]]

    return cmds


def dicomnet_api_tls(files: list[Path]) -> Callable[[Server, Path], list[list[str]]]:
    issued = pki().ct1
    return lambda s, d: [
        [
            PYTHON, AGENTS, "dicomnet-store", str(s.port), _filelist(files, d),
            "--tls", str(pki().ca), str(issued.cert), str(issued.key),
        ]
    ]  # fmt: skip


def echoscu(count: int) -> Callable[[Server, Path], list[list[str]]]:
    return lambda s, _d: [[dcmtk("echoscu"), "--repeat", str(count), "127.0.0.1", str(s.port)]]


def api_echo(agent: str, count: int) -> Callable[[Server, Path], list[list[str]]]:
    return lambda s, _d: [[PYTHON, AGENTS, agent, str(s.port), str(count)]]


# --- rows -----------------------------------------------------------------------------------------


def _store_case(
    label: str,
    role: str,
    server: str,
    ds: DataSet,
    files: list[Path],
    clients: Callable[[Server, Path], list[list[str]]],
    **kwargs: object,
) -> Case:
    return Case(
        label,
        role,
        server,
        clients,
        files=files,
        expected=ds.expected(files),
        count=len(files),
        nbytes=sum(f.stat().st_size for f in files),
        **kwargs,  # type: ignore[arg-type]
    )


SCPS: dict[str, Callable[[Path], Server]] = {
    "dcmtk": lambda d: dcmtk_scp(d, *DCMTK_PDU),
    "dcmtk-fork": lambda d: dcmtk_scp(d, *DCMTK_PDU, "--fork"),
    "dcmtk-bp": lambda d: dcmtk_scp(d, *DCMTK_PDU, "--bit-preserving"),
    "pynetdicom": pynetdicom_scp,
    "dicomnet": dicomnet_scp,
    "dicomnet-fsync": lambda d: dicomnet_scp(d, fsync=True),
    "dicomnet-workers": lambda d: dicomnet_scp(d, workers=os.cpu_count() or 1),
    # TLS, client certificates required and verified on both (storescp +tls does by default).
    "dcmtk-tls": lambda d: dcmtk_scp(d, *DCMTK_PDU, *dcmtk_tls("server")),
    "dicomnet-tls": lambda d: dicomnet_scp(d, extra=tuple(dicomnet_tls("server"))),
    "dicomnet-jls": lambda d: dicomnet_scp(d, extra=("--store-as", "jpeg-ls-lossless")),
}


def build_groups(sets: dict[str, DataSet], quick: bool, rows: set[str]) -> list[Group]:
    ct, small, big = sets["ct"], sets["small"], sets["big"]
    q = 10 if quick else 1
    ct500, small2000 = ct.files[: 500 // q], small.files[: 2000 // q]
    ct_py, small_py = ct.files[: 500 // q], small.files[: 500 // q]
    ct_pyscu, small_pyscu = ct.files[: 100 // q], small.files[: 100 // q]
    groups: list[Group] = []

    def scp_row(gid: str, title: str, ds: DataSet, many: list[Path], few: list[Path]) -> Group:
        return Group(
            gid,
            title,
            "img",
            {k: SCPS[k] for k in ("dcmtk", "pynetdicom", "dicomnet", "dicomnet-fsync")},
            [
                _store_case("DCMTK storescp", "dcmtk", "dcmtk", ds, many, storescu(many)),
                _store_case(
                    "pynetdicom SCP",
                    "pynetdicom",
                    "pynetdicom",
                    ds,
                    few,
                    storescu(few),
                    note=f"{len(few)} instances" if len(few) != len(many) else "",
                ),
                _store_case(
                    "dicomnet serve --no-fsync", "dicomnet", "dicomnet", ds, many, storescu(many)
                ),
                _store_case(
                    "dicomnet serve (fsync)", "dicomnet", "dicomnet-fsync", ds, many, storescu(many)
                ),
            ],
        )

    if "1" in rows:
        groups.append(
            scp_row(
                "1a", f"SCP: storescu → SCP, {len(ct500)} CT, one association", ct, ct500, ct_py
            )
        )
        groups.append(
            scp_row(
                "1b",
                f"SCP: storescu → SCP, {len(small2000)} small, one association",
                small,
                small2000,
                small_py,
            )
        )

    def scu_row(gid: str, title: str, ds: DataSet, many: list[Path], few: list[Path]) -> Group:
        note = f"{len(few)} instances" if len(few) != len(many) else ""
        return Group(
            gid,
            title,
            "img",
            {"dcmtk": SCPS["dcmtk"]},
            [
                _store_case(
                    "DCMTK storescu", "dcmtk", "dcmtk", ds, many, storescu(many), rss="client"
                ),
                _store_case(
                    "pynetdicom storescu",
                    "pynetdicom",
                    "dcmtk",
                    ds,
                    few,
                    pynetdicom_storescu(few),
                    rss="client",
                    note=note,
                ),
                _store_case(
                    "dicomnet store (CLI)",
                    "dicomnet",
                    "dcmtk",
                    ds,
                    many,
                    dicomnet_store(many),
                    rss="client",
                ),
                _store_case(
                    "dicomnet DicomClient (API)",
                    "dicomnet",
                    "dcmtk",
                    ds,
                    many,
                    dicomnet_api(many),
                    rss="client",
                    inner_time=True,
                ),
            ],
        )

    if "2" in rows:
        groups.append(scu_row("2a", f"SCU → DCMTK storescp, {len(ct500)} CT", ct, ct500, ct_pyscu))
        groups.append(
            scu_row(
                "2b", f"SCU → DCMTK storescp, {len(small2000)} small", small, small2000, small_pyscu
            )
        )

    def same_row(gid: str, title: str, ds: DataSet, many: list[Path], few: list[Path]) -> Group:
        note = f"{len(few)} instances" if len(few) != len(many) else ""
        return Group(
            gid,
            title,
            "img",
            {
                "dcmtk": SCPS["dcmtk"],
                "pynetdicom": SCPS["pynetdicom"],
                "dicomnet": SCPS["dicomnet"],
            },
            [
                _store_case("storescu → storescp", "dcmtk", "dcmtk", ds, many, storescu(many)),
                _store_case(
                    "pynetdicom storescu → pynetdicom SCP",
                    "pynetdicom",
                    "pynetdicom",
                    ds,
                    few,
                    pynetdicom_storescu(few),
                    note=note,
                ),
                _store_case(
                    "dicomnet store → serve --no-fsync",
                    "dicomnet",
                    "dicomnet",
                    ds,
                    many,
                    dicomnet_store(many),
                ),
                _store_case(
                    "DicomClient → serve --no-fsync",
                    "dicomnet",
                    "dicomnet",
                    ds,
                    many,
                    dicomnet_api(many),
                    inner_time=True,
                ),
            ],
        )

    if "tls" in rows:
        groups.append(
            Group(
                "1a-tls",
                f"SCP over TLS: storescu +tls → SCP, {len(ct500)} CT, one association",
                "img",
                {k: SCPS[k] for k in ("dcmtk-tls", "dicomnet-tls")},
                [
                    _store_case(
                        "DCMTK storescp +tls", "dcmtk", "dcmtk-tls", ct, ct500, storescu_tls(ct500)
                    ),
                    _store_case(
                        "dicomnet serve --no-fsync, TLS",
                        "dicomnet",
                        "dicomnet-tls",
                        ct,
                        ct500,
                        storescu_tls(ct500),
                    ),
                ],
            )
        )
        groups.append(
            Group(
                "2a-tls",
                f"SCU over TLS → DCMTK storescp +tls, {len(ct500)} CT",
                "img",
                {"dcmtk-tls": SCPS["dcmtk-tls"]},
                [
                    _store_case(
                        "DCMTK storescu +tls",
                        "dcmtk",
                        "dcmtk-tls",
                        ct,
                        ct500,
                        storescu_tls(ct500),
                        rss="client",
                    ),
                    _store_case(
                        "dicomnet store (CLI), TLS",
                        "dicomnet",
                        "dcmtk-tls",
                        ct,
                        ct500,
                        dicomnet_store_tls(ct500),
                        rss="client",
                    ),
                    _store_case(
                        "dicomnet DicomClient (API), TLS",
                        "dicomnet",
                        "dcmtk-tls",
                        ct,
                        ct500,
                        dicomnet_api_tls(ct500),
                        rss="client",
                        inner_time=True,
                    ),
                ],
            )
        )

    if "3" in rows:
        groups.append(
            same_row("3a", f"same implementation both ends, {len(ct500)} CT", ct, ct500, ct_pyscu)
        )
        groups.append(
            same_row(
                "3b",
                f"same implementation both ends, {len(small2000)} small",
                small,
                small2000,
                small_pyscu,
            )
        )

    def concurrent_row(gid: str, n: int, per: int, per_py: int) -> Group:
        chunks = [ct.files[i * per : (i + 1) * per] for i in range(n)]
        chunks_py = [ct.files[i * per_py : (i + 1) * per_py] for i in range(n)]
        flat = [f for c in chunks for f in c]
        flat_py = [f for c in chunks_py for f in c]
        return Group(
            gid,
            f"{n} concurrent associations (storescu processes) x {per} CT",
            "img",
            {
                "dcmtk-fork": SCPS["dcmtk-fork"],
                "pynetdicom": SCPS["pynetdicom"],
                "dicomnet": SCPS["dicomnet"],
                "dicomnet-workers": SCPS["dicomnet-workers"],
            },
            [
                _store_case(
                    "DCMTK storescp --fork",
                    "dcmtk",
                    "dcmtk-fork",
                    ct,
                    flat,
                    storescu_parallel(chunks),
                ),
                _store_case(
                    "pynetdicom SCP",
                    "pynetdicom",
                    "pynetdicom",
                    ct,
                    flat_py,
                    storescu_parallel(chunks_py),
                    note=f"{n} x {per_py} CT" if per_py != per else "",
                ),
                _store_case(
                    "dicomnet serve --no-fsync",
                    "dicomnet",
                    "dicomnet",
                    ct,
                    flat,
                    storescu_parallel(chunks),
                ),
                _store_case(
                    f"dicomnet serve --no-fsync --workers {os.cpu_count() or 1}",
                    "dicomnet",
                    "dicomnet-workers",
                    ct,
                    flat,
                    storescu_parallel(chunks),
                ),
            ],
        )

    if "4" in rows:
        groups.append(concurrent_row("4a", 8, 100 // q, 25 // q or 1))
        groups.append(concurrent_row("4b", 64, 12 // q or 1, 4 // q or 1))

    if "5" in rows:
        one = big.files
        groups.append(
            Group(
                "5",
                "one 1 GiB multi-frame instance, storescu → SCP",
                "img",
                {
                    "dcmtk-bp": SCPS["dcmtk-bp"],
                    "pynetdicom": SCPS["pynetdicom"],
                    "dicomnet": SCPS["dicomnet"],
                },
                [
                    _store_case(
                        "DCMTK storescp --bit-preserving",
                        "dcmtk",
                        "dcmtk-bp",
                        big,
                        one,
                        storescu(one),
                    ),
                    _store_case(
                        "pynetdicom SCP",
                        "pynetdicom",
                        "pynetdicom",
                        big,
                        one,
                        storescu(one),
                        reps=1,
                    ),
                    _store_case(
                        "dicomnet serve --no-fsync", "dicomnet", "dicomnet", big, one, storescu(one)
                    ),
                ],
            )
        )

    if "6" in rows:
        n, n_py = 5000 // q, 1000 // q
        groups.append(
            Group(
                "6a",
                "C-ECHO round trips in one association, SCU → DCMTK storescp",
                "echo",
                {"dcmtk": SCPS["dcmtk"]},
                [
                    Case("echoscu --repeat", "dcmtk", "dcmtk", echoscu(n), count=n, rss="client"),
                    Case(
                        "pynetdicom AE",
                        "pynetdicom",
                        "dcmtk",
                        api_echo("pynetdicom-echo", n_py),
                        count=n_py,
                        inner_time=True,
                        rss="client",
                    ),
                    Case(
                        "dicomnet DicomClient",
                        "dicomnet",
                        "dcmtk",
                        api_echo("dicomnet-echo", n),
                        count=n,
                        inner_time=True,
                        rss="client",
                    ),
                ],
            )
        )
        groups.append(
            Group(
                "6b",
                "C-ECHO round trips in one association, echoscu --repeat → SCP",
                "echo",
                {
                    "dcmtk": SCPS["dcmtk"],
                    "pynetdicom": SCPS["pynetdicom"],
                    "dicomnet": SCPS["dicomnet"],
                },
                [
                    Case("DCMTK storescp", "dcmtk", "dcmtk", echoscu(n), count=n),
                    Case("pynetdicom SCP", "pynetdicom", "pynetdicom", echoscu(n_py), count=n_py),
                    Case("dicomnet serve", "dicomnet", "dicomnet", echoscu(n), count=n),
                ],
            )
        )
    if "9" in rows:
        jls = data.ensure_jls(ct)
        jls500 = jls.files[: 500 // q]
        groups.append(
            Group(
                "9a",
                f"transcoding: {len(jls500)} CT in JPEG-LS lossless (dcmcjpls) → DCMTK storescp "
                "accepting only uncompressed (decompressed by the sender)",
                "img",
                {"dcmtk": SCPS["dcmtk"]},
                [
                    _store_case(
                        "DCMTK dcmsend --decompress-lossless",
                        "dcmtk",
                        "dcmtk",
                        jls,
                        jls500,
                        dcmsend_decompress(jls500),
                        rss="client",
                    ),
                    _store_case(
                        "dicomnet store",
                        "dicomnet",
                        "dcmtk",
                        jls,
                        jls500,
                        dicomnet_store(jls500),
                        rss="client",
                        note="peak RSS of the main process; codec workers: see 9c",
                    ),
                ],
            )
        )
        ct500 = ct.files[: 500 // q]

        def stored_as_jls(folder: Path, files: list[Path] = ct500) -> str | None:
            syntaxes = data.syntaxes(folder)
            if set(syntaxes) != {"1.2.840.10008.1.2.4.80"}:
                return f"stored in {syntaxes}, not all in JPEG-LS Lossless"
            return data.verify_decoded(folder, ct.expected(files))

        groups.append(
            Group(
                "9b",
                f"transcoding: ingest of {len(ct500)} uncompressed CT kept JPEG-LS lossless "
                "(storescu → SCP)",
                "img",
                {"dcmtk": SCPS["dcmtk"], "dicomnet-jls": SCPS["dicomnet-jls"]},
                [
                    _store_case(
                        f"DCMTK storescp, then dcmcjpls on each file ({os.cpu_count()} at once)",
                        "dcmtk",
                        "dcmtk",
                        ct,
                        ct500,
                        storescu_then_dcmcjpls(ct500),
                        verify=stored_as_jls,
                    ),
                    _store_case(
                        "dicomnet serve --no-fsync --store-as jpeg-ls-lossless",
                        "dicomnet",
                        "dicomnet-jls",
                        ct,
                        ct500,
                        storescu(ct500),
                        verify=stored_as_jls,
                    ),
                ],
            )
        )
    return groups


# --- running --------------------------------------------------------------------------------------


def run_group(group: Group, reps: int, timeout: float) -> list[Result]:
    results = [Result(group, case) for case in group.cases]
    servers: dict[str, Server] = {}
    base = OUT / group.id
    shutil.rmtree(base, ignore_errors=True)
    try:
        for key in group.servers:
            try:
                servers[key] = group.servers[key](base / f"scp-{key}").start()
            except (OSError, RuntimeError, TimeoutError) as exc:
                for result in results:
                    if result.case.server == key:
                        result.failures = [f"the SCP did not start: {exc}"] * 2
        for rep in range(reps):
            shift = rep % len(results)
            for result in results[shift:] + results[:shift]:
                case = result.case
                if len(result.failures) >= 2 or (case.reps is not None and rep >= case.reps):
                    continue  # two failed runs: this case is not tried again
                server = servers[case.server]
                data.clear(server.folder)
                # Write back what earlier runs left dirty in the page cache, so that no run
                # pays for the writeback of another's files (the largest source of variance).
                os.sync()
                cpu0 = server.cpu_seconds()
                timed = run_clients(case.clients(server, base / "client"), base / "client", timeout)
                cpu1 = server.cpu_seconds()
                problem = _check(case, server, timed)
                if problem:
                    result.failures.append(problem)
                    print(f"  {group.id} rep {rep + 1} {case.label}: FAILED: {problem}", flush=True)
                    if not server.alive():
                        servers[case.server] = group.servers[case.server](server.folder).start()
                    continue
                seconds = timed.seconds
                if case.inner_time:
                    seconds = json.loads(timed.output.strip().splitlines()[-1])["seconds"]
                result.times.append(seconds)
                if cpu0 is not None and cpu1 is not None:
                    result.cpu_s.append(cpu1 - cpu0)
                if case.rss == "client":
                    result.rss_mb = max(result.rss_mb or 0.0, timed.max_rss_mb or 0.0) or None
                print(
                    f"  {group.id} rep {rep + 1} {case.label}: {seconds:.3f} s, "
                    f"{case.count / seconds:.0f} {group.unit}/s",
                    flush=True,
                )
        for result in results:
            server = servers.get(result.case.server)
            if result.case.rss == "server" and server and not result.case.server.endswith("fork"):
                result.rss_mb = server.peak_rss_mb()
    finally:
        for server in servers.values():
            server.stop()
    return results


def _check(case: Case, server: Server, timed: Timed) -> str | None:
    if timed.returncode != 0:
        tail = " | ".join(timed.output.strip().splitlines()[-3:])
        return f"client exit code {timed.returncode}: {tail}"
    if not server.alive():
        return "the SCP exited"
    if case.verify is not None:
        return case.verify(server.folder)
    if case.expected:
        return data.verify(server.folder, case.expected)
    return None


# --- report ---------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(results: list[Result]) -> list[str]:
    lines = [
        "| row | workload | implementation | n | best s | ops/s | MB/s | peak RSS MB | xDCMTK | xDCMTK (medians) | xpynetdicom |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by_group: dict[str, list[Result]] = {}
    for r in results:
        by_group.setdefault(r.group.id, []).append(r)
    for gid, rs in by_group.items():
        title = rs[0].group.title
        peers = {r.case.role: r.rate for r in rs if r.case.role != "dicomnet"}
        medians = {r.case.role: r.median_rate for r in rs if r.case.role != "dicomnet"}
        for n, r in enumerate(rs):
            if n:
                title = ""  # the workload is named on the row's first line only
            rate = r.rate
            ratios = ["", "", ""]
            if r.case.role == "dicomnet" and rate:
                for i, role in enumerate(("dcmtk", "pynetdicom")):
                    other = peers.get(role)
                    ratios[2 * i] = f"{rate / other:.2f}" if other else "-"
                mine, theirs = r.median_rate, medians.get("dcmtk")
                ratios[1] = f"{mine / theirs:.2f}" if mine and theirs else "-"
            mbs = r.case.nbytes / 1e6 / r.best if r.best and r.case.nbytes else None
            label = r.case.label + (f" ({r.case.note})" if r.case.note else "")
            if r.failures and r.times:
                label += f" ({len(r.failures)} failed run(s): {r.failures[-1][:200]})"
            if r.error:
                lines.append(
                    f"| {gid} | {title} | {label} | {r.case.count} | FAILED: {r.error} | | | | | | |"
                )
                continue
            rss = _fmt(r.rss_mb) + (" (client)" if r.case.rss == "client" and r.rss_mb else "")
            lines.append(
                f"| {gid} | {title} | {label} | {r.case.count} | {_fmt(r.best, 3)} | "
                f"{_fmt(rate, 2 if rate and rate < 10 else 0)} {r.group.unit}/s | {_fmt(mbs, 1)} | {rss} | {ratios[0]} | {ratios[1]} | {ratios[2]} |"
            )
    return lines


def details(results: list[Result]) -> list[str]:
    lines = [
        "| row | implementation | all times s | median s | SCP CPU s (best run) |",
        "|---|---|---|---:|---:|",
    ]
    for r in results:
        if not r.times:
            continue
        times = ", ".join(f"{t:.3f}" for t in r.times)
        best = r.times.index(min(r.times))
        cpu = (
            _fmt(r.cpu_s[best], 2)
            if best < len(r.cpu_s) and not r.case.server.endswith("fork")
            else "-"
        )
        lines.append(
            f"| {r.group.id} | {r.case.label} | {times} | {statistics.median(r.times):.3f} | {cpu} |"
        )
    return lines


def write_results(
    path: Path,
    results: list[Result],
    info: dict[str, object],
    args: argparse.Namespace,
    elapsed: float,
    qr_tables: str = "",
    web_tables: str = "",
) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = [
        "# dicomnet benchmark results",
        "",
        f"Run {now} with `{shlex.join(['python', 'bench/run.py', *sys.argv[1:]])}` "
        f"({elapsed:.0f} s). How each row is measured: bench/README.md.",
        "",
        f"- machine: {info['cpu']}, {info['cores']} cores, {info['ram_gb']} GB RAM, Linux {info['kernel']}",
        f"- versions: Python {info['python']}, dicomnet {info['dicomnet']} ({info['git']}), "
        f"pydicom {info['pydicom']}, pynetdicom {info['pynetdicom']}, uvloop {info['uvloop']}, {info['dcmtk']}",
        f"- {args.reps} repetition(s) per row, implementations alternating round-robin; the table shows the "
        "best (shortest) run, the details every run.",
        "- ops/s: instances (or C-ECHOs) per second; MB/s: Part 10 file bytes sent per second (10^6 bytes). "
        "xDCMTK and xpynetdicom: dicomnet's rate divided by the peer's rate in the same row (> 1: dicomnet faster), "
        "from the best runs; xDCMTK (medians) from the median runs, less sensitive to one lucky or unlucky run.",
        "- peak RSS: VmHWM of the SCP process (whole run of the row); '(client)' rows give the client's "
        "peak instead; DCMTK --fork children are not measured (-).",
    ]
    text.append(
        f"- start-up of the Python command lines (best of 3, included in their rows): "
        f"`dicomnet --version` {info['startup_dicomnet']:.2f} s, "
        f"`python -m pynetdicom --version` {info['startup_pynetdicom']:.2f} s"
    )
    if args.note:
        text.append(f"- note: {args.note}")
    text += ["", *table(results), ""]
    if qr_tables:
        text += ["## Row 7: query/retrieve (bench/qr.py)", "", qr_tables, ""]
    if web_tables:
        text += ["## Row 8: DICOMweb against Orthanc (bench/web.py)", "", web_tables, ""]
    text += ["## Every run", "", *details(results), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(text))


# --- profile --------------------------------------------------------------------------------------


def profile(sets: dict[str, DataSet], tool: str, rounds: int, top: int) -> None:
    """Row 1's workloads into ``dicomnet serve --no-fsync`` under py-spy or cProfile; prints the
    functions that take the most time."""
    base = OUT / "profile"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    pyspy = BIN / "py-spy"
    if tool == "auto":
        tool = "py-spy" if pyspy.exists() else "cprofile"
    stats = base / ("pyspy.txt" if tool == "py-spy" else "serve.prof")
    prefix = [PYTHON, "-m", "cProfile", "-o", str(stats)] if tool == "cprofile" else None
    server = dicomnet_scp(base / "scp", profile=prefix)
    spy = None
    try:
        server.start()
        if tool == "py-spy":
            import subprocess

            spy_log = open(base / "py-spy.log", "wb")  # noqa: SIM115
            spy = subprocess.Popen(
                [
                    str(pyspy),
                    "record",
                    "--pid",
                    str(server.pid),
                    *SPY_ARGS,
                    "-o",
                    str(stats),
                ],
                stdout=spy_log,
                stderr=subprocess.STDOUT,
            )
            time.sleep(0.5)  # py-spy needs a moment to attach; there is no readiness signal
        for _ in range(rounds):
            for ds, files in (
                (sets["ct"], sets["ct"].files[:500]),
                (sets["small"], sets["small"].files),
            ):
                data.clear(server.folder)
                timed = run_clients(storescu(files)(server, base), base / "client", 300)
                problem = _check(
                    _store_case("p", "dicomnet", "", ds, files, storescu(files)), server, timed
                )
                print(
                    f"  {len(files)} {ds.name}: {timed.seconds:.3f} s {problem or 'ok'}", flush=True
                )
    finally:
        if spy is not None:
            import signal

            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(60)
            except Exception:
                spy.kill()
                spy.wait(10)
        server.stop()
    if tool == "py-spy":
        if not stats.exists():
            print(f"py-spy wrote nothing:\n{(base / 'py-spy.log').read_text()}")
            return
        _print_collapsed(stats, top)
    else:
        import pstats

        p = pstats.Stats(str(stats))
        p.sort_stats("tottime").print_stats(top)
        p.sort_stats("cumulative").print_stats(top)


def _print_collapsed(path: Path, top: int) -> None:
    """Self and inclusive sample counts per function from py-spy's collapsed stacks."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = waiting = 0
    for line in path.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        # One entry per function: "name (file:line)" loses its line number.
        frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")]
        if frames[-1].startswith(WAITING):
            waiting += count
            continue
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            incl[frame] = incl.get(frame, 0) + count
    if not total:
        print("py-spy recorded no samples (can it attach? it needs ptrace)")
        return
    print(
        f"\n{total} samples of the busy SCP ({waiting} more of threads waiting for work left out;"
        " 'Runner.run' as a leaf is time in the event loop's C code)\n\nself %  function"
    )
    for name, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{100 * n / total:6.1f}  {name}")
    print("\ninclusive %  function (dicomnet's own, below the command line)")
    ours = {k: v for k, v in incl.items() if "(dicomnet/" in k and "(dicomnet/cli/" not in k}
    for name, n in sorted(ours.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{100 * n / total:6.1f}  {name}")
    print(f"\ncollapsed stacks (for flame graphs): {path}")


# --- main -----------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 1/10 of the counts, one repetition, no 1 GiB row",
    )
    parser.add_argument(
        "--rows",
        default=None,
        help="rows to run, e.g. 1,2,5 (default: all; --quick: 1,2,3,4,6,7,8,9,tls; 7 is "
        "bench/qr.py, 8 bench/web.py, 9 the transcoding rows, tls rows 1a and 2a over TLS)",
    )
    parser.add_argument(
        "--reps", type=int, default=None, help="repetitions per row (default 3; --quick 1)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="results file (default bench/results.md; --quick: bench/out/results-quick.md)",
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds allowed for one client run"
    )
    parser.add_argument(
        "--note",
        default="",
        help="a sentence for the results page (e.g. what else ran on the machine)",
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="auto",
        choices=["auto", "py-spy", "cprofile"],
        help="instead of the rows: row 1 into dicomnet serve under py-spy (if installed) or cProfile, print the top functions",
    )
    parser.add_argument("--profile-rounds", type=int, default=3)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    args.reps = args.reps or (1 if args.quick else 3)
    rows = set(
        (args.rows or ("1,2,3,4,6,7,8,9,tls" if args.quick else "1,2,3,4,5,6,7,8,9,tls")).split(",")
    )
    output = args.output or (OUT / "results-quick.md" if args.quick else BENCH / "results.md")

    sets = data.ensure()
    if args.profile:
        profile(sets, args.profile, args.profile_rounds, args.top)
        return 0
    info = machine()
    start = time.perf_counter()
    results: list[Result] = []
    for group in build_groups(sets, args.quick, rows):
        print(f"row {group.id}: {group.title}", flush=True)
        results.extend(run_group(group, args.reps, args.timeout))
    qr_tables = ""
    qr_failed = False
    if "7" in rows:
        import qr

        print("row 7: query/retrieve (bench/qr.py)", flush=True)
        find, retrieve = qr.run(args.quick)
        qr_tables = qr.markdown(find, retrieve)
        qr_failed = any(r.problem for r in retrieve)
    web_tables = ""
    web_failed = False
    if "8" in rows:
        web_tables, web_failed = run_web(args.quick)
    elapsed = time.perf_counter() - start
    write_results(output, results, info, args, elapsed, qr_tables, web_tables)
    print("\n".join(table(results)))
    print(f"\n{elapsed:.0f} s; written to {output}")
    if qr_tables:
        print(qr_tables)
    if web_tables:
        print(web_tables)
    return 1 if qr_failed or web_failed or any(r.error for r in results) else 0


def run_web(quick: bool) -> tuple[str, bool]:
    """Row 8: bench/web.py in its own process (it runs in a network namespace of its own);
    (its table, whether it failed). Without Orthanc the row is left out with a note."""
    import subprocess

    import web

    print("row 8: DICOMweb against Orthanc (bench/web.py)", flush=True)
    if not (Path(web.ORTHANC).exists() and Path(web.ORTHANC_PLUGIN).exists()):
        note = "Orthanc is not installed (apt-get install orthanc orthanc-dicomweb): row 8 left out"
        print(f"  {note}", flush=True)
        return f"({note})", False
    out = OUT / "web.md"
    out.unlink(missing_ok=True)
    command = [PYTHON, str(BENCH / "web.py"), "--output", str(out), *(["--quick"] if quick else [])]
    code = subprocess.run(command, check=False).returncode
    if not out.exists():
        return f"(bench/web.py failed with exit code {code}; its output is above)", True
    return out.read_text().strip(), code != 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
