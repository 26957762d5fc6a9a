"""HTTP front end: request authentication, response signing, faults, counting, dispatch.

Why so strict about headers: the SDK rejects any 2xx response lacking x-ots-contentmd5 / requestid /
date / contenttype or a valid `Authorization: OTS akid:sig` response signature, so the emulator signs
every response with the same key the client used (V2: the secret; V4: the derived day/region key).
"""

from __future__ import annotations

import base64
import collections
import datetime
import hashlib
import hmac
import os
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tablestore.protobuf import search_pb2 as spb
from tablestore.protobuf import table_store_pb2 as pb

from .api import Api
from .errors import DEFAULT_MESSAGES, STATUS_BY_CODE, OTSError
from .faults import AFTER, FaultInjector
from .rules import Rules
from .store import Store

#: Seconds a new table is not ready / a new search index initializes. The service takes "several seconds, in most
#: cases within one minute"; tests use a short window so the suite stays quick, overridable for a slower check.
TABLE_READY_SECONDS = float(os.environ.get("TABLESTORE_EMULATOR_TABLE_READY_SECONDS", "1.0"))
INDEX_READY_SECONDS = float(os.environ.get("TABLESTORE_EMULATOR_INDEX_READY_SECONDS", "1.0"))

V4_PREFIX = "aliyun_v4"
V4_CONSTANT = "aliyun_v4_request"
V4_PRODUCT = "ots"
V4_SALT = "ots"
MAX_CLOCK_SKEW = datetime.timedelta(minutes=15)


def _b64_hmac(key: bytes, msg: str, digest: Any) -> str:
    return base64.b64encode(hmac.new(key, msg.encode("utf-8"), digest).digest()).decode()


def v4_signing_key(secret: str, sign_date: str, region: str) -> bytes:
    key = (V4_PREFIX + secret).encode()
    for part in (sign_date, region, V4_PRODUCT, V4_CONSTANT):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return base64.b64encode(key)


def _ots_headers_string(headers: dict[str, str], exclude: tuple[str, ...] = ()) -> str:
    items = [f"{k}:{v.strip()}" for k, v in headers.items() if k.startswith("x-ots-") and k not in exclude]
    return "\n".join(sorted(items))


