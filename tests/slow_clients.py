"""Slow (slowloris) HTTP clients: connections that send their headers or their body a byte at a time."""

from __future__ import annotations

import resource
import socket
import threading


def raise_open_files_limit(n: int) -> None:
    """This process may need more descriptors than the receiver it attacks."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


def limit_open_files(n: int):
    """A ``preexec_fn`` giving the child process at most ``n`` descriptors (``ulimit -n N``)."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    return apply


class Slowloris:
    """``count`` connections to ``host:port``; half stall in their headers, half in their body.

    Each sends a byte every ``interval`` seconds and never finishes. ``open`` counts the
    connections the server has not closed yet.
    """

    def __init__(self, host: str, port: int, count: int, interval: float = 1.0) -> None:
        raise_open_files_limit(count + 256)
        self.socks: list[socket.socket] = []
        for _i in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(1.0)
            if sock.connect_ex((host, port)) == 0:  # blocks while the server's backlog is full
                sock.setblocking(False)
                self.socks.append(sock)
            else:
                sock.close()
        self.connected = len(self.socks)
        self.headers_only = {id(s) for s in self.socks[::2]}
        for sock in self.socks:
            if id(sock) in self.headers_only:
                start = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n"
            else:
                start = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 100000\r\n\r\n"
            self._send(sock, start)
        self.interval = interval
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._trickle, daemon=True)
        self.thread.start()

    def _send(self, sock: socket.socket, data: bytes) -> None:
        try:
            sock.send(data)
        except OSError:
            pass

    def _trickle(self) -> None:
        while not self.stop_event.wait(self.interval):
            for sock in self.socks:
                self._send(sock, b"X-Slow: 1\r\n"[:1] if id(sock) in self.headers_only else b"\x00")

    def open(self) -> int:
        """Connections not closed by the server (a closed one reads EOF or fails)."""
        alive = 0
        for sock in self.socks:
            try:
                data = sock.recv(65536)
                if data:
                    alive += 0  # an answer (408): the server closes it next
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
        return alive

    def close(self) -> None:
        self.stop_event.set()
        self.thread.join(5)
        for sock in self.socks:
            sock.close()


class StalledGrpcExport:
    """An OTLP/gRPC export that opens its stream and never sends its message (until :meth:`close`)."""

    def __init__(self, port: int) -> None:
        import grpc
        from helpers import EXPORT_METHOD

        self._release = threading.Event()
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        call = self._channel.stream_unary(EXPORT_METHOD, request_serializer=None, response_deserializer=None)
        self.future = call.future(self._never())

    def _never(self):
        self._release.wait()
        yield b""

    def outcome(self, timeout: float = 30.0):
        """The grpc.StatusCode the export ended with."""
        import grpc

        try:
            self.future.result(timeout=timeout)
        except grpc.RpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    def close(self) -> None:
        self._release.set()
        self._channel.close()
