"""HTTP surface of the gateway (FastAPI): ``create_app`` puts together the routes
(``api_*`` modules), problem details for every error (``problems``), the guards and
Prometheus metrics (``observe``). See docs/rest-api.md."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.gateway import (
    api_admin,
    api_attachments,
    api_auth,
    api_conversations,
    api_groups,
    api_lifecycle,
    api_messages,
    api_ops,
    api_posting,
    api_presence,
    api_privacy,
    api_search,
    api_sessions,
    api_users,
)
from services.gateway.context import RequestContextMiddleware
from services.gateway.docs_ui import DOCS_PAGES, add_docs
from services.gateway.guards import BodyLimitMiddleware, SecurityHeadersMiddleware
from services.gateway.observe import Metrics, ObserveMiddleware
from services.gateway.problems import add_problem_handlers, problem, problem_openapi
from services.gateway.service import Gateway
from services.gateway.web import add_web_page


def create_app(
    gateway: Gateway, metrics_on_api: bool = True, registry: CollectorRegistry | None = None
) -> FastAPI:
    """The gateway's HTTP app; its request metrics go to ``registry`` (one of its own
    when None), which ``/metrics`` serves."""
    app = FastAPI(
        title="IM gateway",
        version="1",
        description="Login, connector assignment, users, conversations, groups, history, "
        "sync and receipts. Errors are RFC 9457 problem details (`application/problem+json`) "
        "with a stable `code`.",
        docs_url=None,  # served from local assets by docs_ui
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    add_docs(app)
    app.openapi = lambda: problem_openapi(app)  # type: ignore[method-assign]
    app.state.gateway = gateway
    app.state.metrics = metrics = Metrics(registry)
    # This order is the order of the paths in openapi.json and the docs.
    for module in (
        api_auth,
        api_users,
        api_privacy,
        api_conversations,
        api_presence,
        api_messages,
        api_search,
        api_posting,
        api_attachments,
        api_lifecycle,  # before api_groups: /v1/groups/join is not a group id
        api_groups,
        api_ops,
        api_sessions,
        api_admin,
    ):
        app.include_router(module.router)
    if metrics_on_api:
        app.include_router(api_ops.metrics_router)
    add_web_page(app, tls=gateway.settings.public_tls())  # the chat page at /
    _add_guards(app, gateway)
    app.add_middleware(ObserveMiddleware, metrics=metrics)
    # Outermost (added last): every answer gets the headers, 500s and 413s included.
    app.add_middleware(
        SecurityHeadersMiddleware,
        docs_paths=DOCS_PAGES,
        no_store_prefixes=["/v1/"],  # tokens and user data: never cached
        hsts=gateway.settings.public_tls(),
    )
    # Outermost of all: the request id is in the log context of everything above,
    # and in every answer.
    app.add_middleware(RequestContextMiddleware)
    add_problem_handlers(app)
    return app


def _add_guards(app: FastAPI, gateway: Gateway) -> None:
    """The body limit runs inside the metrics (413s are counted) and before anything
    reads the body: routing, authentication, parsing."""
    limit = gateway.settings.max_request_body_bytes
    upload = gateway.settings.max_attachment_bytes
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=limit,
        refuse=lambda: problem(
            413, "payload_too_large", f"the request body is larger than {limit} bytes"
        ),
        # Uploads stream to the attachment store under a limit of their own.
        paths={
            api_attachments.UPLOAD_PATH: (
                upload,
                lambda: problem(
                    413, "payload_too_large", f"the attachment is larger than {upload} bytes"
                ),
            ),
            # The admin import carries thousands of users; it reads its body only after
            # the admin token was checked (api_admin.py).
            api_admin.IMPORT_PATH: (
                gateway.settings.admin_import_max_bytes,
                lambda: problem(413, "payload_too_large", "the import body is too large"),
            ),
        },
    )
