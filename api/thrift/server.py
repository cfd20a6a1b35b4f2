"""HMS Thrift server: binary protocol, unframed, accelerated (fastbinary), a pool of connection threads.

Connections are cheap (Trino opens one per call): accept, decode with the C decoder, answer from
the pre-encoded cache, close. Errors of the catalog are mapped here, once, onto the exceptions the
method declares (``NoSuchObjectException``, ``MetaException``, ...). Methods we do not serve get
the standard "Invalid method name" application exception, so clients fall back; write calls get
a ``MetaException`` saying the catalog is read-only. Malformed or oversized input closes that
connection only.
"""

from __future__ import annotations

import collections
import io
import logging
import select
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hmsclient.genthrift.fb303 import FacebookService
from hmsclient.genthrift.hive_metastore import ThriftHiveMetastore
from hmsclient.genthrift.hive_metastore import ttypes as hms
from thrift.protocol import TBinaryProtocol
from thrift.Thrift import TApplicationException, TMessageType, TType
from thrift.transport import TTransport

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


#: ``unknown_methods`` keeps this many distinct names, each cut to this many characters.
_UNKNOWN_NAMES_KEPT, _UNKNOWN_NAME_CHARS, _LOGGED_NAME_CHARS = 100, 128, 100
_RECV_CHUNK = 256 * 1024  # recv(n) allocates n bytes first: never ask for a message's full size


class _MessageTooLarge(Exception):
    """A message went over ``max_message_bytes``."""


class _RequestTooSlow(Exception):
    """A request did not arrive in its time allowance (slowloris, stalled client)."""


class _Throttle:
    """Rate limit for log lines: at most ``burst`` per ``every_s``; counts what it suppressed."""

    def __init__(self, every_s: float = 10.0, burst: int = 5) -> None:
        self.every_s, self.burst = every_s, burst
        self._lock = threading.Lock()
        self._window = float("-inf")
        self._used = 0
        self._suppressed = 0

    def allow(self) -> int | None:
        """None: stay quiet. Otherwise log, mentioning the returned count of suppressed lines."""
        now = time.monotonic()
        with self._lock:
            if now - self._window >= self.every_s:
                self._window, self._used = now, 0
            if self._used >= self.burst:
                self._suppressed += 1
                return None
            self._used += 1
            suppressed, self._suppressed = self._suppressed, 0
            return suppressed


class _ConnTransport(TTransport.TTransportBase, TTransport.CReadableTransport):  # type: ignore[misc]
    """Buffered socket reads for one connection, counted per message, in linear time.

    Replaces ``TBufferedTransport(TSocket)``, whose ``readAll`` appends ``bytes`` chunk by chunk
    (quadratic for a large string sent slowly). Bytes received since :meth:`begin_message` are
    counted against ``max_message_bytes`` (:class:`_MessageTooLarge`), and the request must
    arrive within ``timeout_s`` plus its size at ``min_rate`` bytes/s (:class:`_RequestTooSlow`).
    """

    def __init__(self, sock: socket.socket, max_message_bytes: int, timeout_s: float,
                 min_rate: float, rbuf_size: int = 65536) -> None:
        self._sock = sock
        self._limit = max_message_bytes
        self._timeout_s = timeout_s
        self._min_rate = float(min_rate)
        self._rbuf_size = rbuf_size
        self._rbuf = io.BytesIO(b"")
        self._rlen = 0
        self._count = 0
        self._started = time.monotonic()

    def buffered(self) -> int:
        """Bytes received but not yet consumed (the start of a pipelined next message)."""
        return self._rlen - self._rbuf.tell()

    def begin_message(self) -> None:
        self._count = self.buffered()
        self._started = time.monotonic()

    def _set_buffer(self, data: bytes | bytearray) -> None:
        self._rbuf = io.BytesIO(data)
        self._rlen = len(data)

    def _recv(self, size: int) -> bytes:
        if self._count >= self._limit:
            raise _MessageTooLarge(f"message over {self._limit} bytes")
        remaining = (self._timeout_s + self._count / self._min_rate
                     - (time.monotonic() - self._started))
        if remaining <= 0:
            raise _RequestTooSlow(f"{self._count} bytes in {self._timeout_s:.1f}s+")
        self._sock.settimeout(remaining)
        try:
            data = self._sock.recv(max(1, min(size, _RECV_CHUNK)))
        except TimeoutError as e:
            raise _RequestTooSlow(f"stalled after {self._count} bytes") from e
        except OSError as e:
            raise TTransport.TTransportException(
                TTransport.TTransportException.END_OF_FILE, f"recv failed: {e}") from e
        if not data:
            raise TTransport.TTransportException(TTransport.TTransportException.END_OF_FILE,
                                                 "connection closed")
        self._count += len(data)
        if self._count > self._limit:
            raise _MessageTooLarge(f"message over {self._limit} bytes")
        return data

    def isOpen(self) -> bool:
        return True

    def read(self, sz: int) -> bytes:
        ret = self._rbuf.read(sz)
        if ret:
            return ret
        self._set_buffer(self._recv(max(sz, self._rbuf_size)))
        return self._rbuf.read(sz)

    def readAll(self, sz: int) -> bytes:
        buf = bytearray(self._rbuf.read(sz))
        while len(buf) < sz:
            chunk = self._recv(max(sz - len(buf), self._rbuf_size))
            if len(buf) == 0 and len(chunk) > sz:  # read ahead: keep the rest buffered
                self._set_buffer(chunk)
                return self._rbuf.read(sz)
            buf += chunk
            if len(buf) > sz:
                self._set_buffer(bytes(buf[sz:]))
                del buf[sz:]
        return bytes(buf)

    # CReadableTransport, for the C decoder (fastbinary)
    @property
    def cstringio_buf(self) -> io.BytesIO:
        return self._rbuf

    def cstringio_refill(self, partialread: bytes, reqlen: int) -> io.BytesIO:
        buf = bytearray(partialread)
        while len(buf) < reqlen:
            buf += self._recv(max(reqlen - len(buf), self._rbuf_size))
        self._set_buffer(bytes(buf))
        return self._rbuf


