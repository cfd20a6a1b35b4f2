"""HMS Thrift server: binary protocol, unframed, accelerated (fastbinary), a pool of connection threads.

Connections are cheap (Trino opens one per call): accept, decode with the C decoder, answer from
the pre-encoded cache, close. Errors of the catalog are mapped here, once, onto the exceptions the
method declares (``NoSuchObjectException``, ``MetaException``, ...). Methods we do not serve get
the standard "Invalid method name" application exception, so clients fall back; write calls get
a ``MetaException`` saying the catalog is read-only. Malformed or oversized input closes that
connection only.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from hmsclient.genthrift.fb303 import FacebookService
from hmsclient.genthrift.hive_metastore import ThriftHiveMetastore
from hmsclient.genthrift.hive_metastore import ttypes as hms
from thrift.protocol import TBinaryProtocol
from thrift.Thrift import TApplicationException, TMessageType, TType
from thrift.transport import TSocket, TTransport

from api.thrift.cache import EncodedCache
from api.thrift.handler import (
    Encoded,
    HmsHandler,
    encode_struct,
    served_methods,
)
from catalog.exceptions import (
    AlreadyExistsError,
    CatalogError,
    InvalidInputError,
    NotFoundError,
    ReadOnlyError,
)
from catalog.service import CatalogService
from catalog.serving import ClientView

log = logging.getLogger(__name__)

_VERSION_1 = 0x80010000
_WRITE_PREFIXES = (
    "create_", "alter_", "drop_", "add_", "append_", "update_", "delete_", "rename_",
    "exchange_", "grant_", "revoke_", "truncate_", "mark_", "set_aggr_stats_for",
    "put_file_metadata", "clear_file_metadata", "cache_file_metadata", "open_txns", "abort_txn",
    "commit_txn", "lock", "unlock", "heartbeat", "compact", "fire_listener_event",
    "partition_name_to_vals_write", "setMetaConf", "reinitialize", "flushCache",
)

#: Catalog error class -> Thrift exception classes to try, in order, among those a method declares.
_ERROR_MAP: list[tuple[type[CatalogError], tuple[type[Any], ...]]] = [
    (NotFoundError, (hms.NoSuchObjectException, hms.UnknownTableException,
                     hms.UnknownDBException, hms.MetaException)),
    (AlreadyExistsError, (hms.AlreadyExistsException, hms.MetaException)),
    (InvalidInputError, (hms.InvalidInputException, hms.InvalidObjectException,
                         hms.InvalidOperationException, hms.MetaException)),
    (CatalogError, (hms.MetaException,)),
]


@dataclass(frozen=True)
class _Method:
    name: str
    impl: Callable[[Any], Any] | None  # None: a declared write method we refuse
    args_cls: type[Any]
    result_cls: type[Any] | None  # None for oneway methods
    exceptions: dict[type[Any], str]  # Thrift exception class -> result field name


def _idl_method(name: str) -> tuple[type[Any], type[Any] | None] | None:
    for module in (ThriftHiveMetastore, FacebookService):
        args_cls = getattr(module, f"{name}_args", None)
        if args_cls is not None:
            return args_cls, getattr(module, f"{name}_result", None)
    return None


def _is_write(name: str) -> bool:
    return name.startswith(_WRITE_PREFIXES)


def _build_methods(handler: HmsHandler) -> dict[str, _Method]:
    methods: dict[str, _Method] = {}
    impls = served_methods(handler)
    idl_names = {n[:-5] for module in (ThriftHiveMetastore, FacebookService)
                 for n in dir(module) if n.endswith("_args")}
    for name in sorted(idl_names):
        impl = impls.get(name)
        if impl is None and not _is_write(name):
            continue
        found = _idl_method(name)
        assert found is not None
        args_cls, result_cls = found
        exceptions: dict[type[Any], str] = {}
        for spec in (result_cls.thrift_spec if result_cls is not None else ()):
            if spec is not None and spec[0] != 0 and spec[1] == TType.STRUCT:
                exceptions.setdefault(spec[3][0], spec[2])
        methods[name] = _Method(name, impl, args_cls, result_cls, exceptions)
    return methods


def _message(name: str, mtype: int, seqid: int, body: bytes) -> bytes:
    raw = name.encode()
    return struct.pack(">Ii", _VERSION_1 | mtype, len(raw)) + raw + struct.pack(">i", seqid) + body


def _application_error(name: str, seqid: int, kind: int, text: str) -> bytes:
    msg = text.encode()
    body = (struct.pack(">bhi", TType.STRING, 1, len(msg)) + msg
            + struct.pack(">bhi", TType.I32, 2, kind) + b"\x00")
    return _message(name, TMessageType.EXCEPTION, seqid, body)


class ThriftServer:
    """Serves HMS Thrift on ``host:port`` until :meth:`stop`."""

    def __init__(self, service: CatalogService, host: str = "127.0.0.1", port: int = 9083,
                 *, max_connections: int = 256, idle_timeout_s: float = 600.0,
                 max_message_bytes: int = 64 * 1024 * 1024,
                 cache: EncodedCache | None = None,
                 view: ClientView = ClientView.VERBATIM) -> None:
        self.service = service
        self.cache = cache or EncodedCache(service.settings.encoded_cache_bytes)
        self.handler = HmsHandler(service, self.cache, view)
        self.methods = _build_methods(self.handler)
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self.max_message_bytes = max_message_bytes
        self.unknown_methods: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self._listener = socket.create_server((host, port), backlog=512, reuse_port=False)
        self.host, self.port = self._listener.getsockname()[:2]
        self._connections: set[socket.socket] = set()
        self._guard = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        # Threads are reused across connections: Trino opens one connection per call.
        self._pool = ThreadPoolExecutor(max_workers=max_connections,
                                        thread_name_prefix="thrift-conn")

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> ThriftServer:
        self._thread = threading.Thread(target=self._accept_loop, name="thrift-accept",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        with self._guard:
            for conn in list(self._connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _accept_loop(self) -> None:
        # Imports and constants kept local: this method is maintained on its own.
        import errno
        import time

        # Out of descriptors or kernel memory: the pending connections stay in the listen
        # backlog and are accepted once something is freed; retrying at once would spin.
        out_of_resources = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
        # A connection that failed before we took it (see accept(2)); the next one is fine.
        transient = {errno.ECONNABORTED, errno.ECONNRESET, errno.EPROTO, errno.EPERM,
                     errno.ETIMEDOUT, errno.ENETDOWN, errno.ENETUNREACH, errno.EHOSTDOWN,
                     errno.EHOSTUNREACH, errno.ENOPROTOOPT, errno.EOPNOTSUPP,
                     getattr(errno, "ENONET", errno.ENETDOWN), errno.EAGAIN, errno.EWOULDBLOCK,
                     errno.EINTR}
        min_delay_s, max_delay_s, warn_every_s = 0.05, 1.0, 10.0
        delay = 0.0  # current backoff; 0 while accepts succeed
        refused = 0  # failed accepts not yet reported
        last_warning = float("-inf")
        while not self._stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError as e:
                if self._stopped.is_set():
                    return
                if isinstance(e, TimeoutError) or e.errno in transient:
                    continue
                # Out of resources, or unexpected: back off (never spin), warn now and then.
                refused += 1
                now = time.monotonic()
                if now - last_warning >= warn_every_s:
                    with self._guard:
                        open_now = len(self._connections)
                    reason = ("out of file descriptors or memory" if e.errno in out_of_resources
                              else "unexpected error")
                    log.warning("thrift accept failing (%s: %s): %d attempt(s) refused since "
                                "the last report, %d connection(s) open; pending connections "
                                "wait in the backlog, retrying with backoff up to %.0fs",
                                reason, e, refused, open_now, max_delay_s)
                    last_warning, refused = now, 0
                delay = min(max_delay_s, delay * 2) if delay else min_delay_s
                if self._stopped.wait(delay):
                    return
                continue
            delay = 0.0
            with self._guard:
                if len(self._connections) >= self.max_connections:
                    log.warning("refusing connection: %d open (max %d)", len(self._connections),
                                self.max_connections)
                    conn.close()
                    continue
                self._connections.add(conn)
            self._pool.submit(self._serve_connection, conn)

    # -- one connection --------------------------------------------------------------------------

    def _serve_connection(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(self.idle_timeout_s)
        tsock = TSocket.TSocket()
        tsock.handle = conn
        trans = TTransport.TBufferedTransport(tsock, rbuf_size=65536)
        limit = self.max_message_bytes
        iprot = TBinaryProtocol.TBinaryProtocolAccelerated(
            trans, string_length_limit=limit, container_length_limit=limit)
        try:
            while not self._stopped.is_set():
                try:
                    name, mtype, seqid = iprot.readMessageBegin()
                except TTransport.TTransportException:
                    return  # closed by the client, or idle timeout
                reply = self._dispatch(name, mtype, seqid, iprot)
                if reply:
                    conn.sendall(reply)
        except Exception as e:  # noqa: BLE001 - a bad client must never take the server down
            log.info("closing thrift connection after malformed input: %s", e)
        finally:
            with self._guard:
                self._connections.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    def _dispatch(self, name: str, mtype: int, seqid: int,
                  iprot: TBinaryProtocol.TBinaryProtocol) -> bytes | None:
        method = self.methods.get(name)
        if method is None or mtype not in (TMessageType.CALL, TMessageType.ONEWAY):
            iprot.skip(TType.STRUCT)
            iprot.readMessageEnd()
            self.unknown_methods[name] += 1
            log.info("unknown thrift method %r", name)
            return _application_error(name, seqid, TApplicationException.UNKNOWN_METHOD,
                                      f"Invalid method name: '{name}'")
        args = method.args_cls()
        args.read(iprot)
        iprot.readMessageEnd()
        self.calls[name] += 1
        try:
            if method.impl is None:
                raise ReadOnlyError(f"Strata serves this catalog read-only: '{name}' is not "
                                    "supported")
            value = method.impl(args)
        except CatalogError as e:
            return self._error_reply(method, seqid, e)
        except Exception as e:  # noqa: BLE001 - report, keep serving
            log.exception("internal error in %s", name)
            return self._error_reply(method, seqid, CatalogError(f"internal error in {name}: {e}"))
        if method.result_cls is None or mtype == TMessageType.ONEWAY:
            return None
        if isinstance(value, Encoded):
            body = struct.pack(">bh", value.ttype, 0) + value.payload + b"\x00"
        elif value is None:
            body = b"\x00"
        else:
            body = encode_struct(method.result_cls(success=value))
        return _message(name, TMessageType.REPLY, seqid, body)

    def _error_reply(self, method: _Method, seqid: int, error: CatalogError) -> bytes | None:
        if method.result_cls is None:
            return None
        message = str(error)
        for error_cls, candidates in _ERROR_MAP:
            if isinstance(error, error_cls):
                for exc_cls in candidates:
                    field = method.exceptions.get(exc_cls)
                    if field is not None:
                        result = method.result_cls(**{field: exc_cls(message=message)})
                        return _message(method.name, TMessageType.REPLY, seqid,
                                        encode_struct(result))
                break
        return _application_error(method.name, seqid, TApplicationException.INTERNAL_ERROR,
                                  message)
