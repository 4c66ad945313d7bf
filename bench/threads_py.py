"""bench/threads_py.py — the Python peer of bench/threads_bench.lua: threading.Thread start +
join of a function that returns at once, N times; and CPU-bound work, 2 x N iterations one after
the other vs in a multiprocessing.Pool of 2 (threads would share the GIL).
usage: python3 threads_py.py start N -> "us N";  python3 threads_py.py cpu N -> "speedup X"
"""
import multiprocessing
import sys
import threading
import time


def body():
    return 1


def run_start(n):
    for _ in range(10):  # warm-up, as every peer does
        t = threading.Thread(target=body)
        t.start()
        t.join()
    t0 = time.perf_counter()
    for _ in range(n):
        t = threading.Thread(target=body)
        t.start()
        t.join()
    print("us %.2f" % ((time.perf_counter() - t0) / n * 1e6))


def work(count):
    x = 0
    for i in range(1, count + 1):
        x = x + i % 7
    return x


def run_cpu(n):
    t0 = time.perf_counter()
    work(n)
    work(n)
    seq = time.perf_counter() - t0
    with multiprocessing.Pool(2) as pool:
        pool.map(work, [1, 1])      # the workers are up before the clock starts
        t0 = time.perf_counter()
        pool.map(work, [n, n], chunksize=1)
        par = time.perf_counter() - t0
    print("speedup %.4f" % (seq / par))


if __name__ == "__main__":
    if sys.argv[1] == "cpu":
        run_cpu(int(sys.argv[2]))
    else:
        run_start(int(sys.argv[2]))
