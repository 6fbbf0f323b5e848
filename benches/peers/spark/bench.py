"""Side by side: `pipeline streaming --sink null` and the PySpark peer (job.py), one run.

Called by run.sh (which installs Spark, builds the binaries and exports where they are). Phases:

  backlog  the generator writes a fixed backlog (seed 9, `--backlog` of city time at
           `--load-factor`, `--max-speed`) to fresh topics; the `parking` topic, which none of
           SPEC's seven queries reads, is deleted so both jobs read the same three topics.
  drain    each job consumes the backlog from the beginning, twice; the first pass is the
           warm-up (our job: a process of its own, discarded; Spark: the same JVM's first
           availableNow pass, discarded), the second is measured: wall time to drain, records/s,
           CPU seconds and peak RSS of the whole process tree (sampled from /proc every 100 ms).
  live     each job in turn reads fresh topics while the generator produces the default city in
           real time for `--live-seconds`; latency of every alert row (the three per-record
           queries) = when it reached the null sink - the Kafka timestamp of its record.
  search   sustainable throughput, the definition of `simulator bench`: for each load factor of
           `--search-loads` in turn, each job on fresh topics while the generator produces the
           city at that load factor in real time for `--search-warmup-seconds` +
           `--search-window-seconds`; the job's lag (records on its three topics not yet
           processed) sampled once a second; sustained iff the producer kept its schedule and
           the lag grew by less than 2 s of offered input over the window. A job's search stops
           at its first step not sustained.

It prints a table with both jobs' figures and the ratios, and writes `results.json` and
`table.md` to `--out`. Only the standard library: `python3 -m py_compile bench.py` checks it.
"""