class _WorkerPool:
    """Threads for connections, at most ``max_workers``; a thread idle for ``idle_s`` exits.

    (``ThreadPoolExecutor`` never lets its threads go: one burst of slow clients would keep its
    threads for the life of the process.)
    """

    def __init__(self, max_workers: int, idle_s: float, name: str = "thrift-conn") -> None:
        self.max_workers, self.idle_s, self.name = max_workers, idle_s, name
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []  # LIFO: the most recently used first, the rest age out
        self._backlog: collections.deque[Callable[[], None]] = collections.deque()
        self._workers = 0
        self._started = 0
        self._stopped = False

    @property
    def workers(self) -> int:
        with self._lock:
            return self._workers

    def submit(self, task: Callable[[], None]) -> None:
        with self._lock:
            if self._stopped:
                return
            if self._idle:
                worker = self._idle.pop()
                worker.task = task
                worker.wake.set()
                return
            if self._workers >= self.max_workers:
                self._backlog.append(task)
                return
            self._workers += 1
            self._started += 1
            worker = _Worker(task)
            number = self._started
        threading.Thread(target=self._run, args=(worker,), name=f"{self.name}-{number}",
                         daemon=True).start()

    def _run(self, worker: _Worker) -> None:
        while True:
            task, worker.task = worker.task, None
            if task is not None:
                try:
                    task()
                except Exception:  # noqa: BLE001 - a task must not kill its thread silently
                    log.exception("thrift connection task failed")
            with self._lock:
                if self._stopped:
                    self._workers -= 1
                    return
                if self._backlog:
                    worker.task = self._backlog.popleft()
                    continue
                worker.wake.clear()
                self._idle.append(worker)
            woken = worker.wake.wait(self.idle_s)
            with self._lock:
                if worker.task is None and (not woken or self._stopped):
                    if worker in self._idle:
                        self._idle.remove(worker)
                    self._workers -= 1
                    return

    def shutdown(self) -> None:
        with self._lock:
            self._stopped = True
            self._backlog.clear()
            for worker in self._idle:
                worker.wake.set()
            self._idle.clear()


class _Worker:
    __slots__ = ("task", "wake")

    def __init__(self, task: Callable[[], None] | None) -> None:
        self.task = task
        self.wake = threading.Event()


_BUSY, _IDLE, _CLOSED = "busy", "idle", "closed"


class _Conn:
    """One accepted connection: busy (a request in progress) or idle (between messages)."""

    __slots__ = ("sock", "client", "state", "idle_since")

    def __init__(self, sock: socket.socket, client: str) -> None:
        self.sock, self.client = sock, client
        self.state = _IDLE  # until its first request arrives
        self.idle_since = time.monotonic()


