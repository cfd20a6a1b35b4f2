"""A logging TCP proxy that decodes Thrift binary-protocol calls between a client and a metastore.

Put it between Trino (or any HMS client) and a metastore to see exactly which Thrift methods
the client calls and with which arguments::

    with ThriftTap("127.0.0.1", hms_port) as tap:
        ...point the client at thrift://127.0.0.1:{tap.port}...
        print(tap.calls)            # ["get_all_databases", "get_table_req", ...]
        print(tap.records[0].args)  # {1: {1: "db", 2: "tbl"}} -- field id -> value

Unframed and framed transports and strict and old-style binary headers are understood.
Arguments and results are decoded generically (by field id, no IDL needed); :func:`named_args`
decodes a request with hmsclient's generated ``<method>_args`` class instead.

Optionally the tap rewrites string values on the fly (``rewrite_request`` / ``rewrite_reply``),
e.g. to translate table locations between what a metastore stores and what a client expects.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Thrift message types
CALL, REPLY, EXCEPTION, ONEWAY = 1, 2, 3, 4
MESSAGE_TYPES = {CALL: "CALL", REPLY: "REPLY", EXCEPTION: "EXCEPTION", ONEWAY: "ONEWAY"}

# Thrift wire types
T_STOP, T_BOOL, T_BYTE, T_DOUBLE, T_I16, T_I32, T_I64 = 0, 2, 3, 4, 6, 8, 10
T_STRING, T_STRUCT, T_MAP, T_SET, T_LIST = 11, 12, 13, 14, 15

_VERSION_MASK = 0xFFFF0000
_VERSION_1 = 0x80010000

StringRewriter = Callable[[str], str]


class _Incomplete(Exception):
    """More bytes are needed to decode a whole message."""


class _Reader:
    """Generic decoder for Thrift's binary protocol; remembers where each string value lies."""

    def __init__(self, data: bytes | bytearray, pos: int = 0) -> None:
        self.data = data
        self.pos = pos
        self.string_spans: list[tuple[int, int, str]] = []  # (start of length prefix, end, text)

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise _Incomplete
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return out

    def i8(self) -> int:
        return struct.unpack("!b", self.take(1))[0]

    def i16(self) -> int:
        return struct.unpack("!h", self.take(2))[0]

    def i32(self) -> int:
        return struct.unpack("!i", self.take(4))[0]

    def i64(self) -> int:
        return struct.unpack("!q", self.take(8))[0]

    def string(self) -> str | bytes:
        start = self.pos
        raw = self.take(self.i32())
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw
        self.string_spans.append((start, self.pos, text))
        return text

    def value(self, ttype: int) -> Any:
        if ttype == T_BOOL:
            return self.i8() != 0
        if ttype == T_BYTE:
            return self.i8()
        if ttype == T_DOUBLE:
            return struct.unpack("!d", self.take(8))[0]
        if ttype == T_I16:
            return self.i16()
        if ttype == T_I32:
            return self.i32()
        if ttype == T_I64:
            return self.i64()
        if ttype == T_STRING:
            return self.string()
        if ttype == T_STRUCT:
            return self.struct()
        if ttype == T_MAP:
            ktype, vtype, size = self.i8(), self.i8(), self.i32()
            pairs = [(self.value(ktype), self.value(vtype)) for _ in range(size)]
            try:
                return dict(pairs)
            except TypeError:  # unhashable (struct) keys
                return pairs
        if ttype in (T_SET, T_LIST):
            etype, size = self.i8(), self.i32()
            return [self.value(etype) for _ in range(size)]
        raise ValueError(f"unknown thrift type {ttype}")

    def struct(self) -> dict[int, Any]:
        out: dict[int, Any] = {}
        while True:
            ftype = self.i8()
            if ftype == T_STOP:
                return out
            fid = self.i16()
            out[fid] = self.value(ftype)

    def message(self) -> tuple[str, int, int, dict[int, Any]]:
        """Decode (name, type, seqid, body struct)."""
        first = self.i32()
        if first < 0:
            if (first & _VERSION_MASK) != _VERSION_1:
                raise ValueError(f"bad thrift version {first & 0xFFFFFFFF:#x}")
            mtype = first & 0xFF
            name = self.take(self.i32()).decode("utf-8", "replace")
        else:  # old-style: string name first, then a byte type
            name = self.take(first).decode("utf-8", "replace")
            mtype = self.i8()
        seqid = self.i32()
        return name, mtype, seqid, self.struct()