def tables_of(api: str, body: bytes) -> set[str]:
    """The tables a request names (empty when it names none or does not parse)."""
    cls = getattr(pb, f"{api}Request", None) or getattr(spb, f"{api}Request", None)
    if cls is None:
        return set()
    msg = cls()
    try:
        msg.ParseFromString(body)
    except Exception:
        return set()
    if api == "CreateTable":
        return {msg.table_meta.table_name}
    if hasattr(msg, "tables"):
        return {t.table_name for t in msg.tables}
    name = getattr(msg, "table_name", "")
    return {name} if name else set()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, addr


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "TablestoreEmulator/1.0"
    emulator: Any  # set on the per-emulator subclass

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        return

    def do_POST(self) -> None:
        emu = self.emulator
        api = self.path.split("?", 1)[0].strip("/")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        emu._count(api, body)
        try:
            signing_key = self._authenticate(api, headers, body)
        except OTSError as exc:
            self._send_error(api, exc, None)
            return
        fault = emu.faults.pick(api)
        applied_first = fault is not None and fault.endswith(AFTER)
        if fault is not None and not applied_first and self._apply_fault(api, fault, signing_key):
            return
        try:
            payload = emu.api.dispatch(api, body)
            if applied_first:  # the write happened; only the answer is lost (a timeout after commit)
                assert fault is not None
                self._apply_fault(api, fault.removesuffix(AFTER), signing_key)
                return
        except OTSError as exc:
            self._send_error(api, exc, signing_key)
            return
        except Exception as exc:  # a bug in the emulator: surface it like the service would
            emu.last_internal_error = exc
            self._send_error(api, OTSError("OTSInternalServerError", f"emulator bug: {exc!r}"), signing_key)
            return
        self._send(api, 200, payload, signing_key)

    # ---- auth ---------------------------------------------------------------------------------
    def _authenticate(self, api: str, headers: dict[str, str], body: bytes) -> bytes:
        emu = self.emulator
        if headers.get("x-ots-instancename") != emu.instance_name:
            raise OTSError("OTSAuthFailed", f"The instance '{headers.get('x-ots-instancename')}' is not found.")
        if headers.get("x-ots-accesskeyid") != emu.access_key_id:
            raise OTSError("OTSAuthFailed", "The AccessKeyID does not exist.")
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
        if headers.get("x-ots-contentmd5") != md5:
            raise OTSError("OTSParameterInvalid", "Content MD5 mismatch.")
        try:
            sent = datetime.datetime.strptime(headers.get("x-ots-date", ""), "%Y-%m-%dT%H:%M:%S.%fZ")
        except ValueError as exc:
            raise OTSError("OTSParameterInvalid", "Invalid date format in x-ots-date.") from exc
        now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
        if abs(now - sent) > MAX_CLOCK_SKEW:
            raise OTSError("OTSAuthFailed", "Mismatch between system time and x-ots-date.")
        canonical = f"/{api}\nPOST\n\n"
        if "x-ots-signaturev4" in headers:
            key = v4_signing_key(
                emu.access_key_secret, headers.get("x-ots-signdate", ""), headers.get("x-ots-signregion", "")
            )
            text = canonical + _ots_headers_string(headers, ("x-ots-signaturev4",)) + "\n" + V4_SALT
            expected = _b64_hmac(key, text, hashlib.sha256)
            given = headers["x-ots-signaturev4"]
        else:
            key = emu.access_key_secret.encode()
            text = canonical + _ots_headers_string(headers, ("x-ots-signature",)) + "\n"
            expected = _b64_hmac(key, text, hashlib.sha1)
            given = headers.get("x-ots-signature", "")
        if not hmac.compare_digest(expected, given):
            raise OTSError("OTSAuthFailed", "Signature mismatch.")
        return key

    # ---- faults -------------------------------------------------------------------------------
    def _apply_fault(self, api: str, kind: str, signing_key: bytes) -> bool:
        if kind == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return True
        if kind == "hang":
            self.emulator._stopping.wait(self.emulator.hang_seconds)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return True
        if kind.startswith("http"):
            status = int(kind[4:])
            text = f"<html><body>{status} upstream error</body></html>".encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)
            return True
        exc = OTSError(kind, DEFAULT_MESSAGES.get(kind, kind), STATUS_BY_CODE.get(kind, 503))
        self._send_error(api, exc, signing_key)
        return True

    # ---- responses ------------------------------------------------------------------------------
    def _send_error(self, api: str, exc: OTSError, signing_key: bytes | None) -> None:
        err = pb.Error(code=exc.code, message=exc.message)
        self._send(api, exc.status, err.SerializeToString(), signing_key)

    def _send(self, api: str, status: int, payload: bytes, signing_key: bytes | None) -> None:
        headers = {
            "x-ots-contentmd5": base64.b64encode(hashlib.md5(payload).digest()).decode(),
            "x-ots-requestid": uuid.uuid4().hex,
            "x-ots-date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "x-ots-contenttype": "protocol buffer",
        }
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if signing_key is not None:
            sig = _b64_hmac(signing_key, _ots_headers_string(headers) + "\n/" + api, hashlib.sha1)
            self.send_header("Authorization", f"OTS {self.emulator.access_key_id}:{sig}")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class TablestoreEmulator:
    """A Tablestore instance on 127.0.0.1 that the unmodified `tablestore` SDK can talk to."""

    def __init__(
        self,
        access_key_id: str = "test-akid",
        access_key_secret: str = "test-secret",
        instance_name: str = "test-instance",
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        relax: tuple[str, ...] | list[str] = (),
        table_ready_seconds: float | None = None,
        index_ready_seconds: float | None = None,
    ) -> None:
        """Strict by default: every rule of rules.RULES is enforced unless named in ``relax`` or in
        $TABLESTORE_EMULATOR_RELAX (diagnosis only)."""
        self.access_key_id = access_key_id
        self.access_key_secret = access_key_secret
        self.instance_name = instance_name
        self.host, self.port = host, port
        self.rules = Rules.from_env(relax)
        self.store = Store(self.rules)
        self.store.table_ready_seconds = TABLE_READY_SECONDS if table_ready_seconds is None else table_ready_seconds
        self.store.index_ready_seconds = INDEX_READY_SECONDS if index_ready_seconds is None else index_ready_seconds
        self.api = Api(self.store)
        self.faults = FaultInjector()
        self.counts: collections.Counter[str] = collections.Counter()
        #: Calls per (api, table), for tests on a server that also keeps other tables (history, access log).
        self.table_counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.hang_seconds = 60.0
        self.last_internal_error: Exception | None = None
        self._counts_lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> TablestoreEmulator:
        handler = type("BoundHandler", (Handler,), {"emulator": self})
        self._stopping.clear()
        self._server = _Server((self.host, self.port), handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="tablestore-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> TablestoreEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def credentials(self) -> dict[str, str]:
        """The connection arguments ``TablestoreStore`` takes (endpoint, instance, key pair) for this instance."""
        return {
            "endpoint": self.endpoint,
            "instance_name": self.instance_name,
            "access_key_id": self.access_key_id,
            "access_key_secret": self.access_key_secret,
        }

    # ---- knobs ----------------------------------------------------------------------------------
    @property
    def index_delay(self) -> float:
        return self.store.index_delay

    @index_delay.setter
    def index_delay(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("index_delay must be >= 0")
        with self.store.lock:
            self.store.index_delay = float(seconds)

    @property
    def table_ready_seconds(self) -> float:
        return self.store.table_ready_seconds

    @table_ready_seconds.setter
    def table_ready_seconds(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("table_ready_seconds must be >= 0")
        self.store.table_ready_seconds = float(seconds)

    @property
    def index_ready_seconds(self) -> float:
        return self.store.index_ready_seconds

    @index_ready_seconds.setter
    def index_ready_seconds(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("index_ready_seconds must be >= 0")
        self.store.index_ready_seconds = float(seconds)

    def ready_now(self) -> None:
        """End every table's not-ready window and every index's initialization now (test helper for wire-level
        tests whose subject is something else; the real service has none, and code under test must wait)."""
        with self.store.lock:
            for table in self.store.tables.values():
                table.ready_at = 0.0
                for index in table.indexes.values():
                    index.ready_at = 0.0

    def _count(self, api: str, body: bytes = b"") -> None:
        tables = tables_of(api, body)
        with self._counts_lock:
            self.counts[api] += 1
            for table in tables:
                self.table_counts[(api, table)] += 1

    def reset_counts(self) -> None:
        with self._counts_lock:
            self.counts.clear()
            self.table_counts.clear()

    def calls_on(self, table: str) -> dict[str, int]:
        """Calls per API that touched ``table`` since the last reset_counts (a batch counts once per table)."""
        with self._counts_lock:
            return {api: n for (api, name), n in self.table_counts.items() if name == table and n}

    def inject(
        self,
        api: str,
        kind: str,
        *,
        times: int | None = None,
        rate: float | None = None,
        seed: int = 0,
    ) -> None:
        """Make matching calls fail: `times` next calls, or a seeded `rate` fraction (API "*" = any)."""
        self.faults.inject(api, kind, times=times, rate=rate, seed=seed)

    def clear_faults(self) -> None:
        self.faults.clear()

    def flush_index(self) -> None:
        """Make every pending write visible to Search now (test helper; the real service has none)."""
        with self.store.lock:
            for table in self.store.tables.values():
                while table.pending:
                    _, key, row = table.pending.popleft()
                    self.store._apply(table, key, row)
                table.last_visible_at = 0.0