class ThriftServer:
    """Serves HMS Thrift on ``host:port`` until :meth:`stop`."""

    def __init__(self, service: CatalogService, host: str = "127.0.0.1", port: int = 9083,
                 *, max_connections: int = 256, idle_timeout_s: float = 600.0,
                 max_message_bytes: int = 64 * 1024 * 1024,
                 cache: EncodedCache | None = None,
                 view: ClientView = ClientView.VERBATIM,
                 max_connections_per_client: int = 64, min_idle_timeout_s: float = 1.0,
                 request_timeout_s: float = 10.0, min_request_bytes_per_s: int = 64 * 1024,
                 worker_idle_s: float = 60.0) -> None:
        self.service = service
        self.cache = cache or EncodedCache(service.settings.encoded_cache_bytes)
        self.handler = HmsHandler(service, self.cache, view)
        self.methods = _build_methods(self.handler)
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self.max_message_bytes = max_message_bytes
        self.max_connections_per_client = max_connections_per_client
        self.min_idle_timeout_s = min(min_idle_timeout_s, idle_timeout_s)
        self.request_timeout_s = request_timeout_s
        self.min_request_bytes_per_s = min_request_bytes_per_s
        # Free slots kept by reclaiming idle connections, so a new client is served at once.
        self.reserve = max(1, min(16, max_connections // 16))
        #: Unknown method name (cut to 128 characters, at most 100 names) -> calls.
        self.unknown_methods: Counter[str] = Counter()
        self.unknown_methods_total = 0
        self.calls: Counter[str] = Counter()
        self.malformed_connections = 0
        self.oversized_messages = 0
        self.slow_requests = 0
        self.reclaimed_connections = 0
        self.refused_connections = 0
        self._stats = threading.Lock()
        self._throttles = {k: _Throttle() for k in ("unknown", "oversized", "refused")}
        self._per_client: Counter[str] = Counter()
        self._listener = socket.create_server((host, port), backlog=512, reuse_port=False)
        self.host, self.port = self._listener.getsockname()[:2]
        self._connections: dict[socket.socket, _Conn] = {}
        self._guard = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        # Threads are reused across connections (Trino opens one connection per call) and exit
        # after worker_idle_s unused; reclaimed connections may hold one briefly: + reserve.
        self._pool = _WorkerPool(max_connections + self.reserve, worker_idle_s)

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
        self._pool.shutdown()

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
                conn, addr = self._listener.accept()
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
            self._admit(conn, addr)

    # -- admission: slots, per-client cap, reclaiming idle connections ---------------------------

    def _admit(self, sock: socket.socket, addr: Any) -> None:
        client = str(addr[0]) if isinstance(addr, tuple) and addr else str(addr)
        refused = None
        with self._guard:
            if self._per_client[client] >= self.max_connections_per_client:
                # That client's idle connections go first; over the cap, refuse only under load.
                if (not self._reclaim_idle_locked(client)
                        and len(self._connections) >= self.max_connections // 2):
                    refused = (f"{self._per_client[client]} open from {client} "
                               f"(max {self.max_connections_per_client} per client)")
            if refused is None and len(self._connections) >= self.max_connections - self.reserve:
                if (not self._reclaim_idle_locked(None)
                        and len(self._connections) >= self.max_connections):
                    refused = f"{len(self._connections)} open (max {self.max_connections})"
            if refused is None:
                conn = _Conn(sock, client)
                self._connections[sock] = conn
                self._per_client[client] += 1
            else:
                self.refused_connections += 1
        if refused is not None:
            suppressed = self._throttles["refused"].allow()
            if suppressed is not None:
                log.warning("refusing thrift connection: %s, all busy (%d more refused since "
                            "the last report)", refused, suppressed)
            sock.close()
            return
        self._pool.submit(lambda: self._serve_connection(conn))

    def _reclaim_idle_locked(self, client: str | None) -> bool:
        """Close the longest idle connection (of ``client``, or any); caller holds the guard."""
        victim: _Conn | None = None
        for conn in self._connections.values():
            if (conn.state == _IDLE and (client is None or conn.client == client)
                    and (victim is None or conn.idle_since < victim.idle_since)):
                victim = conn
        if victim is None:
            return False
        self._release_locked(victim)
        self.reclaimed_connections += 1
        try:
            victim.sock.shutdown(socket.SHUT_RDWR)  # wakes its thread, which closes it
        except OSError:
            pass
        return True

    def _release_locked(self, conn: _Conn) -> None:
        conn.state = _CLOSED
        if self._connections.get(conn.sock) is conn:
            del self._connections[conn.sock]
            self._per_client[conn.client] -= 1
            if self._per_client[conn.client] <= 0:
                del self._per_client[conn.client]

    def idle_timeout_now(self) -> float:
        """The idle timeout at the current load: the configured one while under half full,
        shrinking to ``min_idle_timeout_s`` at 90% full."""
        with self._guard:
            load = len(self._connections) / self.max_connections
        if load <= 0.5:
            return self.idle_timeout_s
        frac = min(1.0, (load - 0.5) / 0.4)
        return self.idle_timeout_s + (self.min_idle_timeout_s - self.idle_timeout_s) * frac

    def _wait_for_request(self, conn: _Conn) -> bool:
        """Wait, idle (reclaimable), for the next message; False: close the connection."""
        with self._guard:
            if conn.state == _CLOSED:
                return False
            conn.state, conn.idle_since = _IDLE, time.monotonic()
        poller = select.poll()
        poller.register(conn.sock.fileno(), select.POLLIN | select.POLLPRI)
        while True:
            if self._stopped.is_set():
                return False
            left = self.idle_timeout_now() - (time.monotonic() - conn.idle_since)
            if left <= 0:
                return False  # idle timeout
            if poller.poll(min(left, 1.0) * 1000):
                break
        with self._guard:
            if conn.state != _IDLE:
                return False  # reclaimed while idle
            conn.state = _BUSY
        return True

    # -- one connection --------------------------------------------------------------------------

    def _serve_connection(self, conn: _Conn) -> None:
        sock = conn.sock
        limit = self.max_message_bytes
        trans = _ConnTransport(sock, limit, self.request_timeout_s, self.min_request_bytes_per_s)
        # A string takes its length in bytes, a list at least one byte per element: both are
        # bounded by the message size limit as well.
        iprot = TBinaryProtocol.TBinaryProtocolAccelerated(
            trans, string_length_limit=limit, container_length_limit=limit)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while not self._stopped.is_set():
                if not trans.buffered() and not self._wait_for_request(conn):
                    return  # idle timeout, reclaimed, or stopping
                with self._guard:
                    if conn.state == _CLOSED:
                        return
                    conn.state = _BUSY  # also a pipelined message, read without waiting
                trans.begin_message()
                try:
                    name, mtype, seqid = iprot.readMessageBegin()
                except TTransport.TTransportException:
                    return  # closed by the client
                reply = self._dispatch(name, mtype, seqid, iprot)
                if reply:
                    sock.settimeout(self.request_timeout_s
                                    + len(reply) / self.min_request_bytes_per_s)
                    try:
                        sock.sendall(reply)
                    except OSError:
                        return  # the client went away or stopped reading
        except _MessageTooLarge:
            with self._stats:
                self.oversized_messages += 1
            suppressed = self._throttles["oversized"].allow()
            if suppressed is not None:
                log.warning("closing thrift connection from %s: message over %d bytes "
                            "(thrift_max_message_bytes; %d more since the last report)",
                            conn.client, limit, suppressed)
        except _RequestTooSlow as e:
            with self._stats:
                self.slow_requests += 1
            log.debug("closing thrift connection from %s: request too slow (%s)", conn.client, e)
        except Exception as e:  # noqa: BLE001 - a bad client must never take the server down
            with self._stats:
                self.malformed_connections += 1
            log.debug("closing thrift connection from %s after malformed input: %.200s",
                      conn.client, e)
        finally:
            with self._guard:
                self._release_locked(conn)
            try:
                sock.close()
            except OSError:
                pass

    def _dispatch(self, name: str, mtype: int, seqid: int,
                  iprot: TBinaryProtocol.TBinaryProtocol) -> bytes | None:
        method = self.methods.get(name)
        if method is None or mtype not in (TMessageType.CALL, TMessageType.ONEWAY):
            iprot.skip(TType.STRUCT)
            iprot.readMessageEnd()
            self._count_unknown(name)
            return _application_error(name, seqid, TApplicationException.UNKNOWN_METHOD,
                                      f"Invalid method name: '{name[:_UNKNOWN_NAME_CHARS]}'")
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

    def _count_unknown(self, name: str) -> None:
        key = name[:_UNKNOWN_NAME_CHARS]
        with self._stats:
            self.unknown_methods_total += 1
            first = key not in self.unknown_methods
            if not first or len(self.unknown_methods) < _UNKNOWN_NAMES_KEPT:
                self.unknown_methods[key] += 1
        if first:
            suppressed = self._throttles["unknown"].allow()
            if suppressed is not None:
                more = "..." if len(name) > _LOGGED_NAME_CHARS else ""
                log.info("unknown thrift method %r%s (%d chars; %d more unknown names since "
                         "the last report)", name[:_LOGGED_NAME_CHARS], more, len(name),
                         suppressed)

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