@dataclass
class Message:
    """One decoded Thrift message and its bytes as seen on the wire."""

    name: str
    mtype: int
    seqid: int
    body: dict[int, Any]
    raw: bytes  # the message without any frame header
    framed: bool
    string_spans: list[tuple[int, int, str]] = field(default_factory=list, repr=False)

    def encode(self, rewrite: StringRewriter | None = None) -> bytes:
        """Bytes to put back on the wire, with string values passed through ``rewrite``."""
        raw = self.raw
        if rewrite is not None:
            parts, last = [], 0
            for start, end, text in self.string_spans:
                new = rewrite(text)
                if new != text:
                    encoded = new.encode("utf-8")
                    parts += [raw[last:start], struct.pack("!i", len(encoded)), encoded]
                    last = end
            if parts:
                raw = b"".join([*parts, raw[last:]])
        return (struct.pack("!i", len(raw)) + raw) if self.framed else raw


def _looks_framed(buf: bytes | bytearray) -> bool:
    """True when the buffer starts with a 4-byte frame length followed by a strict header."""
    if len(buf) < 8:
        return False
    frame_len = struct.unpack("!i", buf[:4])[0]
    version = struct.unpack("!I", buf[4:8])[0]
    return frame_len > 0 and (version & _VERSION_MASK) == _VERSION_1


def decode_messages(buf: bytearray) -> list[Message]:
    """Pop every complete message from the front of ``buf`` (framed or unframed)."""
    out = []
    while buf:
        framed = _looks_framed(buf)
        start = 4 if framed else 0
        reader = _Reader(buf, start)
        try:
            name, mtype, seqid, body = reader.message()
        except _Incomplete:
            break
        end = (4 + struct.unpack("!i", buf[:4])[0]) if framed else reader.pos
        spans = [(s - start, e - start, text) for s, e, text in reader.string_spans]
        out.append(Message(name, mtype, seqid, body, bytes(buf[start : reader.pos]), framed, spans))
        del buf[:end]
    return out


@dataclass
class ThriftCall:
    """One request seen by the tap, with the reply paired to it when it came back."""

    name: str
    seqid: int
    args: dict[int, Any]
    connection: int
    reply_type: str | None = None
    result: dict[int, Any] | None = None
    raw: bytes = field(default=b"", repr=False)

    @property
    def failed(self) -> bool:
        """True when the server answered with a Thrift exception or a declared exception field."""
        if self.reply_type == "EXCEPTION":
            return True
        return self.result is not None and bool(self.result) and 0 not in self.result

    def __str__(self) -> str:
        status = self.reply_type or "pending"
        if self.failed:
            status += " (failed)"
        return f"{self.name}{self.args!r} -> {status}"


@dataclass
class _Conn:
    index: int
    pending: list[ThriftCall] = field(default_factory=list)


