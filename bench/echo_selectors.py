# bench/echo_selectors.py — the plain-Python peer of bench/echo.sh: a selectors.DefaultSelector
# (epoll) loop with non-blocking sockets, one recv and one send per message, the way Python's
# selectors documentation writes it. Prints "PORT n" then serves until killed.
# usage: python3 bench/echo_selectors.py [PORT]
import resource
import selectors
import socket
import sys

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

sel = selectors.DefaultSelector()
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0))
srv.listen(4096)
srv.setblocking(False)
print("PORT %d" % srv.getsockname()[1], flush=True)


def accept(s):
    while True:
        try:
            conn, _ = s.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        sel.register(conn, selectors.EVENT_READ, echo)


def echo(conn):
    try:
        data = conn.recv(65536)
    except BlockingIOError:
        return
    except OSError:
        data = b""
    if not data:
        sel.unregister(conn)
        conn.close()
        return
    view = memoryview(data)
    while view:                       # small echoes fit the send buffer; wait out the rare rest
        try:
            view = view[conn.send(view):]
        except BlockingIOError:
            pass
        except OSError:
            sel.unregister(conn)
            conn.close()
            return


sel.register(srv, selectors.EVENT_READ, accept)
while True:
    for key, _ in sel.select():
        key.data(key.fileobj)
