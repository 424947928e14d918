"""The origin of scenario S3u (tests/bench/bench.py): an HTTP/1.1 server that reads every
request body whole (Content-Length or chunked) and discards it, then answers 200 with
{"bytes": N} (plus "sha256" when the request has `X-Hash: 1`, for the correctness check).
It answers only after the last body byte, so a proxy in front of it has to deliver the whole
upload (an origin that answers early, like nginx's `return`, lets the proxy cut the upload).
One thread per connection, keep-alive; reads into a fixed 1 MiB buffer (flat memory).

    python3 upload_sink.py PORT
"""
import hashlib
import json
import socket
import sys
import threading

BUF = 1 << 20


class Conn:
    def __init__(self, c):
        self.c = c
        self.buf = bytearray(BUF)
        self.view = memoryview(self.buf)
        self.start = self.end = 0  # unread bytes: buf[start:end]

    def fill(self):
        if self.start == self.end:
            self.start = self.end = 0
        elif self.end == BUF:  # compact (only small leftovers: a head or a chunk line)
            n = self.end - self.start
            self.buf[:n] = self.buf[self.start:self.end]
            self.start, self.end = 0, n
        n = self.c.recv_into(self.view[self.end:])
        if n == 0:
            raise EOFError
        self.end += n

    def line(self, limit=65536):
        while True:
            i = self.buf.find(b"\r\n", self.start, self.end)
            if i >= 0:
                out = bytes(self.buf[self.start:i])
                self.start = i + 2
                return out
            if self.end - self.start > limit:
                raise ValueError("line too long")
            self.fill()

    def skip(self, n, h):
        """n body bytes, discarded (hashed when h)."""
        while n:
            if self.start == self.end:
                self.fill()
            k = min(n, self.end - self.start)
            if h is not None:
                h.update(self.view[self.start:self.start + k])
            self.start += k
            n -= k


def serve(c):
    k = Conn(c)
    try:
        while True:
            request_line = k.line()
            if not request_line:
                continue
            hdrs = {}
            while True:
                ln = k.line()
                if not ln:
                    break
                name, _, value = ln.decode("latin-1").partition(":")
                hdrs[name.strip().lower()] = value.strip()
            if hdrs.get("expect", "").lower() == "100-continue":
                c.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            h = hashlib.sha256() if hdrs.get("x-hash") == "1" else None
            total = 0
            if "content-length" in hdrs:
                total = int(hdrs["content-length"])
                k.skip(total, h)
            elif hdrs.get("transfer-encoding", "").lower() == "chunked":
                while True:
                    size = int(k.line().split(b";")[0], 16)
                    if size == 0:
                        while k.line():
                            pass
                        break
                    k.skip(size, h)
                    total += size
                    if k.line() != b"":
                        raise ValueError("bad chunk end")
            doc = {"bytes": total}
            if h is not None:
                doc["sha256"] = h.hexdigest()
            body = json.dumps(doc).encode()
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                      % (len(body), body))
    except (EOFError, OSError, ValueError):
        pass
    finally:
        c.close()


def main():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(sys.argv[1])))
    s.listen(256)
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


if __name__ == "__main__":
    main()