import argparse
import datetime as dt
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
READ_TOPICS = ("traffic-sensors", "public-transport", "incidents")
ALL_TOPICS = READ_TOPICS + ("parking",)
ALERT_QUERIES = ("traffic_anomalies", "transport_alerts", "critical_incidents")
PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Process-tree sampling
# --------------------------------------------------------------------------------------------
def _children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def _tree(root):
    kids = _children_map()
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def _stat(pid):
    """(rss bytes, cpu seconds) of one process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/statm") as f:
            rss_pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    # Fields after the command: state is [0], utime [11], stime [12].
    return rss_pages * PAGE, (int(fields[11]) + int(fields[12])) / TICK


class Tracked:
    """A command run with its process tree sampled every `period_s`: samples of (epoch s, RSS
    of the tree in bytes, CPU seconds of every process of the tree so far)."""

    def __init__(self, name, cmd, env, out_dir, period_s=0.1):
        self.name = name
        self.stdout_path = os.path.join(out_dir, f"{name}.stdout")
        self.stderr_path = os.path.join(out_dir, f"{name}.stderr")
        self.stdout = open(self.stdout_path, "w")
        self.stderr = open(self.stderr_path, "w")
        log(f"{name}: {' '.join(cmd)}")
        self.started = time.time()
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.stdout, stderr=self.stderr)
        self.returncode = None
        self.samples = []
        self.cpu_by_pid = {}
        self.period_s = period_s
        self.ended = None
        self.rusage = None
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self):
        while self.returncode is None:
            rss = 0
            for pid in _tree(self.proc.pid):
                s = _stat(pid)
                if s is None:
                    continue
                rss += s[0]
                self.cpu_by_pid[pid] = max(self.cpu_by_pid.get(pid, 0.0), s[1])
            self.samples.append((time.time(), rss, sum(self.cpu_by_pid.values())))
            time.sleep(self.period_s)

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.time() + timeout
        while not self.poll():
            if deadline is not None and time.time() > deadline:
                raise TimeoutError(f"{self.name} still running after {timeout} s")
            time.sleep(0.05)
        self.thread.join()
        self.stdout.close()
        self.stderr.close()
        if self.returncode != 0:
            tail = open(self.stderr_path).read()[-3000:]
            raise RuntimeError(f"{self.name} exited {self.returncode}; stderr ends:\n{tail}")
        return self

    def poll(self):
        """Whether it has exited; reaps it with its resource usage (CPU time of the process
        and of every descendant it waited for)."""
        if self.returncode is not None:
            return True
        pid, status, ru = os.wait4(self.proc.pid, os.WNOHANG)
        if pid == 0:
            return False
        self.ended = time.time()
        self.rusage_cpu_s = ru.ru_utime + ru.ru_stime
        self.returncode = os.waitstatus_to_exitcode(status)
        self.proc.returncode = self.returncode
        return True

    def cpu_s(self):
        """CPU seconds of the whole run: the sampled tree's, or the reaped rusage if larger
        (it also counts the last moments between two samples)."""
        sampled = self.samples[-1][2] if self.samples else 0.0
        return max(sampled, getattr(self, "rusage_cpu_s", 0.0))

    def signal(self, sig):
        # Only the process this script started, by its id.
        self.proc.send_signal(sig)

    def window(self, t0=None, t1=None):
        """Peak RSS (bytes) and CPU seconds between t0 and t1 (default: the whole run)."""
        t0 = self.started if t0 is None else t0
        t1 = (self.ended or time.time()) if t1 is None else t1
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        before = [s for s in self.samples if s[0] < t0]
        peak = max((s[1] for s in inside), default=0)
        cpu0 = before[-1][2] if before else 0.0
        cpu1 = inside[-1][2] if inside else cpu0
        return peak, cpu1 - cpu0

    def stdout_text(self):
        with open(self.stdout_path) as f:
            return f.read()


# --------------------------------------------------------------------------------------------
# Kafka and the generator
# --------------------------------------------------------------------------------------------
def kafka_tool(*args):
    cmd = ["java", "-cp", os.environ["SPARK_PEER_TOOL_CP"], os.path.join(HERE, "KafkaTool.java")]
    out = subprocess.run(cmd + list(args), check=True, capture_output=True, text=True)
    return out.stdout


def topic_records(bootstrap, prefix, topics):
    out = kafka_tool("ends", bootstrap, *[prefix + t for t in topics])
    counts = {}
    for line in out.strip().splitlines():
        name, n = line.split()
        counts[name[len(prefix):]] = int(n)
    return counts


def city_config(path, load_factor):
    """The generator's city: the default at `load_factor`, whose 5 % of traffic readings marked
    `data_quality: degraded` (`degraded_fraction`, as SPEC §1 says the original's generator did)
    are the steady source of alert rows (traffic_anomalies) the latency is measured on."""
    with open(path, "w") as f:
        f.write(f"load_factor = {load_factor}\n")
    return path


def generator(args, prefix, extra, out_dir, name):
    cmd = [os.environ["GENERATOR_BIN"], "produce", "--seed", str(args.seed), "--topic-prefix",
           prefix, "--partitions", str(args.partitions)] + extra
    return Tracked(name, cmd, dict(os.environ), out_dir, period_s=1.0)


# --------------------------------------------------------------------------------------------
# The jobs
# --------------------------------------------------------------------------------------------
def ours_cmd(args, prefix, out_dir, tag, idle_exit_ms=None, engine=None, metrics=None):
    cmd = [
        os.environ["PIPELINE_BIN"], "streaming", "--sink", "null", "--no-console",
        "--topic-prefix", prefix, "--group-id", f"{prefix}ours-{tag}",
        "--checkpoint-dir", os.path.join(out_dir, f"checkpoint-ours-{tag}"),
        "--engine-config", engine or os.path.join(HERE, "engine.toml"),
        "--report-json", os.path.join(out_dir, f"ours-{tag}.json"),
        "--ready-attempts", "10",
    ]
    if idle_exit_ms is not None:
        cmd += ["--idle-exit-ms", str(idle_exit_ms)]
    if metrics is not None:
        cmd += ["--metrics-addr", metrics]
    return cmd


def ours_env():
    env = dict(os.environ)
    # As the Dockerfile deploys it: two malloc arenas keep the RSS of a tokio job low.
    env.setdefault("MALLOC_ARENA_MAX", "2")
    env.setdefault("RUST_LOG", "warn")
    return env


def spark_cmd(args, prefix, out_dir, tag, job_args):
    return [
        os.environ["SPARK_PEER_SUBMIT"],
        "--master", f"local[{args.spark_cores}]",
        "--driver-memory", args.spark_driver_memory,
        "--conf", "spark.ui.enabled=false",
        "--conf", "spark.log.level=WARN",
        "--conf", "spark.sql.adaptive.enabled=false",
        "--conf", f"spark.sql.shuffle.partitions={args.spark_shuffle_partitions}",
        "--conf", "spark.sql.streaming.metricsEnabled=false",
        "--jars", os.environ["SPARK_PEER_JARS"],
        os.path.join(HERE, "job.py"),
        "--bootstrap", args.bootstrap, "--topic-prefix", prefix,
        "--checkpoint-dir", os.path.join(out_dir, f"checkpoint-spark-{tag}"),
        "--result", os.path.join(out_dir, f"spark-{tag}.json"),
        "--shuffle-partitions", str(args.spark_shuffle_partitions),
    ] + job_args


def spark_env():
    env = dict(os.environ)
    py = os.environ["SPARK_PEER_PYTHON"]
    env["PYSPARK_PYTHON"] = py
    env["PYSPARK_DRIVER_PYTHON"] = py
    env["SPARK_HOME"] = os.path.dirname(os.path.dirname(os.environ["SPARK_PEER_SUBMIT"]))
    return env


def drain_ours(args, prefix, out_dir, records, idle_exit_ms=2000):
    runs = []
    for tag in ("drain-warmup", "drain"):
        t = Tracked(f"ours-{tag}", ours_cmd(args, prefix, out_dir, tag, idle_exit_ms), ours_env(),
                    out_dir).wait(timeout=3600)
        rep = json.load(open(os.path.join(out_dir, f"ours-{tag}.json")))
        if rep["records"] != records:
            raise RuntimeError(f"our job consumed {rep['records']} records, the backlog has {records}")
        # elapsed_ms runs from "Started" (partitions assigned) to the exit, which comes
        # idle_exit_ms after the last record: the drain is the difference.
        drain_s = (rep["elapsed_ms"] - idle_exit_ms) / 1000.0
        peak, _ = t.window()
        cpu = t.cpu_s()
        runs.append({"drain_s": drain_s, "process_s": t.ended - t.started, "peak_rss": peak,
                     "cpu_s": cpu, "report": rep})
    return {"cold": runs[0], "warm": runs[1]}


def drain_spark(args, prefix, out_dir, records):
    t = Tracked("spark-drain", spark_cmd(args, prefix, out_dir, "drain", ["--mode", "drain", "--warmup"]),
                spark_env(), out_dir).wait(timeout=3600)
    res = json.load(open(os.path.join(out_dir, "spark-drain.json")))
    t0, t1 = res["measured_start_epoch_s"], res["measured_end_epoch_s"]
    peak_warm, cpu_warm = t.window(t0, t1)
    peak_all, _ = t.window()
    cpu_all = t.cpu_s()
    return {
        "cold": {"drain_s": res["warmup_s"]},
        "warm": {"drain_s": res["measured_s"], "peak_rss": peak_warm, "cpu_s": cpu_warm},
        "process": {"process_s": t.ended - t.started, "peak_rss": peak_all, "cpu_s": cpu_all,
                    "startup_s": res["session_ready_epoch_s"] - t.started},
        "rows": res["rows"], "warmup_rows": res.get("warmup_rows"),
    }


def wait_for(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} not within {timeout} s")


def live(args, job, out_dir, stamp):
    """One job on a live stream of the default city in real time."""
    prefix = f"spark-bench-{stamp}-live-{job}-"
    # The broker stamps each record with its append time: the generator's own timestamp is the
    # record's scheduled time, and its real-time pacing starts when the process has started, so
    # the two differ by a constant of up to a tick (it floors `--start now` to the 5 s tick) that
    # would differ between the two jobs' runs.
    kafka_tool("create", args.bootstrap, str(args.partitions), "--log-append-time",
               *[prefix + t for t in ALL_TOPICS])
    if job == "ours":
        t = Tracked("ours-live", ours_cmd(args, prefix, out_dir, "live"), ours_env(), out_dir)
        wait_for(lambda: "Started" in t.stdout_text() or t.poll(), 120, "our job's start")
    else:
        ready = os.path.join(out_dir, "spark-live.ready")
        stop = os.path.join(out_dir, "spark-live.stop")
        t = Tracked("spark-live", spark_cmd(args, prefix, out_dir, "live", [
            "--mode", "live", "--ready-file", ready, "--stop-file", stop]), spark_env(), out_dir)
        wait_for(lambda: os.path.exists(ready) or t.poll(), 300, "Spark's start")
    if t.poll():
        t.wait()  # raises with its stderr
    ready_at = time.time()
    log(f"{job} is reading; producing the default city in real time for {args.live_seconds} s")
    cfg = city_config(os.path.join(out_dir, "city-live.toml"), 1)
    # An explicit start to the millisecond rather than `now` (floored to the tick), so event
    # times are close to the wall time the records are sent at.
    start = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    g = generator(args, prefix, ["--config", cfg, "--start", start, "--duration",
                                 f"{args.live_seconds}s"], out_dir, f"generator-live-{job}")
    g.wait(timeout=args.live_seconds + 120)
    time.sleep(args.live_grace_seconds)  # the last records' alerts, and a last window trigger
    end_at = time.time()
    if job == "ours":
        t.signal(signal.SIGINT)
        t.wait(timeout=120)
        rep = json.load(open(os.path.join(out_dir, "ours-live.json")))
        lat = rep["alert_latency"]
        latency = {"n": lat["count"], "p50": lat["p50_ms"], "p95": lat["p95_ms"],
                   "p99": lat["p99_ms"], "max": lat["max_ms"]}
        rows = {q: c["alerts"] for q, c in rep["queries"].items() if q in ALERT_QUERIES}
    else:
        open(stop, "w").close()
        t.wait(timeout=300)
        res = json.load(open(os.path.join(out_dir, "spark-live.json")))
        latency = percentiles(res["alert_latency_ms"])
        rows = {q: n for q, n in res["rows"].items() if q in ALERT_QUERIES}
    peak, cpu = t.window(ready_at, end_at)
    kafka_tool("delete", args.bootstrap, prefix)
    return {"latency": latency, "alert_rows": rows, "peak_rss": peak, "cpu_s": cpu,
            "seconds": end_at - ready_at}


# --------------------------------------------------------------------------------------------
# Sustainable throughput: a live search at rising load factors
# --------------------------------------------------------------------------------------------
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def search_engine_config(path, load):
    """Ours' engine for a load step: engine.toml's settings with the device bounds raised to fit
    `load` times the thesis city's devices, as `simulator bench` raises them (the defaults hold
    4,096 devices a topic, the city at about 120x), so no record is refused for a bound."""
    devices = max(40 * load, 4096)
    with open(os.path.join(HERE, "engine.toml")) as f:
        base = f.read()
    with open(path, "w") as f:
        f.write(base + f"max_devices_per_topic = {devices}\nmax_vehicles_per_window = {devices}\n"
                f"max_interned_strings = {16_384 + devices}\n")
    return path


class Ends:
    """The end offsets of the three read topics, summed, once every `period_ms`, by one
    KafkaTool JVM for the whole step (so no JVM starts while the job is measured)."""

    def __init__(self, args, prefix, out_dir, name, period_ms=500):
        cmd = ["java", "-cp", os.environ["SPARK_PEER_TOOL_CP"], os.path.join(HERE, "KafkaTool.java"),
               "watch", args.bootstrap, str(period_ms)] + [prefix + t for t in READ_TOPICS]
        self.t = Tracked(name, cmd, dict(os.environ), out_dir, period_s=1.0)

    def latest(self):
        """(epoch s of the reading, records on the three topics), or None before the first."""
        with open(self.t.stdout_path) as f:
            lines = [l.split() for l in f.read().splitlines()]
        lines = [l for l in lines if len(l) == 1 + len(READ_TOPICS)]
        if not lines:
            return None
        return int(lines[-1][0]) / 1000.0, sum(int(x) for x in lines[-1][1:])

    def stop(self):
        self.t.signal(signal.SIGTERM)
        try:
            self.t.wait(timeout=30)
        except RuntimeError:
            pass  # killed by the signal, as meant


def ours_processed(metrics):
    """Records of the three read topics our job has handed to its engine
    (`pipeline_records_in_total`, per partition), or None while /metrics does not answer."""
    try:
        with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    total = 0
    for line in text.splitlines():
        if line.startswith("pipeline_records_in_total{"):
            labels, value = line.rsplit(" ", 1)
            if any(f'topic="{t}"' in labels for t in READ_TOPICS):
                total += int(float(value))
    return total


def spark_processed(progress_file, prefix):
    """Records of the three read topics every Spark query reading them has processed: per topic
    the least over its queries of the offsets of their last committed micro-batch (job.py's
    progress file), summed; None before every query has reported."""
    try:
        with open(progress_file) as f:
            queries = json.load(f)["queries"]
    except (OSError, ValueError):
        return None
    per_topic = {}
    for done in queries.values():
        for topic, n in done.items():
            per_topic.setdefault(topic, []).append(n)
    # traffic-sensors feeds three queries, the other two topics two each.
    readers = {"traffic-sensors": 3, "public-transport": 2, "incidents": 2}
    total = 0
    for t, n in readers.items():
        seen = per_topic.get(prefix + t, [])
        if len(seen) < n:
            return None
        total += min(seen)
    return total


def machine_ticks():
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def slope(points):
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    var = sum((p[0] - mx) ** 2 for p in points)
    return 0.0 if var == 0 else sum((p[0] - mx) * (p[1] - my) for p in points) / var


def search_step(args, job, load, out_dir, stamp):
    """One load step of one job: fresh topics, the job started and reading, the city at `load`
    produced in real time for the warm-up and the window, the lag sampled once a second."""
    prefix = f"spark-bench-{stamp}-s{load}-{job}-"
    tag = f"search-{load}x"
    kafka_tool("create", args.bootstrap, str(args.partitions), *[prefix + t for t in ALL_TOPICS])
    ends = Ends(args, prefix, out_dir, f"ends-{job}-{load}x")
    if job == "ours":
        metrics = f"127.0.0.1:{free_port()}"
        engine = search_engine_config(os.path.join(out_dir, f"engine-{load}x.toml"), load)
        t = Tracked(f"ours-{tag}", ours_cmd(args, prefix, out_dir, tag, engine=engine, metrics=metrics),
                    ours_env(), out_dir)
        wait_for(lambda: "Started" in t.stdout_text() or t.poll(), 120, "our job's start")
        processed = lambda: ours_processed(metrics)
    else:
        ready = os.path.join(out_dir, f"spark-{tag}.ready")
        stop = os.path.join(out_dir, f"spark-{tag}.stop")
        progress = os.path.join(out_dir, f"spark-{tag}.progress.json")
        t = Tracked(f"spark-{tag}", spark_cmd(args, prefix, out_dir, tag, [
            "--mode", "live", "--all-asap", "--ready-file", ready, "--stop-file", stop,
            "--progress-file", progress]), spark_env(), out_dir)
        wait_for(lambda: os.path.exists(ready) or t.poll(), 300, "Spark's start")
        processed = lambda: spark_processed(progress, prefix)
    if t.poll():
        t.wait()  # raises with its stderr
    wait_for(lambda: ends.latest() is not None and processed() is not None, 60,
             f"the first lag reading of {job}")
    total_s = args.search_warmup_seconds + args.search_window_seconds
    cfg = city_config(os.path.join(out_dir, f"city-{load}x.toml"), load)
    start = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    log(f"{job} at {load}x: producing the city in real time for {total_s} s")
    g = generator(args, prefix, ["--config", cfg, "--start", start, "--duration", f"{total_s}s"],
                  out_dir, f"generator-{job}-{load}x")
    t0 = g.started
    busy0 = machine_ticks()
    samples = []  # (s since t0, records on the topics, records processed)
    next_s = 1.0
    try:
        while not g.poll():
            if t.poll():
                raise RuntimeError(f"{job} exited during the {load}x step; see {t.stderr_path}")
            if time.time() - t0 >= next_s:
                next_s += 1.0
                e, p = ends.latest(), processed()
                if e is not None and p is not None:
                    samples.append((time.time() - t0, e[1], p))
            time.sleep(0.05)
        g.wait()
        busy1 = machine_ticks()
        gen_s = g.ended - g.started
    finally:
        if job == "ours":
            t.signal(signal.SIGINT)
        else:
            open(stop, "w").close()
        try:
            t.wait(timeout=300)
        finally:
            ends.stop()
            kafka_tool("delete", args.bootstrap, prefix)
    offered = samples[-1][1] if samples else 0
    # After the generator's exit and flush every record of the step is on the topics.
    offered = max(offered, ends.latest()[1])
    offered_per_s = offered / total_s
    w0, w1 = args.search_warmup_seconds, total_s
    window = [(x, max(0, e - p)) for x, e, p in samples if w0 <= x <= w1]
    head = [l for x, l in window if x < w0 + 10]
    tail = [l for x, l in window if x > w1 - 10]
    mean = lambda xs: sum(xs) / max(1, len(xs))
    lag_start, lag_end = mean(head), mean(tail)
    produced_per_s = slope([(x, e) for x, e, _ in samples if w0 <= x <= w1])
    # The generator's last tick is due 5 s before the end of its duration: a producer that kept
    # its schedule exits before the duration is up (the flush included).
    producer_overrun_s = gen_s - total_s
    producer_ok = producer_overrun_s <= 0
    peak, cpu = t.window(t0 + w0, t0 + w1)
    _, gen_cpu = g.window(t0 + w0, t0 + w1)
    growth_s = (lag_end - lag_start) / offered_per_s if offered_per_s else None
    enough = len(window) >= args.search_window_seconds // 2
    step = {
        "job": job, "load_factor": load, "offered_records": offered,
        "offered_per_s": offered_per_s, "produced_per_s_in_window": produced_per_s,
        "generator_s": gen_s, "producer_overrun_s": producer_overrun_s,
        "producer_kept_up": producer_ok, "lag_start": lag_start, "lag_end": lag_end,
        "lag_growth_s_of_input": growth_s, "lag_slope_per_s": slope(window),
        "window_samples": len(window),
        "sustained": bool(enough and producer_ok and growth_s is not None and growth_s < 2.0),
        "cpu_percent": 100 * cpu / args.search_window_seconds, "peak_rss": peak,
        "generator_cpu_percent": 100 * gen_cpu / args.search_window_seconds,
        "machine_busy_percent": 100 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]),
        "samples": samples,
    }
    log(f"{job} at {load}x: offered {offered_per_s:,.0f}/s, produced {produced_per_s:,.0f}/s "
        f"(generator {gen_s:.1f} s of {total_s}), lag {lag_start:,.0f} -> {lag_end:,.0f} "
        f"({growth_s if growth_s is not None else float('nan'):+.2f} s of input), CPU "
        f"{step['cpu_percent']:.0f} %: {'sustained' if step['sustained'] else 'NOT sustained'}"
        + ("" if producer_ok else " (the producer fell behind its schedule)"))
    return step


def search(args, out_dir, stamp):
    """Each job in turn over the load factors, up to its first step not sustained."""
    res = {}
    for job in args.search_jobs:
        steps = []
        for load in args.search_loads:
            step = search_step(args, job, load, out_dir, stamp)
            steps.append(step)
            if not step["sustained"]:
                break
        ok = [s for s in steps if s["sustained"]]
        best = max(ok, key=lambda s: s["load_factor"]) if ok else None
        res[job] = {"steps": steps, "best": best,
                    # The highest load tried was sustained: the search found a floor, not a limit.
                    "at_ceiling": best is not None and best["load_factor"] == max(args.search_loads)}
    return res


def percentiles(samples):
    """Nearest-rank percentiles, ms."""
    if not samples:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    s = sorted(max(0.0, x) for x in samples)
    rank = lambda q: s[min(len(s), max(1, math.ceil(q * len(s)))) - 1]
    return {"n": len(s), "p50": rank(0.5), "p95": rank(0.95), "p99": rank(0.99), "max": s[-1]}


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------
class Floor(float):
    """A figure known only from below (the search's highest load was sustained)."""


def fmt(v, unit=""):
    if v is None:
        return "n/a"
    if isinstance(v, Floor):
        return "≥ " + fmt(float(v), unit)
    if isinstance(v, float):
        v = f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.2f}" if abs(v) < 10 else f"{v:,.1f}"
    else:
        v = f"{v:,}"
    return f"{v}{unit}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "n/a"
    # A floor over an exact figure is a floor; over another floor, nothing.
    if isinstance(b, Floor):
        return "n/a"
    at_least = "≥ " if isinstance(a, Floor) else ""
    return at_least + (f"{a / b:,.1f}x" if a / b >= 10 else f"{a / b:,.2f}x")


