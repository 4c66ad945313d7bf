"""bench/queue_py.py — the Python peer of bench/queue_bench.lua: queue.Queue between threads,
and uncontended threading.Lock acquire/release.

  python3 queue_py.py queue PRODUCERS CONSUMERS ITEMS MAXSIZE int|str  -> "items/s N"
  python3 queue_py.py lock OPS                                        -> "ops/s N"
"""
import queue
import sys
import threading
import time


def run_queue(np, nc, items, maxsize, kind):
    q = queue.Queue(maxsize)
    per = items // np
    text = "x" * 100

    def producer():
        put = q.put
        if kind == "int":
            for i in range(per):
                put(i)
        else:
            for _ in range(per):
                put(text)

    def consumer():
        get = q.get
        while get() is not None:
            pass

    cons = [threading.Thread(target=consumer) for _ in range(nc)]
    prods = [threading.Thread(target=producer) for _ in range(np)]
    t0 = time.perf_counter()
    for t in cons + prods:
        t.start()
    for t in prods:
        t.join()
    for _ in range(nc):
        q.put(None)
    for t in cons:
        t.join()
    print("items/s %.0f" % (per * np / (time.perf_counter() - t0)))


def run_lock(ops):
    lock = threading.Lock()
    acquire, release = lock.acquire, lock.release
    t0 = time.perf_counter()
    for _ in range(ops):
        acquire()
        release()
    print("ops/s %.0f" % (ops / (time.perf_counter() - t0)))


if __name__ == "__main__":
    if sys.argv[1] == "lock":
        run_lock(int(sys.argv[2]))
    else:
        run_queue(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
