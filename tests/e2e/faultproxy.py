"""A TCP proxy on loopback, owned by the test, between the product and the API server.

It passes traffic through, or injects the faults an API server in trouble shows: 500, 503 and
429 (with Retry-After) answers instead of forwarding, connections reset before or cut in the
middle of a stream (watches, exec transfers), delays; or it black-holes: keeps every connection
open and answers nothing. Nothing on the machine changes: only the product's kubeconfig points
here.

It terminates TLS with the API server's own serving certificate, whose names include 127.0.0.1,
so the product's kubeconfig keeps its CA and token and differs only in the port. Each connection
is inspected at its first request; later requests on a kept-alive connection pass, which is why
connections are also cut at random.
"""
import collections
import random
import select
import socket
import ssl
import struct
import threading
import time

PASS, FAULTY, BLACKHOLE = "pass", "faulty", "blackhole"
ANSWERS = {
    "500": b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: 62\r\n"
           b"Connection: close\r\n\r\n" + b'{"kind":"Status","status":"Failure","message":"injected 500"}'.ljust(62),
    "503": b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 62\r\n"
           b"Connection: close\r\n\r\n" + b'{"kind":"Status","status":"Failure","message":"injected 503"}'.ljust(62),
    "429": b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Type: application/json\r\n"
           b"Content-Length: 62\r\nConnection: close\r\n\r\n"
           + b'{"kind":"Status","status":"Failure","message":"injected 429"}'.ljust(62),
}
FAULTS = ("500", "503", "429", "reset", "delay", "cut")


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int, cert: str, key: str, ca: str,
                 fault_rate: float = 0.3, seed: int = 14):
        self.upstream = (upstream_host, upstream_port)
        self.server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_tls.load_cert_chain(cert, key)
        self.server_tls.set_alpn_protocols(["http/1.1"])
        self.client_tls = ssl.create_default_context(cafile=ca)
        self.client_tls.set_alpn_protocols(["http/1.1"])
        self.mode, self.fault_rate = PASS, fault_rate
        self.random = random.Random(seed)
        self.counts = collections.Counter()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closed = threading.Event()
        self.lock = threading.Lock()

    def start(self) -> "FaultProxy":
        threading.Thread(target=self._accept, name="faultproxy", daemon=True).start()
        return self

    def close(self) -> None:
        self.closed.set()
        self.listener.close()

    # ---- connections ----------------------------------------------------------------------------
    def _accept(self):
        while not self.closed.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _pick(self):
        with self.lock:
            if self.mode != FAULTY or self.random.random() >= self.fault_rate:
                return None
            fault = self.random.choice(FAULTS)
            self.counts[fault] += 1
            return fault

    def _serve(self, conn: socket.socket):
        open_sockets = [conn]
        try:
            conn.settimeout(30)
            client = self.server_tls.wrap_socket(conn, server_side=True)
            open_sockets.append(client)
            if self.mode == BLACKHOLE:
                return self._hold()
            head = _read_head(client)
            if head is None:
                return
            fault = self._pick()
            if fault in ANSWERS:
                client.sendall(ANSWERS[fault])
                return
            if fault == "reset":
                # Linger 0: close() sends RST, as a crashed server or a load balancer would.
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            if fault == "delay":
                time.sleep(self.random.uniform(0.5, 3))
            raw = socket.create_connection(self.upstream, timeout=10)
            open_sockets.append(raw)
            upstream = self.client_tls.wrap_socket(raw, server_hostname=self.upstream[0])
            open_sockets.append(upstream)
            upstream.sendall(head)
            cut_at = time.monotonic() + self.random.uniform(0.2, 4) if fault == "cut" else None
            self._pipe(client, upstream, cut_at)
        except (OSError, ssl.SSLError):
            pass
        finally:
            for sock in reversed(open_sockets):
                try:
                    sock.close()
                except OSError:
                    pass

    def _hold(self):
        while self.mode == BLACKHOLE and not self.closed.is_set():
            time.sleep(0.2)

    def _pipe(self, a, b, cut_at):
        a.settimeout(None)
        b.settimeout(None)
        peers = {a: b, b: a}
        while not self.closed.is_set():
            if self.mode == BLACKHOLE:
                return self._hold()
            if cut_at is not None and time.monotonic() > cut_at:
                return
            ready = [s for s in peers if s.pending()] or select.select(list(peers), [], [], 0.2)[0]
            for sock in ready:
                data = sock.recv(65536)
                if not data:
                    return
                peers[sock].sendall(data)


def _read_head(sock) -> bytes:
    """The bytes of the first request up to the end of its headers (the body, if any, follows
    in the pipe)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
        if len(data) > 1 << 20:
            return None
    return data