def table(r):
    mib = lambda b: None if b is None else b / 2**20
    if "drain" not in r:  # --only-search
        return search_table(r)
    o, s = r["drain"]["ours"], r["drain"]["spark"]
    n = r["backlog"]["records"]
    rows = [
        ("backlog records (3 topics)", n, n, None),
        ("drain, warm (s)", o["warm"]["drain_s"], s["warm"]["drain_s"], "spark/ours"),
        ("throughput, warm (records/s)", n / o["warm"]["drain_s"], n / s["warm"]["drain_s"], "ours/spark"),
        ("drain, first pass (s)", o["cold"]["drain_s"], s["cold"]["drain_s"], "spark/ours"),
        ("CPU time, warm drain (s)", o["warm"]["cpu_s"], s["warm"]["cpu_s"], "spark/ours"),
        ("records per CPU-second, warm", n / max(o["warm"]["cpu_s"], 1e-9), n / max(s["warm"]["cpu_s"], 1e-9), "ours/spark"),
        ("peak RSS, warm drain (MiB)", mib(o["warm"]["peak_rss"]), mib(s["warm"]["peak_rss"]), "spark/ours"),
        ("peak RSS, whole process (MiB)", mib(max(o["warm"]["peak_rss"], o["cold"]["peak_rss"])), mib(s["process"]["peak_rss"]), "spark/ours"),
    ]
    if "live" in r:
        lo, ls = r["live"]["ours"], r["live"]["spark"]
        rows += [
            ("live: alert rows measured", lo["latency"]["n"], ls["latency"]["n"], None),
            ("live: alert latency p50 (ms)", lo["latency"]["p50"], ls["latency"]["p50"], "spark/ours"),
            ("live: alert latency p95 (ms)", lo["latency"]["p95"], ls["latency"]["p95"], "spark/ours"),
            ("live: alert latency p99 (ms)", lo["latency"]["p99"], ls["latency"]["p99"], "spark/ours"),
            ("live: alert latency max (ms)", lo["latency"]["max"], ls["latency"]["max"], "spark/ours"),
            ("live: peak RSS (MiB)", mib(lo["peak_rss"]), mib(ls["peak_rss"]), "spark/ours"),
            ("live: CPU (% of one core)", 100 * lo["cpu_s"] / lo["seconds"], 100 * ls["cpu_s"] / ls["seconds"], "spark/ours"),
        ]
    if "ours" in r.get("search", {}) and "spark" in r.get("search", {}):
        so, ss = r["search"]["ours"], r["search"]["spark"]
        bo, bs = so["best"] or {}, ss["best"] or {}
        # A job that kept up with the highest load tried has a floor, not a limit: "≥".
        floor = lambda v, res: Floor(v) if v is not None and res["at_ceiling"] else v
        rows += [
            ("sustained: highest load factor", floor(bo.get("load_factor"), so),
             floor(bs.get("load_factor"), ss), "ours/spark"),
            ("sustained: records/s (3 topics)", floor(bo.get("offered_per_s"), so),
             floor(bs.get("offered_per_s"), ss), "ours/spark"),
            ("sustained: CPU at it (% of one core)", bo.get("cpu_percent"), bs.get("cpu_percent"), "spark/ours"),
            ("sustained: records per CPU-second at it", per_cpu_s(bo), per_cpu_s(bs), "ours/spark"),
            ("sustained: peak RSS at it (MiB)", mib(bo.get("peak_rss")), mib(bs.get("peak_rss")), "spark/ours"),
        ]
    lines = ["| figure | ours (Rust) | Spark " + r["spark_version"] + " | ratio |", "|---|---:|---:|---:|"]
    for name, a, b, how in rows:
        rt = "" if how is None else (ratio(b, a) if how == "spark/ours" else ratio(a, b)) + f" ({how})"
        lines.append(f"| {name} | {fmt(a)} | {fmt(b)} | {rt} |")
    out = "\n".join(lines) + "\n\n" + rows_check(r)
    if "search" in r:
        out += "\n\n" + search_table(r)
    return out


