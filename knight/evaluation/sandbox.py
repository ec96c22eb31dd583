"""The OS sandbox around worker processes (defence in depth behind the static allowlist).

With bubblewrap (`bwrap`, Debian package `bubblewrap`) a worker runs in fresh network, PID, IPC
and UTS namespaces (no network at all, not even loopback to the parent's services; no other
process visible), with every capability dropped, a clean environment, and a filesystem that
holds only read-only copies of the system libraries, the Python installation, Knight's own
package and the folders the request needs (a problem folder; for executors the input cache,
writable), plus a private writable /tmp that disappears with it. The parent's working folder,
home, database and other files are simply absent.

`KNIGHT_SANDBOX` chooses: `auto` (default: bubblewrap when it works here, else none, with a
`KnightWarning` that says so), `bwrap`
(required: starting a worker fails without it) or `none`. Without a sandbox what remains is the
static allowlist, a scrubbed environment, an empty temporary working folder, resource limits
(memory, file size, open files) and the data-free tracer.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path

import knight
from knight.errors import KnightError, KnightWarning

MODES = ("auto", "bwrap", "none")
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf")


def mode() -> str:
    """The sandbox in force: "bwrap" or "none" (from `KNIGHT_SANDBOX`, probing bwrap on auto)."""
    want = os.environ.get("KNIGHT_SANDBOX", "auto").strip().lower() or "auto"
    if want not in MODES:
        raise KnightError(f"KNIGHT_SANDBOX must be one of {', '.join(MODES)}, not {want!r}")
    if want == "none":
        return "none"
    if _bwrap_works():
        return "bwrap"
    if want == "bwrap":
        raise KnightError(
            "KNIGHT_SANDBOX=bwrap but bubblewrap is missing or cannot create namespaces here"
        )
    warnings.warn(NO_SANDBOX, KnightWarning, stacklevel=1)  # once per process: one location
    return "none"


NO_SANDBOX = (
    "no OS sandbox here (bubblewrap is missing or cannot create namespaces): candidate kernels "
    "run in isolated worker processes without it; install bubblewrap, or set "
    "KNIGHT_SANDBOX=bwrap to refuse to run without it"
)


@functools.cache
def _bwrap_works() -> bool:
    exe = shutil.which("bwrap")
    if exe is None:
        return False
    try:
        probe = subprocess.run(
            [exe, *_base_args(), "--", sys.executable, "-c", "pass"],
            capture_output=True,
            timeout=30,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


def _python_dirs() -> list[Path]:
    dirs = {
        Path(sys.prefix),
        Path(sys.base_prefix),
        Path(os.path.realpath(sys.executable)).parent.parent,
    }
    return sorted(dirs)


def _base_args() -> list[str]:
    args: list[str] = []
    for d in _SYSTEM_DIRS:
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    for f in _SYSTEM_FILES:
        if os.path.exists(f):
            args += ["--ro-bind", f, f]
    args += [
        "--tmpfs", "/tmp", "--proc", "/proc", "--dev", "/dev", "--chdir", "/tmp",
        "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
        "--die-with-parent", "--cap-drop", "ALL", "--clearenv",
    ]  # fmt: skip
    # After the private /tmp, which would hide them: a virtualenv may live under /tmp (CI), and on
    # a Ray node the package Ray ships lives there.
    package = Path(knight.__file__).resolve().parent
    for d in [*_python_dirs(), package]:
        args += ["--ro-bind", str(d), str(d)]
    return args


def wrap(
    argv: list[str],
    env: dict[str, str],
    *,
    readable: Iterable[Path] = (),
    writable: Iterable[Path] = (),
) -> tuple[list[str], dict[str, str], str | None]:
    """(command, environment, working folder) that run `argv` sandboxed when a sandbox is in
    force. Inside, the working folder and HOME are the private /tmp."""
    if mode() != "bwrap":
        return argv, env, None
    args = [shutil.which("bwrap") or "bwrap", *_base_args()]
    for p in readable:
        args += ["--ro-bind", str(p), str(p)]
    for p in writable:
        p.mkdir(parents=True, exist_ok=True)
        args += ["--bind", str(p), str(p)]
    inner = {**env, "HOME": "/tmp", "TMPDIR": "/tmp"}
    for k, v in inner.items():
        args += ["--setenv", k, v]
    return [*args, "--", *argv], {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, "/"
