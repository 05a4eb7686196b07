#!/usr/bin/env python3
"""Reads a portal in pieces over the PostgreSQL v3 protocol, as cursors and JDBC's fetch size do:
Parse, Bind, then Execute with a row limit and Flush (no Sync) until the portal is done, then
Sync. Trust authentication. Prints the rows read; exits 1 on anything unexpected.

usage: pg_cursor_client.py HOST PORT USER DBNAME SQL FETCH_ROWS
"""
import socket
import struct
import sys


def msg(t, body):
    return t + struct.pack("!I", len(body) + 4) + body


def read_msg(sock, buf):
    while len(buf) < 5:
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("server closed the connection")
        buf += chunk
    n = struct.unpack("!I", buf[1:5])[0]
    while len(buf) < 1 + n:
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("server closed the connection")
        buf += chunk
    return buf[0:1], bytes(buf[5 : 1 + n]), buf[1 + n :]


def main():
    host, port, user, db, sql, fetch = sys.argv[1:7]
    fetch = int(fetch)
    s = socket.create_connection((host, int(port)))
    params = b"user\0" + user.encode() + b"\0database\0" + db.encode() + b"\0\0"
    body = struct.pack("!I", 196608) + params
    s.sendall(struct.pack("!I", len(body) + 4) + body)
    buf = bytearray()
    while True:
        t, b, buf = read_msg(s, buf)
        if t == b"E":
            raise SystemExit("login refused")
        if t == b"Z":
            break
    s.sendall(msg(b"P", b"\0" + sql.encode() + b"\0" + struct.pack("!H", 0))
              + msg(b"B", b"\0\0" + struct.pack("!HHH", 0, 0, 0)))
    rows = 0
    done = False
    while not done:
        s.sendall(msg(b"E", b"\0" + struct.pack("!I", fetch)) + msg(b"H", b""))
        while True:
            t, b, buf = read_msg(s, buf)
            if t == b"D":
                rows += 1
            elif t == b"s":  # PortalSuspended: more rows to fetch
                break
            elif t == b"C":
                done = True
                break
            elif t == b"E":
                raise SystemExit("error: %r" % b)
    s.sendall(msg(b"S", b""))
    while True:
        t, b, buf = read_msg(s, buf)
        if t == b"Z":
            break
    s.sendall(msg(b"X", b""))
    s.close()
    print(rows)


main()