def per_cpu_s(step):
    """Records per CPU-second of the job at a search step (its offered rate over its CPU)."""
    if not step or not step.get("cpu_percent"):
        return None
    return step["offered_per_s"] / (step["cpu_percent"] / 100)


def search_table(r):
    """Every load step of the search, both jobs."""
    lines = ["| job | load | offered/s | produced/s | generator s (of) | lag start -> end | growth (s of input) "
             "| CPU % | peak RSS MiB | generator CPU % | machine busy % | sustained |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    total_s = r["args"]["search_warmup_seconds"] + r["args"]["search_window_seconds"]
    for job in r["search"]:
        for s in r["search"][job]["steps"]:
            verdict = "yes" if s["sustained"] else ("no (producer behind)" if not s["producer_kept_up"] else "no")
            lines.append(
                f"| {job} | {s['load_factor']}x | {fmt(s['offered_per_s'])} | {fmt(s['produced_per_s_in_window'])} "
                f"| {s['generator_s']:.1f} ({total_s}) | {fmt(s['lag_start'])} -> {fmt(s['lag_end'])} "
                f"| {s['lag_growth_s_of_input']:+.2f} | {fmt(s['cpu_percent'])} | {fmt(s['peak_rss'] / 2**20)} "
                f"| {fmt(s['generator_cpu_percent'])} | {fmt(s['machine_busy_percent'])} | {verdict} |")
        if r["search"][job]["at_ceiling"]:
            lines.append(f"| {job} | | | | | | | | | | | the highest load tried was sustained: a floor, not a limit |")
    return "\n".join(lines)


def rows_check(r):
    """Both jobs' rows per query over the measured drain: ours' alert rows and final window
    rows, Spark's rows (in one availableNow pass Spark emits each window once)."""
    ours, spark = r["rows"]["ours"], r["rows"]["spark"]
    lines = ["| query (drain) | ours: alerts / final windows | Spark: rows | equal |", "|---|---:|---:|---|"]
    for q in ("traffic_aggregations", "traffic_anomalies", "transport_metrics", "transport_alerts",
              "incident_aggregations", "critical_incidents", "mobility_index"):
        c = ours.get(q, {})
        a = c.get("alerts", 0) if q in ALERT_QUERIES else c.get("final_rows", 0)
        b = spark.get(q, 0)
        lines.append(f"| {q} | {a:,} | {b:,} | {'yes' if a == b else 'NO'} |")
    return "\n".join(lines)


def source_state():
    """The commit the binaries were built from and the files changed in the working tree (which
    the build included), so a result says what it measured."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
    git = lambda *a: subprocess.run(["git", "-C", root] + list(a), capture_output=True, text=True).stdout.strip()
    return {"commit": git("rev-parse", "HEAD"),
            "changed": git("status", "--short", "--untracked-files=no").splitlines(),
            "pipeline_bin": os.environ.get("PIPELINE_BIN"), "generator_bin": os.environ.get("GENERATOR_BIN")}


def save(r, out_dir):
    """results.json as far as the run got (rewritten after each phase)."""
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(r, f, indent=1, default=str)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="spark-peer-results")
    p.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    p.add_argument("--seed", type=int, default=9)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--backlog", default="2h", help="city time of the backlog")
    p.add_argument("--load-factor", type=int, default=10)
    p.add_argument("--live-seconds", type=int, default=300)
    p.add_argument("--live-grace-seconds", type=int, default=5)
    p.add_argument("--skip-live", action="store_true")
    p.add_argument("--search-loads", default="500,1000,2000,3000,4000,5000",
                   help="load factors of the sustainable-throughput search, ascending")
    p.add_argument("--search-warmup-seconds", type=int, default=20)
    p.add_argument("--search-window-seconds", type=int, default=60)
    p.add_argument("--skip-search", action="store_true", help="no sustainable-throughput search")
    p.add_argument("--search-jobs", default="ours,spark", help="the jobs the search measures")
    p.add_argument("--only-search", action="store_true", help="no backlog, drain or live run")
    p.add_argument("--spark-cores", type=int, default=2)
    p.add_argument("--spark-driver-memory", default="1g")
    p.add_argument("--spark-shuffle-partitions", type=int, default=2)
    p.add_argument("--keep-topics", action="store_true")
    p.add_argument("--render", metavar="RESULTS_JSON", help="only print the table of a results.json")
    args = p.parse_args(argv)
    args.search_loads = sorted(int(x) for x in str(args.search_loads).split(",") if x.strip())
    args.search_jobs = [j for j in str(args.search_jobs).split(",") if j in ("ours", "spark")]
    if args.render:
        print(table(json.load(open(args.render))))
        return
    os.makedirs(args.out, exist_ok=True)
    stamp = time.strftime("%Y%m%d%H%M%S")
    prefix = f"spark-bench-{stamp}-backlog-"
    r = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
         "machine": {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()},
         "command": " ".join(sys.argv), "source": source_state(),
         "spark_version": os.environ.get("SPARK_PEER_VERSION", "?"), "args": vars(args)}
    # The machine's load average every 10 s over the whole run: it is shared, and a figure
    # measured while something else ran should be read with that load beside it.
    r["machine"]["load_avg_samples"] = loads = []
    threading.Thread(target=lambda: [loads.append((round(time.time()), os.getloadavg()[0])) or time.sleep(10)
                                     for _ in iter(int, 1)], daemon=True).start()
    try:
        if args.only_search:
            r["search"] = search(args, args.out, stamp)
        else:
            # The backlog: ends 10 minutes ago, so no record is in the future and all are within
            # Kafka's retention.
            hours = {"h": 3600, "m": 60, "s": 1}
            span_s = int(args.backlog[:-1]) * hours[args.backlog[-1]]
            start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=span_s + 600)
            cfg = city_config(os.path.join(args.out, "city-backlog.toml"), args.load_factor)
            log(f"producing the backlog: {args.backlog} at load factor {args.load_factor} to {prefix}*")
            generator(args, prefix, ["--config", cfg, "--start", start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                     "--duration", args.backlog, "--max-speed"], args.out,
                      "generator-backlog").wait(timeout=1800)
            kafka_tool("delete", args.bootstrap, prefix + "parking")
            counts = topic_records(args.bootstrap, prefix, READ_TOPICS)
            r["backlog"] = {"topics": counts, "records": sum(counts.values()), "span": args.backlog,
                            "load_factor": args.load_factor}
            log(f"backlog: {r['backlog']['records']:,} records {counts}")
            r["drain"] = {"ours": drain_ours(args, prefix, args.out, r["backlog"]["records"])}
            log(f"ours: warm drain {r['drain']['ours']['warm']['drain_s']:.1f} s")
            r["drain"]["spark"] = drain_spark(args, prefix, args.out, r["backlog"]["records"])
            log(f"spark: warm drain {r['drain']['spark']['warm']['drain_s']:.1f} s")
            r["rows"] = {"ours": {q: c for q, c in r["drain"]["ours"]["warm"]["report"]["queries"].items()},
                         "spark": r["drain"]["spark"]["rows"]}
            save(r, args.out)
            if not args.skip_live:
                r["live"] = {job: live(args, job, args.out, stamp) for job in ("ours", "spark")}
                save(r, args.out)
            if not args.skip_search:
                r["search"] = search(args, args.out, stamp)
    finally:
        r["machine"]["load_avg_at_end"] = os.getloadavg()
        if not args.keep_topics:
            try:
                log(kafka_tool("delete", args.bootstrap, f"spark-bench-{stamp}-").strip())
            except subprocess.CalledProcessError as e:
                log(f"could not delete the topics spark-bench-{stamp}-*: {e.stderr[-500:]}")
        save(r, args.out)
    t = table(r)
    head = (f"Measured {r['date']} on {r['machine']['cpus']} cores (load average at start "
            f"{r['machine']['load_avg_at_start'][0]:.1f}, at end {r['machine']['load_avg_at_end'][0]:.1f}); "
            + ("the search only" if args.only_search else
               f"backlog {args.backlog} of the city at load factor {args.load_factor}") +
            f", seed {args.seed}, {args.partitions} partitions a topic.")
    la = [x[1] for x in r["machine"]["load_avg_samples"]]
    if la:
        head += f" 1-minute load average over the run: mean {sum(la) / len(la):.1f}, max {max(la):.1f}."
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(head + "\n\n" + t + "\n")
    print(head + "\n\n" + t)


if __name__ == "__main__":
    main(sys.argv[1:])
