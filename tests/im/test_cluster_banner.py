"""What ``imctl cluster`` prints once it is up (no process started here)."""

from __future__ import annotations

import shlex
from pathlib import Path

from im.cluster import Cluster


def test_the_banner_names_every_process_and_the_internal_certificates(tmp_path: Path) -> None:
    cluster = Cluster(log_dir=tmp_path)
    for proc in cluster.plan():
        cluster.procs[proc.name] = proc  # never started
    banner = cluster.describe()
    assert "gateway" in banner and "router-1" in banner
    (export,) = [line for line in banner.splitlines() if "export " in line]
    settings = dict(word.split("=", 1) for word in shlex.split(export.split("export ", 1)[1]))
    assert set(settings) == {"IM_INTERNAL_CA_FILE", "IM_INTERNAL_CERT_FILE", "IM_INTERNAL_KEY_FILE"}
    assert all(Path(path).is_file() for path in settings.values())
