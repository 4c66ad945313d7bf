# process_py.py — the Python peers of bench/process_bench.lua (run with /usr/bin/python3, the
# system interpreter): multiprocessing Process, Pool, Queue, Pipe and concurrent.futures.
#   process_py.py process N        -> "us N"   Process(target=noop).start(); join(); N times
#   process_py.py apply N          -> "us N"   Pool(1).apply(noop) round trip
#   process_py.py tiny N CHUNK     -> "s N"    Pool(2).map(ident, range(N), CHUNK) (0: default)
#   process_py.py futures N        -> "s N"    ProcessPoolExecutor(2): N submits, all results
#   process_py.py cpu TASKS LOOPS  -> "speedup N" TASKS of LOOPS iterations: serial / Pool(2)
#   process_py.py queue N          -> "items/s N" multiprocessing.Queue, one producer process
#   process_py.py pipe N           -> "us N"   Pipe() round trip with a child process
import multiprocessing as mp
import concurrent.futures as cf
import sys
import time

from benchpy import pool_speedup, start_join_us


def noop():
    pass


def ident(x):
    return x


def burn(loops):
    x = 0
    for i in range(loops):
        x += i % 7
    return x


def producer(q, n):
    for i in range(n):
        q.put(i)
    q.put(None)


def echo(conn):
    while True:
        m = conn.recv()
        if m is None:
            return
        conn.send(m)


def main():
    mp.set_start_method("fork")
    what, n = sys.argv[1], int(sys.argv[2])
    if what == "process":
        print("us %.3f" % start_join_us(lambda: mp.Process(target=noop), n))
    elif what == "apply":
        with mp.Pool(1) as pool:
            pool.apply(noop)
            t0 = time.perf_counter()
            for _ in range(n):
                pool.apply(noop)
            print("us %.3f" % ((time.perf_counter() - t0) / n * 1e6))
    elif what == "tiny":
        chunk = int(sys.argv[3])
        with mp.Pool(2) as pool:
            pool.apply(noop)
            t0 = time.perf_counter()
            if chunk:
                pool.map(ident, range(n), chunk)
            else:
                pool.map(ident, range(n))
            print("s %.4f" % (time.perf_counter() - t0))
    elif what == "futures":
        with cf.ProcessPoolExecutor(2) as ex:
            ex.submit(noop).result()
            t0 = time.perf_counter()
            fs = [ex.submit(ident, i) for i in range(n)]
            for f in fs:
                f.result()
            print("s %.4f" % (time.perf_counter() - t0))
    elif what == "cpu":
        print("speedup %.3f" % pool_speedup(burn, [int(sys.argv[3])] * n))
    elif what == "queue":
        q = mp.Queue()
        p = mp.Process(target=producer, args=(q, n))
        t0 = time.perf_counter()
        p.start()
        got = 0
        while q.get() is not None:
            got += 1
        dt = time.perf_counter() - t0
        p.join()
        print("items/s %.0f" % (got / dt))
    elif what == "pipe":
        a, b = mp.Pipe()
        p = mp.Process(target=echo, args=(b,))
        p.start()
        a.send(1)
        a.recv()
        t0 = time.perf_counter()
        for i in range(n):
            a.send(i)
            a.recv()
        dt = time.perf_counter() - t0
        a.send(None)
        p.join()
        print("us %.3f" % (dt / n * 1e6))


if __name__ == "__main__":
    main()
