"""Prerequisites of the local stack: Debian's redis-server, nginx and prometheus (with promtool),
and SecantusDB (the MongoDB stand-in) in a venv of its own; for the browser tests of the web
console, Debian's chromium (Playwright drives it: its own browser download needs the network).
Only what is missing is installed."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

SECANTUS_VERSION = "0.7.0b3"
# program -> Debian package (openssl makes the local stack's TLS certificate)
APT_PROGRAMS = {
    "redis-server": "redis-server",
    "nginx": "nginx",
    "openssl": "openssl",
    "prometheus": "prometheus",
    "promtool": "prometheus",
}
# program -> Debian package, for the browser tests only (`install --browser`, `make test`).
BROWSER_PROGRAMS = {"chromium": "chromium"}
_SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
_POLICY_RC_D = Path("/usr/sbin/policy-rc.d")

Progress = Callable[[str], None]


class InstallError(RuntimeError):
    """A prerequisite could not be installed."""


def cache_root() -> Path:
    """Where venvs shared by every clone of the repo live (`~/.cache/infergate`)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "infergate"


def find_program(name: str) -> Path | None:
    """`name` on PATH, or in the sbin directories a non-root PATH often lacks (nginx)."""
    found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(_SBIN_DIRS))
    return Path(found) if found else None


def require_program(name: str) -> Path:
    path = find_program(name)
    if path is None:
        raise InstallError(f"{name} not found; run `make install`")
    return path


def ensure_apt_programs(progress: Progress, programs: Mapping[str, str] = APT_PROGRAMS) -> None:
    """apt-get install the Debian packages whose programs are missing (update first on failure)."""
    missing = sorted({pkg for prog, pkg in programs.items() if find_program(prog) is None})
    if not missing:
        return
    progress(f"installing {' '.join(missing)} with apt-get")
    install = [*_root_prefix(missing), "apt-get", "install", "-y", "--no-install-recommends"]
    install += missing
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with _services_not_autostarted():
        if subprocess.run(install, env=env, check=False).returncode != 0:
            subprocess.run([*_root_prefix(missing), "apt-get", "update"], env=env, check=True)
            subprocess.run(install, env=env, check=True)


def ensure_browser(progress: Progress) -> Path:
    """Chromium for the console's browser tests, installed with apt-get if it is missing."""
    ensure_apt_programs(progress, BROWSER_PROGRAMS)
    return require_program("chromium")


def _root_prefix(packages: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo"):
        return ["sudo", "-n"]
    raise InstallError(
        f"installing Debian packages needs root: run `apt-get install {' '.join(packages)}` as root"
    )


@contextlib.contextmanager
def _services_not_autostarted() -> Iterator[None]:
    """Keep Debian's postinst from starting the system redis (6379), nginx (80) and prometheus
    (9090): the stack runs its own. policy-rc.d exit 101 is Debian's documented "action
    forbidden"."""
    if os.geteuid() != 0 or _POLICY_RC_D.exists():
        yield
        return
    _POLICY_RC_D.write_text("#!/bin/sh\nexit 101\n")
    _POLICY_RC_D.chmod(0o755)
    try:
        yield
    finally:
        _POLICY_RC_D.unlink(missing_ok=True)


def uv_program() -> Path:
    """uv: `uv run` exports its own path as $UV; otherwise PATH (where the Makefile puts it)."""
    found = os.environ.get("UV") or shutil.which("uv")
    if not found:
        raise InstallError("uv not found; run `make install` (it installs uv)")
    return Path(found)


def secantus_venv() -> Path:
    return cache_root() / f"secantus-venv-{SECANTUS_VERSION}"


def secantusd_program() -> Path:
    return secantus_venv() / "bin" / "secantusd-py"


def ensure_secantus(progress: Progress) -> Path:
    """The SecantusDB server program, installing it on first use.

    It is GPL-2.0, so it lives in its own venv and only ever runs as a separate process. The venv
    is built in a temporary directory and renamed into place, so a crash or a concurrent install
    never leaves a half-built venv where the next run would take it for a finished one."""
    program = secantusd_program()
    if program.exists():
        return program
    progress(f"installing SecantusDB {SECANTUS_VERSION} into {secantus_venv()}")
    cache_root().mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=".secantus-", dir=cache_root()))
    building.chmod(0o755)  # mkdtemp makes it private; the venv is for every user of this home
    try:
        _build_secantus_venv(building)
        try:
            building.rename(secantus_venv())
        except OSError:
            if not program.exists():  # not a concurrent install that won the race
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return program


def _build_secantus_venv(venv: Path) -> None:
    uv = str(uv_program())
    # --relocatable: the venv is renamed after it is built, so its scripts must not embed its path.
    _run([uv, "venv", "--quiet", "--relocatable", "--python", sys.executable, str(venv)])
    python = str(venv / "bin" / "python")
    _run([uv, "pip", "install", "--quiet", "--python", python, f"secantusdb=={SECANTUS_VERSION}"])


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise InstallError(f"{' '.join(argv)} failed:\n{result.stdout}{result.stderr}")


def ensure_all(progress: Progress) -> None:
    """Everything the stack needs except the embedded LLM (built on demand: it compiles)."""
    ensure_apt_programs(progress)
    uv_program()
    ensure_secantus(progress)
