"""The service's settings from MASE_* variables: values parsed, bad ones named."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from api.settings import Settings
from conftest import ROOT

pytestmark = pytest.mark.service


def test_settings_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MASE_PORT", "8123")
    monkeypatch.setenv("MASE_RUN_WORKERS", "3")
    monkeypatch.setenv("MASE_TOKENS_FILE", str(tmp_path / "tokens"))
    monkeypatch.setenv("MASE_BACKEND", "ray")
    monkeypatch.setenv("MASE_RAY_ADDRESS", "head:6379")
    monkeypatch.setenv("MASE_LOAD_SHIPPED", "no")
    monkeypatch.setenv("MASE_EVENTS_SEND_BUFFER", "65536")
    settings = Settings.from_env()
    assert settings.events_send_buffer == 65536
    assert (settings.port, settings.run_workers, settings.tokens_file) == (8123, 3, Path(tmp_path / "tokens"))
    assert (settings.backend, settings.ray_address, settings.load_shipped) == ("ray", "head:6379", False)


@pytest.mark.parametrize("variables, message", [
    ({"MASE_PORT": "eighty"}, "MASE_PORT must be an integer, got 'eighty'"),
    ({"MASE_PORT": "0"}, "MASE_PORT must be at least 1"),
    ({"MASE_RUN_WORKERS": "0"}, "MASE_RUN_WORKERS must be at least 1"),
    ({"MASE_MAX_BODY_BYTES": "1e6"}, "MASE_MAX_BODY_BYTES must be an integer"),
    ({"MASE_BACKEND": "gpu"}, "MASE_BACKEND must be one of local, serial, ray, got 'gpu'"),
    ({"MASE_RAY_ADDRESS": "head:6379"}, "MASE_RAY_ADDRESS needs MASE_BACKEND=ray"),
    ({"MASE_EVENTS_SEND_BUFFER": "1024"}, "MASE_EVENTS_SEND_BUFFER must be at least 4096"),
])
def test_bad_settings_are_named(monkeypatch, variables, message):
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        Settings.from_env()


def test_serve_refuses_a_bad_setting_in_one_line(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "MASE_PORT": "eighty", "MASE_TOKENS_FILE": str(tmp_path / "tokens"),
           "MASE_DATABASE_URL": f"sqlite:///{tmp_path / 'mase.db'}"}
    result = subprocess.run([sys.executable, "-m", "mase", "serve"], capture_output=True, text=True, cwd=ROOT,
                            env=env, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "MASE_PORT must be an integer, got 'eighty'" in result.stderr
    assert not (tmp_path / "tokens").exists() and not (tmp_path / "mase.db").exists()  # nothing made
