"""Which LLM the stack uses, and the interface it needs from the embedded model's venv."""

import inspect
from pathlib import Path

import pytest
from infergate_devstack.components.llm import choose_llm, llm_venv
from infergate_devstack.ports import free_ports


def test_a_running_ollama_is_used_as_it_is(ollama_banner: str, tmp_path: Path) -> None:
    choice = choose_llm(
        ollama_url=ollama_banner + "/",
        port=free_ports(1)[0],
        repo_root=tmp_path,
        log_path=tmp_path / "llm.log",
        progress=print,
    )

    assert choice.url == ollama_banner
    assert choice.description == f"Ollama at {ollama_banner}"
    assert choice.spec is None


def test_the_llm_venv_module_offers_what_the_stack_calls(tmp_path: Path) -> None:
    pytest.importorskip("infergate_devstack.llm_venv")
    venv = llm_venv()

    argv = venv.server_command(Path("/venv/bin/python"), host="127.0.0.1", port=1234)
    env = venv.server_env(tmp_path, {"KEPT": "1"})

    assert argv[:3] == ["/venv/bin/python", "-m", "infergate_local_llm"]
    assert argv[-4:] == ["--host", "127.0.0.1", "--port", "1234"]
    assert env["KEPT"] == "1"
    assert env["PYTHONPATH"] == str(tmp_path / "local-llm" / "src")
    assert "progress" in inspect.signature(venv.ensure_llm_venv).parameters
