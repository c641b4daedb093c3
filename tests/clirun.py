"""The ``routed-rl`` command line as tests run it: the installed script in a subprocess, or its ``main`` here.

Use :func:`cli` where the process matters (signals, exit codes, tracebacks, start-up, trial subprocesses) and
:func:`cli_here` elsewhere: it runs the same code without paying an interpreter and torch start-up (~3 s on
2 cores) per call. Both make this folder importable, where the tests' user labelers, envs and outcome
functions live.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """The installed ``routed-rl`` script run in ``cwd``."""
    exe = Path(sys.executable).with_name("routed-rl")
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def cli_here(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The script's ``main`` run in this process, in ``cwd``, its output captured. An exception other than
    ``SystemExit`` propagates and fails the test, as a traceback would fail the subprocess's checks."""
    from routed_rl.cli import main

    out, err, here, argv = io.StringIO(), io.StringIO(), Path.cwd(), sys.argv
    os.chdir(cwd)
    sys.argv = ["routed-rl", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        os.chdir(here)
        sys.argv = argv
    return subprocess.CompletedProcess(["routed-rl", *args], code, out.getvalue(), err.getvalue())
