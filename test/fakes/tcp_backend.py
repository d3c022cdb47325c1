#!/usr/bin/env python3
"""A plain TCP (or TLS) service for the tcp listener tests, one thread per connection.

Usage: tcp_backend.py NAME [--tls CERT KEY]. Prints "listening 127.0.0.1:PORT" once it
accepts. Plain connections start with a command line:
  name\\n   -> answers NAME\\n, then echoes like echo
  echo\\n   -> echoes every byte; after the client's EOF, shuts its write side (half-close)
  count\\n  -> reads until the client's EOF, then answers "<bytes> <sha256 hex>\\n" and closes
With --tls, every connection is a TLS server handshake; the backend then sends NAME\\n and
closes (what `openssl s_client -servername` shows)."""

import hashlib
import socket
import ssl
import sys
import threading

CHUNK = 256 * 1024


def read_line(conn):
    line = b""
    while not line.endswith(b"\n") and len(line) < 64:
        b = conn.recv(1)
        if not b:
            break
        line += b
    return line.strip().decode(errors="replace")


def echo(conn):
    while True:
        data = conn.recv(CHUNK)
        if not data:
            break
        conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)
    # wait for the other side to close too, so the close is orderly
    while conn.recv(CHUNK):
        pass


def count(conn):
    h = hashlib.sha256()
    n = 0
    while True:
        data = conn.recv(CHUNK)
        if not data:
            break
        n += len(data)
        h.update(data)
    conn.sendall(f"{n} {h.hexdigest()}\n".encode())


def serve_plain(conn, name):
    mode = read_line(conn)
    if mode == "name":
        conn.sendall(name.encode() + b"\n")
        echo(conn)
    elif mode == "echo":
        echo(conn)
    elif mode == "count":
        count(conn)


def serve(conn, name, tls):
    try:
        if tls:
            with tls.wrap_socket(conn, server_side=True) as s:
                s.sendall(name.encode() + b"\n")
            return
        serve_plain(conn, name)
    except (OSError, ssl.SSLError):
        pass
    finally:
        conn.close()


def main():
    name = sys.argv[1]
    tls = None
    if len(sys.argv) >= 5 and sys.argv[2] == "--tls":
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(sys.argv[3], sys.argv[4])
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(128)
    print(f"listening 127.0.0.1:{srv.getsockname()[1]}", flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn, name, tls), daemon=True).start()


if __name__ == "__main__":
    main()
