"""What `run` prints once the stack is ready: where everything is and how to try it."""

from __future__ import annotations

from infergate_devstack.stack import Stack

_SERVICES = (
    ("gateway", "api-gateway"),
    ("auth", "auth-service"),
    ("usage", "usage-service"),
    ("ai", "ai-service"),
)


def format_summary(stack: Stack, *, startup_s: float) -> str:
    public = stack.public_url
    rows = [("Public API (nginx)", public), ("Web console", stack.console_url)]
    for component, label in _SERVICES:
        names = stack.replica_names(component)
        rows += [
            (label if len(names) == 1 else f"{label} {i + 1}/{len(names)}", stack.service_url(name))
            for i, name in enumerate(names)
        ]
    rows += [
        ("Redis", f"127.0.0.1:{stack.redis_port} (ACL users: {stack.data_dir}/secrets.json)"),
        ("MongoDB (SecantusDB)", f"127.0.0.1:{stack.mongo_port} (users: the same file)"),
        ("LLM", stack.llm_description),
    ]
    if stack.admin_enabled:
        admin = f"on (ADMIN_TOKEN): operator console at {stack.operator_url}/ (127.0.0.1 only)"
        rows.append(("Admin API", admin + ", which proxies /admin/; never on the public port"))
    else:
        rows.append(("Admin API", "off (set ADMIN_TOKEN, 16+ characters, to turn it on)"))
    if "prometheus" in stack.components:
        rows.append(
            ("Prometheus", f"{stack.prometheus_url} (alerts: {stack.prometheus_url}/alerts)")
        )
    rows.append(("Logs", f"{stack.logs_dir}/<name>.log"))
    width = max(len(label) for label, _ in rows) + 2
    table = "\n".join(f"  {label + ':':<{width}}{value}" for label, value in rows)
    json_header = "-H 'content-type: application/json'"
    return f"""
InferGate is running (ready in {startup_s:.1f} s).

{table}

Try it:
  curl -s -X POST {public}/v1/register {json_header} -d '{{"email":"you@example.com"}}'
  curl -s -X POST {public}/v1/chat {json_header} -H 'x-api-key: <apiKey from register>' \\
       -d '{{"prompt":"Say hello in five words"}}'
  curl -s {public}/v1/usage -H 'x-api-key: <apiKey>'

Stop with Ctrl-C, or `make stop` from another terminal.
"""
