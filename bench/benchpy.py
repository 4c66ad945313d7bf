"""bench/benchpy.py — what the Python peers of the Lua benches share: the time of a start + join
of a thread or process, and the speed-up of a multiprocessing.Pool(2) over a serial run."""
import multiprocessing
import time


def start_join_us(make, n, warmup=0):
    """Microseconds per make().start(); join(), n times one after the other (after warmup
    untimed ones)."""
    for _ in range(warmup):
        t = make()
        t.start()
        t.join()
    t0 = time.perf_counter()
    for _ in range(n):
        t = make()
        t.start()
        t.join()
    return (time.perf_counter() - t0) / n * 1e6


def pool_speedup(fn, args, warm=()):
    """Time of fn(a) for every a in args one after the other, divided by the time of
    Pool(2).map(fn, args, 1); warm is mapped first, so that the workers are up before the clock
    starts."""
    t0 = time.perf_counter()
    for a in args:
        fn(a)
    serial = time.perf_counter() - t0
    with multiprocessing.Pool(2) as pool:
        if warm:
            pool.map(fn, warm)
        t0 = time.perf_counter()
        pool.map(fn, args, 1)
        par = time.perf_counter() - t0
    return serial / par
