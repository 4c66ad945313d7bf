"""bench/threads_py.py — the Python peer of bench/threads_bench.lua: threading.Thread start +
join of a function that returns at once, N times; and CPU-bound work, 2 x N iterations one after
the other vs in a multiprocessing.Pool of 2 (threads would share the GIL).
usage: python3 threads_py.py start N -> "us N";  python3 threads_py.py cpu N -> "speedup X"
"""
import sys
import threading

from benchpy import pool_speedup, start_join_us


def body():
    return 1


def run_start(n):
    # 10 untimed starts first: the warm-up every peer does
    print("us %.2f" % start_join_us(lambda: threading.Thread(target=body), n, warmup=10))


def work(count):
    x = 0
    for i in range(1, count + 1):
        x = x + i % 7
    return x


def run_cpu(n):
    print("speedup %.4f" % pool_speedup(work, [n, n], warm=[1, 1]))


if __name__ == "__main__":
    if sys.argv[1] == "cpu":
        run_cpu(int(sys.argv[2]))
    else:
        run_start(int(sys.argv[2]))
