# A client for bench/ab/callgrind: N sequential round trips over one
# connection, 64 B echoes (`echo`) or keep-alive GET requests (`http`).
import socket, sys, time
mode, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for _ in range(600):
    try:
        s = socket.create_connection(("127.0.0.1", port)); break
    except OSError: time.sleep(0.1)
s.settimeout(60)
if mode == "http":
    req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    buf = b""
    for i in range(n):
        s.sendall(req)
        while True:
            h = buf.find(b"\r\n\r\n")
            if h >= 0:
                head = buf[:h].decode()
                cl = 0
                for line in head.split("\r\n")[1:]:
                    k, v = line.split(":", 1)
                    if k.lower() == "content-length": cl = int(v)
                if len(buf) >= h + 4 + cl:
                    buf = buf[h + 4 + cl:]; break
            buf += s.recv(65536)
else:
    msg = b"x" * 64
    for i in range(n):
        s.sendall(msg); got = 0
        while got < 64: got += len(s.recv(64 - got))
s.close()
print("done", n)
