"""``visionlab dashboard``: a Streamlit page over a running API (predictions) and run folders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).with_name("app.py")
DASHBOARD_KEYS = {"api": "URL of `visionlab serve` (default http://127.0.0.1:8000)",
                  "api_key": "the API's X-API-Key, if it has one",
                  "data": "dataset spec to pick images from (default synthetic)",
                  "runs": "folder of run folders (default runs)",
                  "host": "address to listen on (default 127.0.0.1)", "port": "port (default 8501)"}


def dashboard_command(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """``key=value`` words -> (the ``streamlit run`` command, its environment). ConfigError on a bad key."""
    from visionlab.cfg import ConfigError, check_keys

    values = {"api": "http://127.0.0.1:8000", "data": "synthetic", "runs": "runs", "host": "127.0.0.1",
              "port": "8501", "api_key": ""}
    for word in args:
        if "=" not in word:
            raise ConfigError(f"'{word}': expected key=value, e.g. api=http://127.0.0.1:8000 port=8501")
        key, value = word.split("=", 1)
        check_keys([key], list(DASHBOARD_KEYS), "the command line")
        values[key] = value
    if not values["port"].isdigit() or not 0 < int(values["port"]) < 65536:
        raise ConfigError(f"port={values['port']}: expected a port number 1..65535")
    if not values["api"].startswith(("http://", "https://")):
        raise ConfigError(f"api={values['api']}: expected an http:// or https:// URL of `visionlab serve`")
    env = {**os.environ, "VISIONLAB_DASHBOARD_API": values["api"], "VISIONLAB_DASHBOARD_DATA": values["data"],
           "VISIONLAB_DASHBOARD_RUNS": values["runs"], "VISIONLAB_DASHBOARD_API_KEY": values["api_key"]}
    command = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true",
               "--server.address", values["host"], "--server.port", values["port"],
               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    return command, env


def launch(args: list[str]) -> int:
    """Run the dashboard until interrupted; returns streamlit's exit code."""
    command, env = dashboard_command(args)
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 130
