"""Group service process: the SQL database and a gRPC server with health and reflection."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from im.config import Settings
from im.grpcutil import service_name
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

    def make_servicer(self, settings: Settings, engine: Engine) -> GroupServicer:
        return GroupServicer(settings, engine)


def build(settings: Settings, backends: Backends | None = None) -> Service:
    # The group service needs only the SQL database; backends are accepted for the
    # common factory signature.
    return GroupApp(settings)
