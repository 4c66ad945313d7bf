# bench/echo_gevent.py — the gevent peer of bench/echo.sh: gevent's StreamServer, one greenlet
# per connection, recv then sendall. Prints "PORT n" then serves until killed.
# usage: python3 bench/echo_gevent.py [PORT]   (needs python3-gevent)
import resource
import sys

from gevent.server import StreamServer

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def handle(sock, _addr):
    while True:
        data = sock.recv(65536)
        if not data:
            break
        sock.sendall(data)
    sock.close()


server = StreamServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0), handle,
                      backlog=4096)
server.start()
print("PORT %d" % server.server_port, flush=True)
server.serve_forever()
