"""README's "A modality's day", run as it is written: the block is read from README.md, the
`dicomnet serve ... &` line is started (and waited for) by the test, and the rest runs in bash with
`set -e`, on free ports instead of 11112/11113, in a temporary folder with three CT images in
`images/`. What each step printed is checked, and what the archive kept."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
from pathlib import Path

from tests.cli.conftest import DICOMNET
from tests.helpers import free_port, wait_for_port, write_ct

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_block() -> str:
    text = README.read_text()
    section = text.split("### A modality's day", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert match is not None, "no sh block under 'A modality's day'"
    return match.group(1)


def test_the_readme_walk_through_runs(tmp_path: Path) -> None:
    block = readme_block()
    archive_port, listen_port = free_port(), free_port()
    block = block.replace("11112", str(archive_port)).replace("11113", str(listen_port))
    lines = block.splitlines()
    [serve_line] = [line for line in lines if line.startswith("dicomnet serve")]
    assert serve_line.endswith("&")
    script = "\n".join(line for line in lines if line != serve_line)
    uids = [str(write_ct(tmp_path / "images" / f"{n}.dcm").SOPInstanceUID) for n in range(3)]

    serve_args = shlex.split(serve_line.rstrip("& "))[1:]
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [*DICOMNET, *serve_args], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_for_port(archive_port, server, timeout=30)  # type: ignore[arg-type]
        command = " ".join(shlex.quote(part) for part in DICOMNET)
        prelude = f'set -euo pipefail\ndicomnet() {{ {command} "$@"; }}\n'
        result = subprocess.run(
            ["bash", "-c", prelude + script],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
    served = (tmp_path / "serve.log").read_text()
    assert result.returncode == 0, result.stdout + result.stderr + served
    out = result.stdout
    # 3: CT1's worklist: John Doe's CT, not Jane Roe's MR.
    assert "Doe^John" in out and "SPS100" in out and "Roe^Jane" not in out.split("committed")[0]
    # 7: every image committed, reported on CT1's association.
    assert sum(line.startswith("committed  images/") for line in out.splitlines()) == 3
    assert "sent to CT1 on its association: 3 committed, 0 failed" in served
    # 8: the worklist as added, and the MPPS completed, linked to item A100.
    assert "A100|RP100|SPS100" in out and "A200|RP200|SPS200" in out
    assert re.search(r"COMPLETED\s*│\s*A100\|RP100\|SPS100\s*│\s*CT1", out), out
    assert "worklist C-FIND: 1 item" in served
    assert all(uid in served for uid in uids)  # stored