class ThriftTap:
    """TCP proxy on 127.0.0.1 that forwards to ``upstream`` and records decoded Thrift calls.

    ``rewrite_request`` / ``rewrite_reply`` map every string value of requests / replies;
    messages are then forwarded whole once decoded instead of byte by byte.
    """

    def __init__(self, upstream_host: str, upstream_port: int, port: int = 0, *,
                 rewrite_request: StringRewriter | None = None,
                 rewrite_reply: StringRewriter | None = None) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.rewrite_request = rewrite_request
        self.rewrite_reply = rewrite_reply
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self.port: int = self._listener.getsockname()[1]
        self.records: list[ThriftCall] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._ended: dict[int, int] = {}  # connection -> directions that have ended
        self._threads: list[threading.Thread] = []
        self._stopped = threading.Event()
        self._connections = 0

    @property
    def calls(self) -> list[str]:
        """Names of the methods called, in order."""
        with self._lock:
            return [r.name for r in self.records]

    def mark(self) -> int:
        """Position in :attr:`records`, to slice out the calls made after it."""
        with self._lock:
            return len(self.records)

    def calls_since(self, mark: int) -> list[str]:
        """Method names recorded after :meth:`mark` returned ``mark``."""
        with self._lock:
            return [r.name for r in self.records[mark:]]

    def records_since(self, mark: int) -> list[ThriftCall]:
        """Records made after :meth:`mark` returned ``mark``."""
        with self._lock:
            return list(self.records[mark:])

    def start(self) -> ThriftTap:
        """Start accepting connections in a daemon thread."""
        self._listener.listen(64)
        t = threading.Thread(target=self._accept_loop, name=f"thrift-tap-{self.port}", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        """Close the listener and every proxied connection."""
        self._stopped.set()
        with self._lock:
            sockets = [self._listener, *self._sockets]
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self) -> ThriftTap:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=10)
                upstream.settimeout(None)
            except OSError as e:
                self.errors.append(f"connect upstream {self.upstream}: {e}")
                client.close()
                continue
            with self._lock:
                self._connections += 1
                conn = _Conn(self._connections)
                self._sockets += [client, upstream]
            for src, dst, is_request in ((client, upstream, True), (upstream, client, False)):
                t = threading.Thread(target=self._pump, args=(src, dst, conn, is_request), daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, conn: _Conn, is_request: bool) -> None:
        rewrite = self.rewrite_request if is_request else self.rewrite_reply
        buf = bytearray()
        decoding = True
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not decoding:
                    dst.sendall(data)
                    continue
                if rewrite is None and not is_request:
                    dst.sendall(data)  # replies: at once (requests are recorded first, below)
                buf += data
                try:
                    messages = decode_messages(buf)
                except Exception as e:  # not Thrift binary (e.g. SASL): plain forwarding from now on
                    self.errors.append(f"decode: {e!r}")
                    decoding = False
                    if rewrite is not None or is_request:
                        dst.sendall(bytes(buf))
                    continue
                for msg in messages:
                    # A request is recorded before it is forwarded, so its reply always finds it.
                    self._record(conn, msg, is_request)
                    if rewrite is not None or is_request:
                        dst.sendall(msg.encode(rewrite))
        except OSError:
            pass
        finally:
            self._pump_done(conn, src, dst)

    def _pump_done(self, conn: _Conn, src: socket.socket, dst: socket.socket) -> None:
        """One direction ended: shut both down; close both once both directions have ended."""
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self._lock:
            self._ended[conn.index] = self._ended.get(conn.index, 0) + 1
            if self._ended[conn.index] < 2:
                return
            del self._ended[conn.index]
            self._sockets = [s for s in self._sockets if s is not src and s is not dst]
        src.close()
        dst.close()

    def _record(self, conn: _Conn, msg: Message, is_request: bool) -> None:
        with self._lock:
            if is_request:
                call = ThriftCall(msg.name, msg.seqid, msg.body, conn.index, raw=msg.raw)
                self.records.append(call)
                if msg.mtype == CALL:
                    conn.pending.append(call)
                return
            for call in conn.pending:
                if call.name == msg.name and call.seqid == msg.seqid:
                    call.reply_type = MESSAGE_TYPES.get(msg.mtype, str(msg.mtype))
                    call.result = msg.body
                    conn.pending.remove(call)
                    return


def named_args(call: ThriftCall) -> Any:
    """Re-decode a call's arguments with hmsclient's generated ``<method>_args`` class, if any.

    Fields unknown to hmsclient's (Hive 2.x era) IDL are dropped by this decoding; the raw
    :attr:`ThriftCall.args` keeps them by field id.
    """
    from hmsclient.genthrift.hive_metastore import ThriftHiveMetastore
    from thrift.protocol.TBinaryProtocol import TBinaryProtocol
    from thrift.transport.TTransport import TMemoryBuffer

    cls = getattr(ThriftHiveMetastore, f"{call.name}_args", None)
    if cls is None or not call.raw:
        return None
    proto = TBinaryProtocol(TMemoryBuffer(call.raw))
    proto.readMessageBegin()
    obj = cls()
    obj.read(proto)
    return obj
