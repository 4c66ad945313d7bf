"""bench/threads_py.py — the Python peer of bench/threads_bench.lua: threading.Thread start +
join of a function that returns at once, N times.  usage: python3 threads_py.py start N -> "us N"
"""
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


if __name__ == "__main__":
    run_start(int(sys.argv[2]))
