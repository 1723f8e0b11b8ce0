"""The runner: many huref CLI runs in one process (torch and huref imported once).

`python -m huref_lab.hostile CASES.json RESULTS.json` runs every case of CASES.json (written by
`huref_lab.hostile.cases.cases_json`), each under a time limit, the whole batch under an
address-space cap (`MEMORY_CAP`), and writes per case: exit code, stdout, stderr, seconds, and
the growth of the peak resident memory during the case.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path

MEMORY_CAP = 3 << 30  # bytes of address space for a whole batch
CASE_SECONDS = 10  # time limit of one case beyond its normal run time (the tiny inputs take well under 1 s)


class CaseTimeout(BaseException):
    """A case ran past its time limit (not an Exception: huref's handlers must not catch it)."""


def run_case(case_: dict, seconds: int) -> dict:
    """Run `huref ARGV` in this process: {"code", "stdout", "stderr", "seconds", "rss_growth_mb"}.
    With `interrupt_after`, SIGINT is sent that many seconds into the run (as Ctrl-C would); it
    interrupts huref only while huref runs, never the runner."""
    import resource
    import signal
    import threading
    import time

    from huref import cli

    running = [False]

    def expire(signum, frame):
        raise CaseTimeout()

    def interrupt(signum, frame):
        if running[0]:
            raise KeyboardInterrupt

    saved_env = {key: os.environ.get(key) for key in case_["env"]}
    os.environ.update(case_["env"])
    out, err = io.StringIO(), io.StringIO()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    old = signal.signal(signal.SIGALRM, expire)
    old_interrupt = signal.signal(signal.SIGINT, interrupt)
    timer = None
    if case_.get("interrupt_after") is not None:
        timer = threading.Timer(case_["interrupt_after"], os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
    signal.alarm(seconds)
    sys.argv = ["huref", *case_["argv"]]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            running[0] = True
            cli.main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except CaseTimeout:
        code = "timeout"
    except BaseException as error:  # what main() let escape: reported, never hidden
        code = f"escaped {type(error).__name__}: {error}"[:300]
    finally:
        running[0] = False
        signal.alarm(0)
        if timer is not None:
            timer.cancel()
            timer.join()
        signal.signal(signal.SIGALRM, old)
        signal.signal(signal.SIGINT, old_interrupt)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    seconds_taken = time.monotonic() - start
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    return {"code": code, "stdout": out.getvalue()[-2000:], "stderr": err.getvalue()[-5000:],
            "stderr_chars": len(err.getvalue()), "seconds": round(seconds_taken, 3), "rss_growth_mb": round(growth, 1)}


def run_concurrently(case_: dict, seconds: int) -> dict:
    """`concurrent` forked copies of run_case at once: {"code": [exit codes], ...}."""
    children = []
    for _ in range(case_["concurrent"]):
        pid = os.fork()
        if pid == 0:
            try:
                code = run_case(case_, seconds)["code"]
            finally:
                os._exit(code if isinstance(code, int) else 99)
        children.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    return {"code": codes, "stdout": "", "stderr": "", "stderr_chars": 0, "seconds": 0.0, "rss_growth_mb": 0.0}


def main(argv: list[str]) -> None:
    """python -m huref_lab.hostile CASES.json RESULTS.json: run each case, write {name: result}."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    import torch

    torch.set_num_threads(1)
    cases = json.loads(Path(argv[0]).read_text())
    results = {}
    for name, case_ in cases.items():
        run = run_concurrently if case_["concurrent"] else run_case
        results[name] = run(case_, case_.get("limit") or CASE_SECONDS)
        Path(argv[1]).write_text(json.dumps(results))


