"""One settings object for every service, read from ``IM_*`` environment variables.

Every field carries its documentation; ``imctl config-doc`` prints the README table
from it. The defaults give standalone mode: SQLite files under ``data_dir`` and
in-process bus, registry and presence.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IM_", env_file=None, extra="ignore")

    # --- where things live -------------------------------------------------------
    data_dir: Path = Field(
        Path(".im-data"),
        description="Folder for standalone state: SQLite files and the dev JWT key pair.",
    )
    database_url: str = Field(
        "",
        description="SQLAlchemy URL of the user/group database, e.g. "
        "`mysql+pymysql://im:pw@127.0.0.1:3306/im?charset=utf8mb4`. "
        "Empty: SQLite file `im.db` in data_dir.",
    )
    auto_migrate: bool = Field(
        True,
        description="Create/upgrade the SQL schema at start-up. Distributed deployments "
        "set false and run `imctl db upgrade` once per release instead.",
    )
    message_store_url: str = Field(
        "",
        description="Message store: `mongodb://host:27017/im` or a SQLAlchemy URL. "
        "Empty: the database_url database (a `messages` table); standalone: SQLite "
        "`messages.db` in data_dir.",
    )
    bus_url: str = Field(
        "memory://",
        description="Bus: `memory://` (in-process, standalone only) or "
        "`kafka://host:9092[,host2:9092]`.",
    )
    registry_url: str = Field(
        "memory://",
        description="Connector registry: `memory://` or `zk://host:2181[,host2]/im`.",
    )
    kv_url: str = Field(
        "memory://",
        description="Presence, sessions, idempotency keys: `memory://` or `redis://host:6379/0`. "
        "With `memory://` revoked sessions and idempotency keys are kept in `state.db` in "
        "data_dir, so they outlive a restart.",
    )
    kv_prefix: str = Field("im:", description="Prefix of every Redis key (share a Redis).")

    # --- listen addresses -------------------------------------------------------
    host: str = Field("127.0.0.1", description="Interface every server binds to.")
    advertise_host: str = Field(
        "",
        description="Host name clients and other services use to reach this process "
        "(empty: same as host).",
    )
    gateway_port: int = Field(8080, description="Gateway HTTP port.")
    user_grpc_port: int = Field(50051, description="User service gRPC port.")
    group_grpc_port: int = Field(50052, description="Group service gRPC port.")
    connector_grpc_port: int = Field(50053, description="Connector internal gRPC port.")
    gateway_grpc_port: int = Field(
        50070,
        description="Gateway internal gRPC port (at internal_host, mutual TLS): "
        "MessageService.Send, server-side sends for internal services and bots.",
    )
    router_grpc_port: int = Field(
        50060, description="Router gRPC port (health only: NOT_SERVING while batches fail)."
    )
    connector_tcp_port: int = Field(7070, description="Connector client TCP port.")
    connector_ws_port: int = Field(7071, description="Connector client WebSocket port.")
    user_service_addr: str = Field(
        "", description="host:port of the user service (empty: host:user_grpc_port)."
    )
    group_service_addr: str = Field(
        "", description="host:port of the group service (empty: host:group_grpc_port)."
    )
    connector_id: str = Field(
        "", description="This connector's id in the registry (empty: connector-<port>)."
    )
    router_id: str = Field(
        "", description="This router's id in the registry (empty: router-<host name>-<pid>)."
    )

    # --- auth ---------------------------------------------------------------------
    jwt_private_key_file: str = Field(
        "",
        description="PEM file of the RSA (RS256) or Ed25519 (EdDSA) private key (gateway "
        "only). Empty: standalone generates an RSA pair in data_dir on first run.",
    )
    jwt_public_key_file: str = Field(
        "", description="PEM file of the matching public key (connectors, gateway)."
    )
    jwt_issuer: str = Field("im-gateway", description="`iss` claim of issued tokens.")
    jwt_ttl_seconds: int = Field(3600, description="Access token lifetime.")
    argon2_time_cost: int = Field(2, description="argon2id time cost.")
    argon2_memory_kib: int = Field(19456, description="argon2id memory cost in KiB.")
    argon2_parallelism: int = Field(1, description="argon2id lanes.")

    # --- internal gRPC security and client TLS -----------------------------------
    internal_host: str = Field(
        "127.0.0.1",
        description="Interface every internal gRPC server (user, group, connector, router, "
        "gateway) binds to; `host` is for the public listeners (gateway HTTP, connector "
        "TCP/WS).",
    )
    internal_ca_file: str = Field(
        "",
        description="PEM file of the suite's internal CA: internal gRPC accepts only peers "
        "whose certificate it signed (mutual TLS). Standalone and `imctl cluster` generate "
        "a dev CA in data_dir on first run.",
    )
    internal_cert_file: str = Field(
        "", description="PEM certificate this process presents on internal gRPC (both ways)."
    )
    internal_key_file: str = Field("", description="PEM private key of internal_cert_file.")
    internal_server_name: str = Field(
        "im-internal",
        description="Name every internal certificate carries (DNS SAN) and that gRPC clients "
        "verify, whatever address they dial (pod IPs, DNS names).",
    )
    internal_insecure: bool = Field(
        False,
        description="Let a single service (`imctl serve`) run internal gRPC without TLS. "
        "Development only: without certificates a service refuses to start otherwise.",
    )
    grpc_health_port: int = Field(
        0,
        description="Plaintext port serving only the gRPC health service, for probes that "
        "cannot do TLS (Kubernetes). 0: none. One gRPC server per process (not standalone).",
    )
    grpc_reflection: bool = Field(
        False, description="Serve gRPC reflection on the internal ports (debugging)."
    )
    tls_cert_file: str = Field(
        "",
        description="PEM certificate (chain) for the public listeners: with tls_key_file the "
        "gateway serves HTTPS and the connector TLS on TCP and WebSocket (wss).",
    )
    tls_key_file: str = Field("", description="PEM private key of tls_cert_file.")

    # --- connections --------------------------------------------------------------
    heartbeat_interval: float = Field(
        20.0, description="Seconds between client pings; told to clients at login."
    )
    heartbeat_misses: float = Field(
        3.0, description="A connection silent for this many intervals is closed."
    )
    auth_timeout: float = Field(5.0, description="Seconds a new socket has to send Auth.")
    max_frame_bytes: int = Field(65536, description="Largest accepted frame.")
    max_body_bytes: int = Field(32768, description="Largest message body.")
    send_rate_per_second: float = Field(
        200.0, description="Sustained Send frames per second per connection."
    )
    send_burst: int = Field(400, description="Send frames a connection may burst.")
    retransmit_timeout: float = Field(
        3.0, description="Seconds before an unacked Deliver is resent (then doubled)."
    )
    retransmit_attempts: int = Field(
        3, description="Resends before giving up (the message waits for sync)."
    )
    publish_timeout: float = Field(
        10.0,
        description="Seconds a Send waits for the bus to take it; then it is answered "
        "UNAVAILABLE and the client retries under the same client_msg_id (stored once).",
    )
    max_inflight_sends: int = Field(
        5000,
        description="Sends a connector holds between receiving them and the bus taking "
        "them; past it new Sends are refused at once with BUSY and a retry-after.",
    )
    max_router_lag_ms: int = Field(
        500,
        description="While a router reports being this far behind (its delivery of new "
        "messages), connectors refuse new Sends at once with BUSY and a retry-after, "
        "rather than take more than the routers can deliver in time. 0 disables.",
    )
    replay_window_seconds: float = Field(
        60.0,
        description="How long a connector keeps the messages it acked, to publish them "
        "again if the bus lost acknowledged records (a broker that came back without its "
        "topics). The router stores each msg_id once. 0 disables.",
    )
    cursor_reports_per_second: float = Field(
        200.0,
        description="New (per conversation) acks and reads a connection may report per "
        "second; repeats for one conversation are coalesced and free.",
    )
    cursor_report_burst: int = Field(
        2000, description="Acks and reads for new conversations a connection may burst."
    )
    idempotency_ttl_seconds: int = Field(
        86400, description="How long a client_msg_id is remembered per user."
    )
    recall_window_seconds: float = Field(
        120.0,
        ge=0,
        description="How long after sending a message its sender may recall it (group "
        "owners and admins may recall any message of their group at any time).",
    )
    edit_window_seconds: float = Field(
        900.0,
        ge=0,
        description="How long after sending a text message its sender may edit it.",
    )
    receipt_push_max_members: int = Field(
        500,
        description="Groups up to this size get every read receipt pushed to every member; "
        "larger ones push only to the reader's devices (others pull the receipts endpoint).",
    )
    max_group_size: int = Field(10000, description="Most members a group may have.")

    # --- typing and presence --------------------------------------------------------
    typing_expiry_ms: int = Field(
        6000,
        gt=0,
        description="Told to receivers of a Typing frame (expires_in_ms): a STARTED not "
        "refreshed within this many milliseconds counts as STOPPED. Clients refresh a "
        "STARTED every few seconds while the user types.",
    )
    typing_per_second: float = Field(
        2.0,
        description="Sustained Typing frames per second per connection; excess ones are "
        "dropped silently (typing is best effort; Sends have their own budget).",
    )
    typing_burst: int = Field(5, description="Typing frames a connection may burst.")
    typing_max_members: int = Field(
        200,
        description="Typing is relayed only in conversations of at most this many members "
        "(in larger groups it would be noise and fan-out for nothing).",
    )
    presence_debounce_seconds: float = Field(
        5.0,
        description="A user whose last device went away is announced offline to their 1:1 "
        "peers only after this many seconds without an online device anywhere; a "
        "reconnect within it announces nothing (neither offline nor online).",
    )
    presence_max_members: int = Field(
        1000,
        ge=2,
        description="GET /v1/conversations/{id}/presence answers conversations of at most "
        "this many members; a larger group is 422 `presence_group_too_large` (its answer "
        "would cost a presence lookup per member).",
    )
    presence_reads_per_minute: int = Field(
        60,
        ge=0,
        description="GET /v1/conversations/{id}/presence calls one user may make per "
        "minute (429 past it). 0 disables.",
    )

    # --- connector socket limits ----------------------------------------------------
    max_outbox_bytes: int = Field(
        4 * 1024 * 1024,
        description="Bytes a connector may hold queued for one client socket (TCP or "
        "WebSocket) that does not read them; past it the socket is closed with a reason "
        "(Error UNAVAILABLE; WebSocket close code 1013) and the client syncs on reconnect.",
    )
    max_unauthenticated_per_address: int = Field(
        64,
        description="Open sockets per client IP address (TCP and WebSocket together) that "
        "have not authenticated yet; a socket over it is refused at once (Error "
        "RATE_LIMITED; WebSocket close code 1008). Behind a proxy that hides client "
        "addresses every socket comes from the proxy: raise it there. 0 disables.",
    )

    # --- login limits and sessions -------------------------------------------------
    login_failures_per_user_address: int = Field(
        5,
        description="Failed logins of one username from one client address before that "
        "pair must wait (exponential backoff). Other addresses are not affected, so the "
        "owner still logs in from elsewhere. 0 disables.",
    )
    login_failures_per_address: int = Field(
        20,
        description="Failed logins from one client address, whatever the usernames, "
        "before that address must wait (exponential backoff). 0 disables.",
    )
    login_failure_window_seconds: float = Field(
        900.0,
        description="A failure count is forgotten this many seconds after its last failure "
        "(and its wait) ended; a successful login clears its (username, address) count.",
    )
    login_backoff_base_seconds: float = Field(
        1.0,
        description="Wait after the first failure over a limit; doubled by each further one.",
    )
    login_backoff_max_seconds: float = Field(
        900.0, description="Longest wait a failed-login backoff imposes."
    )
    registrations_per_address_per_hour: int = Field(
        20, description="Registrations accepted from one client address per hour. 0 disables."
    )
    trusted_proxies: str = Field(
        "",
        description="Comma-separated CIDRs (e.g. `10.0.0.0/8,::1/128`) of reverse proxies "
        "whose `X-Forwarded-For` names the client address. Empty: the TCP peer is the client "
        "and the header is ignored.",
    )
    refresh_token_ttl_seconds: int = Field(
        30 * 86400,
        description="Refresh token lifetime; each refresh issues a new one with a new "
        "lifetime (an idle session ends after this long).",
    )

    # --- admin API (operators) -------------------------------------------------------
    admin_token: str = Field(
        "",
        repr=False,  # a secret: never in a log line or traceback
        description="Secret token of the admin API (`/v1/admin`, and the gateway's "
        "AdminService on admin_grpc_port): `Authorization: Bearer <token>`, at least 32 "
        "characters. Empty (and no admin_token_file): the admin API is off.",
    )
    admin_token_file: str = Field(
        "",
        description="File of admin tokens, one per line, `name:token` or just `token` "
        "(named `admin`); several lines let a new token be rolled out before the old one "
        "is removed. The name is the operator in the audit log. Read at start-up.",
    )
    admin_grpc_port: int = Field(
        50050,
        description="Internal port (at internal_host, mutual TLS) where the gateway serves "
        "the admin gRPC API (im.v1.AdminService) while an admin token is configured.",
    )
    admin_failures_per_address: int = Field(
        10,
        description="Requests with a wrong admin token from one client address before that "
        "address must wait (exponential backoff, as for failed logins). 0 disables.",
    )
    admin_import_max_bytes: int = Field(
        8 * 1024 * 1024,
        gt=0,
        description="Largest body of `POST /v1/admin/users/import` (read only after the "
        "admin token was checked); every other request keeps max_request_body_bytes.",
    )

    # --- HTTP request limits and surfaces ------------------------------------------
    max_request_body_bytes: int = Field(
        65536,
        gt=0,
        description="Largest HTTP request body the gateway accepts; larger ones get 413, "
        "refused on their Content-Length before any byte is read (streamed bodies are cut "
        "off at the limit).",
    )
    search_timeout: float = Field(
        5.0,
        gt=0,
        description="Seconds a message search may take in the message store; then the "
        "request is answered 503 (retry later). MySQL and MariaDB also stop the query "
        "itself after this long.",
    )
    searches_per_minute: int = Field(
        30, ge=0, description="Searches one user may make per minute (429 past it). 0 disables."
    )
    search_concurrency: int = Field(
        2,
        ge=1,
        description="Searches one gateway runs in the message store at once; more are "
        "answered 503 with Retry-After, never queued. A search holds its place (a worker "
        "thread and a database connection) until the store returns, even after its "
        "timeout, so searches never take what history and sends need.",
    )
    gateway_metrics: Literal["auto", "api", "internal"] = Field(
        "auto",
        description="Where the gateway serves `/metrics`: `api` (its public API port), "
        "`internal` (internal_host:gateway_metrics_port only), `auto` (api in standalone, "
        "i.e. with a `memory://` registry; internal in distributed mode).",
    )
    gateway_metrics_port: int = Field(
        9464,
        description="Internal port of the gateway's `/metrics` when it is not on the API "
        "port (0: any free port).",
    )
    metrics_port: int = Field(
        9464,
        description="Port at internal_host where a user, group, connector or router process "
        "serves its Prometheus `/metrics` in distributed mode (0: any free port). Standalone "
        "serves no such port: the gateway's `/metrics` shows every service of the suite.",
    )

    # --- attachments ----------------------------------------------------------------
    attachment_store_url: str = Field(
        "",
        description="Where uploaded files live: `file:///path` (a folder; metadata in SQLite "
        "inside it; several gateways need it shared) or `mongodb://host:27017/db` (GridFS). "
        "Empty: GridFS in the message store's database when that is MongoDB, else the "
        "folder `attachments` in data_dir.",
    )
    max_attachment_bytes: int = Field(
        25 * 1024 * 1024,
        gt=0,
        description="Largest upload (`POST /v1/attachments`); larger ones get 413, refused on "
        "their Content-Length before any byte is read, or cut off at the limit when streamed.",
    )
    attachment_content_types: str = Field(
        "image/png,image/jpeg,image/gif,image/webp,application/pdf,text/plain,text/csv,"
        "audio/mpeg,audio/ogg,audio/wav,audio/webm,audio/mp4,video/mp4,video/webm,"
        "video/quicktime,application/zip,application/octet-stream",
        description="Comma-separated media types an upload may declare (`type/*` allows a "
        "family, `*/*` anything); others get 415. HTML and SVG are left out on purpose "
        "(active content), though downloads are always served as `attachment` with nosniff.",
    )
    max_attachments_per_message: int = Field(
        10, ge=0, le=40, description="Most attachment_ids one message may carry (up to 40)."
    )
    attachment_uploads_per_hour: int = Field(
        200, ge=0, description="Uploads one user may make per hour (429 past it). 0 disables."
    )
    attachment_quota_bytes: int = Field(
        2 * 1024**3,
        ge=0,
        description="Most bytes of attachments one user may keep stored; an upload past it "
        "is 413 `quota_exceeded` (cut off when streamed). 0 disables.",
    )

    # --- bus ----------------------------------------------------------------------
    topic_messages: str = Field("im.messages", description="Topic of inbound messages.")
    topic_cursors: str = Field("im.cursors", description="Topic of acks and read reports.")
    topic_membership: str = Field("im.membership", description="Topic of membership events.")
    topic_partitions: int = Field(
        8, description="Partitions per topic, created at start-up with this final count."
    )
    router_group: str = Field("im-router", description="Consumer group of the routers.")
    router_batch_size: int = Field(500, description="Most records a router takes per poll.")
    router_unassigned_timeout: float = Field(
        30.0,
        description="Seconds a router may hold no partition before it reports NOT_SERVING: "
        "longer than a rebalance takes (Kafka: about the URL's session_timeout_ms). A "
        "router that gets none for good (more routers than partitions) stays not ready.",
    )

    # --- offline push ----------------------------------------------------------------
    push_webhook_url: str = Field(
        "",
        description="Offline push: the router POSTs batches of JSON notifications here for "
        "members with no online device (your relay to APNs/FCM; docs/operations.md). Empty: "
        "push is off. Members who muted the conversation, senders and events get none.",
    )
    push_webhook_secret: str = Field(
        "",
        description="HMAC-SHA256 key: each push request carries `X-IM-Timestamp` and "
        '`X-IM-Signature: v1=hex(HMAC(secret, timestamp + "." + body))` for the receiver '
        "to verify. Empty: requests are unsigned (a warning at start-up).",
    )
    push_webhook_timeout: float = Field(5.0, description="Seconds per push request attempt.")
    push_batch_size: int = Field(
        100, ge=1, le=10_000, description="Most notifications in one push request."
    )
    push_queue_size: int = Field(
        10_000,
        ge=1,
        description="Notifications a router holds for the webhook; past it new ones are "
        'dropped (counted in `im_router_push_notifications_total{outcome="dropped"}`, '
        "logged). Delivery never waits for push.",
    )
    push_max_attempts: int = Field(
        5,
        ge=1,
        description="Attempts per push request: 5xx, 408, 429, timeouts and connection "
        "errors are retried with exponential backoff; other 4xx are not.",
    )
    push_retry_base_seconds: float = Field(
        0.5, description="Wait before the first push retry; doubled by each further one."
    )
    push_retry_max_seconds: float = Field(30.0, description="Longest wait between push retries.")
    push_preview: bool = Field(
        False,
        description="Put the start of a text message in its push notification (`preview`). "
        "Off by default: the text would leave the suite for a third party (APNs/FCM).",
    )
    push_preview_chars: int = Field(
        80, ge=1, le=1000, description="Longest push preview, in characters (then `…`)."
    )

    # --- logs and traces ------------------------------------------------------------
    log_level: str = Field("INFO", description="Python logging level.")
    log_format: Literal["text", "json"] = Field(
        "text",
        description="`text` (for a terminal) or `json`: one JSON object per line with "
        "timestamp, level, logger, message and the context at hand (service, request_id, "
        "conn_id, user_id, device_id, conversation_id, msg_id, trace_id).",
    )
    otlp_endpoint: str = Field(
        "",
        description="OpenTelemetry collector (OTLP/gRPC), e.g. `http://otel-collector:4317` "
        "(`https://` for TLS). Set: spans are recorded and exported (W3C trace context "
        "through gRPC and the bus). Empty: no span is created at all.",
    )

    # --- derived ------------------------------------------------------------------
    def resolved_attachment_store_url(self) -> str:
        if self.attachment_store_url:
            return self.attachment_store_url
        messages = self.resolved_message_store_url()
        if messages.startswith(("mongodb://", "mongodb+srv://")):
            return messages
        return (self.data_dir / "attachments").resolve().as_uri()

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'im.db').resolve()}"

    def resolved_message_store_url(self) -> str:
        if self.message_store_url:
            return self.message_store_url
        if not self.database_url:
            # Standalone: a SQLite file of its own, so the router's message writes and
            # the group service's cursor writes never wait for each other's lock.
            return f"sqlite:///{(self.data_dir / 'messages.db').resolve()}"
        return self.resolved_database_url()

    def public_host(self) -> str:
        return self.advertise_host or self.host

    def internal_public_host(self) -> str:
        """Where other services reach this process's internal gRPC servers."""
        return self.advertise_host or self.internal_host

    def user_addr(self) -> str:
        return self.user_service_addr or f"{self.internal_public_host()}:{self.user_grpc_port}"

    def group_addr(self) -> str:
        return self.group_service_addr or f"{self.internal_public_host()}:{self.group_grpc_port}"

    def public_tls(self) -> bool:
        """The public listeners serve TLS (both files are needed)."""
        return bool(self.tls_cert_file and self.tls_key_file)

    def resolved_connector_id(self) -> str:
        return self.connector_id or f"connector-{self.connector_tcp_port}"

    def resolved_router_id(self) -> str:
        return self.router_id or f"router-{socket.gethostname()}-{os.getpid()}"


def settings_table() -> str:
    """Markdown table of every setting, for the README."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "" if default in ("", None) else str(default)
        rows.append(f"| `IM_{name.upper()}` | `{shown}` | {field.description or ''} |")
    return "\n".join(rows)
