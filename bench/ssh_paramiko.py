# bench/ssh_paramiko.py — paramiko's side of bench/ssh_bench.lua, same modes and output as
# bench/ssh_c_baseline.c: connect | cmds N | get REMOTE LOCAL | put LOCAL REMOTE | many N (threads)
import os, sys, threading, time, resource, socket
import paramiko

mode, host, port, user, key, kh = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]

def sched():
    # seconds on a CPU and seconds runnable waiting for one, summed over the threads
    a = b = 0
    for t in os.listdir("/proc/self/task"):
        try:
            with open("/proc/self/task/%s/schedstat" % t) as f:
                x, y = f.read().split()[:2]
                a += int(x); b += int(y)
        except OSError:
            pass
    return a / 1e9, b / 1e9

def connect():
    c = paramiko.SSHClient()
    c.load_host_keys(kh)
    c.set_missing_host_key_policy(paramiko.RejectPolicy())
    c.connect(host, port, username=user, key_filename=key, allow_agent=False, look_for_keys=False,
              compress=False)
    return c

def run_true(c):
    _, out, _ = c.exec_command("true")
    out.read()
    out.channel.recv_exit_status()

if mode == "connect":
    t0 = time.monotonic()
    c = connect(); run_true(c); c.close()
    print("%.4f" % (time.monotonic() - t0))
elif mode == "cmds":
    n = int(sys.argv[7]); c = connect()
    t0 = time.monotonic()
    for _ in range(n): run_true(c)
    print("%.5f" % ((time.monotonic() - t0) / n))
    c.close()
elif mode in ("get", "put"):
    c = connect(); sftp = c.open_sftp()
    t0 = time.monotonic(); c0, d0 = sched()
    if mode == "get": sftp.get(sys.argv[7], sys.argv[8]); n = os.path.getsize(sys.argv[8])
    else: sftp.put(sys.argv[8], sys.argv[7]); n = os.path.getsize(sys.argv[8])
    t1 = time.monotonic(); c1, d1 = sched()
    print("%.1f %.3f %.3f" % (n / 1048576 / (t1 - t0), c1 - c0, d1 - d0))
    sftp.close(); c.close()
elif mode == "many":
    n = int(sys.argv[7])
    t0 = time.monotonic()
    def one():
        c = connect(); run_true(c); c.close()
    ts = [threading.Thread(target=one) for _ in range(n)]
    for t in ts: t.start()
    for t in ts: t.join()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print("%.3f %.3f" % (time.monotonic() - t0, ru.ru_utime + ru.ru_stime))
