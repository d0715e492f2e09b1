"""The four benchmark scenarios: connections, direct, group, login (a module each).

Each takes a ``Context`` (options, the target suite, the relay) and returns a
``ScenarioResult``: tables for stdout, data for the JSON file, latency series for
the chart. The runner calls them in order on one suite.
"""

from __future__ import annotations

from im.bench.scenarios.common import Context, ScenarioResult, Skip, Table
from im.bench.scenarios.connections import scenario_connections
from im.bench.scenarios.direct import scenario_direct
from im.bench.scenarios.group import scenario_group
from im.bench.scenarios.login import scenario_login

__all__ = ["SCENARIOS", "Context", "ScenarioResult", "Skip", "Table"]

SCENARIOS = {
    "connections": scenario_connections,
    "direct": scenario_direct,
    "group": scenario_group,
    "login": scenario_login,
}
