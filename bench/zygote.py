"""A warm interpreter that forks one `connector` process per request (a zygote).

Importing the connector costs a new interpreter about 0.4 s, more than a small sync's own work;
a soak of hundreds of runs would measure imports. This process imports the command line and
what `connector sync` loads once, then for each request forks a child that sets the request's
environment and runs `connector <argv>` exactly as `python -m connector` does (connector.cli
`main`). The child is a real process with its own memory: SIGKILL ends it as it would any run.

Protocol, one JSON line each way on standard input/output: a request
{"argv": [...], "env": {...}, "stderr": path, "kill_after": seconds or null} is answered by
{"exit": code, "killed": bool, "seconds": wall}. The zygote kills its own child (SIGKILL) when
`kill_after` passes, or when a line "kill" arrives while the child runs, so the kill never
hits a reused process id. Code -9: killed (by the zygote, or by a failpoint in the run).
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import sys
import time
from typing import Any


def _child(job: dict[str, Any]) -> None:
    """In the forked child: never returns."""
    code = 70
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)  # not the zygote's answer pipe
        err = os.open(job["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(err, 2)
        os.environ.clear()
        os.environ.update(job["env"])
        random.seed()  # retry jitter differs between runs, as in separate processes
        sys.argv = ["connector", *job["argv"]]
        from connector.cli import main

        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


class _Lines:
    """Lines from standard input without Python's buffering, so select() sees what is left."""

    def __init__(self) -> None:
        self.buffer = b""
        self.ended = False  # standard input closed: the soak has gone

    def ready(self, timeout: float) -> bool:
        if b"\n" in self.buffer or self.ended:
            return True
        return bool(select.select([0], [], [], timeout)[0])

    def read(self) -> str | None:
        while b"\n" not in self.buffer:
            chunk = b"" if self.ended else os.read(0, 65536)
            if not chunk:
                self.ended = True
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()


def _wait(pid: int, kill_after: float | None, lines: _Lines) -> tuple[int, bool]:
    deadline = None if kill_after is None else time.monotonic() + kill_after
    killed = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            # Killed by us only if the kill came before it ended (or its own failpoint did).
            return code, killed and code == -signal.SIGKILL
        # Asked to, or the soak has gone (nobody would reap the run or read its answer).
        asked = lines.ready(0.002) and lines.read() in ("kill", None)
        if not killed and (asked or (deadline is not None and time.monotonic() >= deadline)):
            os.kill(pid, signal.SIGKILL)  # our own unreaped child: the id cannot be reused
            killed = True


def serve() -> None:
    # What `connector sync` imports when it runs; the command line itself imports little.
    import connector.cli
    import connector.render
    import connector.sync
    import connector.targets.fortnox.client
    import connector.targets.visma.client  # noqa: F401

    lines = _Lines()
    while (line := lines.read()) is not None:
        if line == "kill":
            continue  # came after its run ended by itself
        job = json.loads(line)
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            _child(job)
        code, killed = _wait(pid, job.get("kill_after"), lines)
        answer = {"exit": code, "killed": killed, "seconds": time.monotonic() - started}
        try:
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()
        except BrokenPipeError:
            return  # the soak has gone


if __name__ == "__main__":
    serve()
