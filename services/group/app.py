"""Group service process: the SQL database and a gRPC server with health and reflection."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from im.config import Settings
from im.grpcutil import service_name
from im.ids import NODE_IDS, MsgIdGenerator
from im.metrics import MetricsRegistry
from im.ports import Backends
from im.runtime import Service
from im.sqlservice import SqlGrpcService
from im.v1 import group_pb2, group_pb2_grpc
from services.group.service import GroupServicer


class GroupApp(SqlGrpcService):
    name = "group"
    port_setting = "group_grpc_port"
    register = staticmethod(group_pb2_grpc.add_GroupServiceServicer_to_server)
    service_name = service_name(group_pb2, "GroupService")

    def __init__(
        self,
        settings: Settings,
        backends: Backends | None = None,
        metrics: MetricsRegistry | None = None,
    ) -> None:
        super().__init__(settings, metrics)
        self.backends = backends
        self.ids = MsgIdGenerator(0)

    async def start(self) -> None:
        # Replicas mint group ids at once: each holds its own node id from the registry.
        if self.backends is not None:
            self.ids.follow(await self.backends.registry.lease_node_id("group", NODE_IDS))
        await super().start()

    def make_servicer(self, settings: Settings, engine: Engine) -> GroupServicer:
        return GroupServicer(settings, engine, ids=self.ids)


def build(
    settings: Settings, backends: Backends | None = None, metrics: MetricsRegistry | None = None
) -> Service:
    # Besides the SQL database, only the registry (for its node-id lease); tests may
    # leave backends out.
    return GroupApp(settings, backends, metrics)
