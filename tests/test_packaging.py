"""What operators start from: the Slack manifest and the compose file."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_manifest_declares_ir_interactivity_socket_mode_and_only_the_scopes_used():
    manifest = yaml.safe_load((ROOT / "manifest.yml").read_text())
    assert [c["command"] for c in manifest["features"]["slash_commands"]] == ["/ir"]
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert sorted(manifest["oauth_config"]["scopes"]["bot"]) == ["channels:manage", "chat:write", "chat:write.public", "commands", "files:write", "groups:write", "pins:write", "usergroups:read", "users:read"]


def test_compose_runs_redis_bot_and_worker_from_the_dockerfile():
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    assert set(compose["services"]) == {"redis", "bot", "worker", "findings"}
    assert compose["services"]["findings"]["command"] == ["findings"]
    assert compose["services"]["bot"]["command"] == ["serve"]
    assert compose["services"]["worker"]["command"] == ["worker"]
    assert "--appendonly" in compose["services"]["redis"]["command"]
    assert (ROOT / compose["services"]["bot"]["build"]["dockerfile"]).exists()
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    import tomllib

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    for package in packages:  # every package the distribution installs is in the image
        assert f"COPY {package} {package}" in dockerfile
