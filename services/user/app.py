"""User service process: the SQL database and a gRPC server with health and reflection."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine

from im.config import Settings
from im.grpcutil import service_name
from im.metrics import MetricsRegistry
from im.ports import Backends
from im.runtime import Service
from im.sqlservice import SqlGrpcService
from im.v1 import admin_pb2, admin_pb2_grpc, user_pb2, user_pb2_grpc
from services.user.admin import UserAdminServicer
from services.user.service import UserServicer


class UserApp(SqlGrpcService):
    name = "user"
    port_setting = "user_grpc_port"
    register = staticmethod(user_pb2_grpc.add_UserServiceServicer_to_server)
    service_name = service_name(user_pb2, "UserService")

    def make_servicer(self, settings: Settings, engine: Engine) -> UserServicer:
        return UserServicer(settings, engine)

    def more_servicers(self, engine: Engine) -> list[tuple[Any, Any, str]]:
        # The admin half shares the users' password hasher and hash pool.
        users: UserServicer = self._servicer
        admin = UserAdminServicer(engine, users.hasher, users.hashing, users.clock)
        return [
            (
                admin_pb2_grpc.add_UserAdminServiceServicer_to_server,
                admin,
                service_name(admin_pb2, "UserAdminService"),
            )
        ]


def build(
    settings: Settings, backends: Backends | None = None, metrics: MetricsRegistry | None = None
) -> Service:
    # The user service needs only the SQL database; backends are accepted for the
    # common factory signature.
    return UserApp(settings, metrics)
