"""LiteLLM's proxy, the peer the benchmark compares against, in its own virtual environment.

`litellm[proxy]` brings about 115 packages (its own FastAPI, uvicorn, boto3, ...) whose versions
must not leak into the workspace's, so it never goes into the workspace venv. Like the local
LLM's runtime (infergate_devstack.llm_venv, whose build helpers this reuses: the lock, the log,
the progress ticker), it lives under ~/.cache/infergate, is built on first use in a temporary
directory and renamed into place once complete (the published `bin/python` is the marker that
makes it idempotent), and is named after everything that decides its contents, so a fresh clone
reuses it. The version is pinned exactly and the rest of the resolution is pinned by date
(`--exclude-newer`, the day after that release), so every machine measures the same code.
"""

from __future__ import annotations

import platform
import shutil
import sys
import tempfile
from pathlib import Path

# The embedded model's build helpers, reused.
from infergate_devstack.llm_venv import (
    LlmVenvError,
    Progress,
    Ticker,
    build_in_staging,
    default_cache_dir,
    exclusive_lock,
    remove_stale_builds,
)

LITELLM_VERSION = "1.108.7"
REQUIREMENT = f"litellm[proxy]=={LITELLM_VERSION}"
# 1.108.7 was uploaded to PyPI on 2026-11-12: its dependencies as they were that day.
EXCLUDE_NEWER = "2026-11-13T00:00:00Z"
# Importing the proxy is the check; the cost map must come from the package (the machine may be
# offline, and LiteLLM otherwise fetches it from GitHub at import).
_SELF_CHECK = (
    "import os; os.environ['LITELLM_LOCAL_MODEL_COST_MAP'] = 'True'; "
    "import litellm.proxy.proxy_cli, uvicorn, yaml"
)


def litellm_venv_dir(*, cache_dir: Path | None = None) -> Path:
    """The venv's path: a function of the pinned version, the date pin and the interpreter."""
    interpreter = f"{platform.python_implementation()}-{sys.version_info[0]}.{sys.version_info[1]}"
    tag = f"{LITELLM_VERSION}-{EXCLUDE_NEWER[:10]}-{interpreter}-{platform.machine()}".lower()
    return (cache_dir or default_cache_dir()) / f"litellm-venv-{tag}"


def ensure_litellm_venv(*, progress: Progress, cache_dir: Path | None = None) -> Path:
    """Return the python executable of LiteLLM's venv, building the venv first if needed."""
    target = litellm_venv_dir(cache_dir=cache_dir)
    python = target / "bin" / "python"
    if python.exists():
        return python
    target.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(target.with_name(target.name + ".lock"), progress=progress):
        if not python.exists():  # another process may have built it while we waited
            remove_stale_builds(target)
            _build(target, progress=progress)
    return python


def _build(target: Path, *, progress: Progress) -> None:
    uv = shutil.which("uv")
    if uv is None:
        raise LlmVenvError("the `uv` executable is not on PATH")
    log_path = target.with_name(target.name + ".log")
    staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.tmp-", dir=target.parent))
    python = staging / "bin" / "python"
    progress(f"creating LiteLLM's venv ({REQUIREMENT}) at {target} (log: {log_path})")
    steps = [
        [uv, "venv", "--quiet", "--clear", "--relocatable", "--python", sys.executable],
        [uv, "pip", "install", "--python", str(python), "--exclude-newer", EXCLUDE_NEWER],
        [str(python), "-c", _SELF_CHECK],
    ]
    steps[0].append(str(staging))
    steps[1].append(REQUIREMENT)
    ticker = Ticker(f"installing {REQUIREMENT} (first run only)", progress)
    build_in_staging(steps, staging=staging, target=target, log_path=log_path, ticker=ticker)
    progress(f"LiteLLM's venv ready in {ticker.elapsed():.0f} s")
