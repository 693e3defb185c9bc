"""Integration-test harness for propensityd: a throwaway Redis, a mock Kafka broker
(pd-kafka-broker), producers, consumer-group offset inspection and a supervised daemon.

Standard library + kafka-python + redis-py only. Binaries come from environment variables that
tests/integration/meson.build sets: PD_DAEMON, PD_BROKER, PD_EVENTGEN, PD_SOURCE_ROOT (and
optionally PD_REDIS_SERVER, PD_KCAT; otherwise redis-server and kcat are taken from PATH).

Every long-running process started here runs in its own session, dies with the harness
(setpriv --pdeathsig) and is killed on exit, on exceptions and on SIGTERM/SIGINT (meson's
timeout), so a failed test never leaves a broker, Redis or daemon behind.
"""

import atexit
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

try:
    import kafka
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
except ImportError as exc:  # pragma: no cover - reported, not handled
    sys.exit("harness: kafka-python is missing (%s); run scripts/install-deps" % exc)
try:
    import redis
except ImportError as exc:  # pragma: no cover
    sys.exit("harness: redis-py is missing (%s); run scripts/install-deps" % exc)

# kcat -K expects the delimiter in kcat's escape syntax, as a shell user writes -K'\t'.
KCAT_KEY_DELIM = "\\t"
# kafka-python partitions keys with murmur2 (Java-compatible); librdkafka's default is CRC32.
# Producing with both must put one user's events on one partition, so kcat gets murmur2 too.
KCAT_PARTITIONER = "murmur2_random"


class HarnessError(Exception):
    """A helper process failed to start, died, or a wait timed out."""


# ---- paths ------------------------------------------------------------------------------------


def env_path(name, required=True):
    """Path from the environment variable `name` (set by meson), checked to exist."""
    value = os.environ.get(name)
    if not value:
        if required:
            raise HarnessError("%s is not set; run this test through 'meson test'" % name)
        return None
    if not os.path.exists(value):
        raise HarnessError("%s=%s does not exist (not built yet?)" % (name, value))
    return value


def source_root():
    return env_path("PD_SOURCE_ROOT")


def _tool(env_name, command):
    path = os.environ.get(env_name) or shutil.which(command)
    if not path:
        raise HarnessError("%s not found on PATH; run scripts/install-deps" % command)
    return path


# ---- process supervision ----------------------------------------------------------------------

_live = set()  # Popen objects that must not outlive the harness
_SETPRIV = shutil.which("setpriv")


def dying_with_parent(argv):
    """`argv` wrapped so the kernel kills it if the harness itself is SIGKILLed (a hard
    timeout), via util-linux setpriv --pdeathsig. Not a preexec_fn: kafka-python runs threads,
    and code between fork and exec is unsafe then."""
    if _SETPRIV:
        return [_SETPRIV, "--pdeathsig", "KILL", "--"] + list(argv)
    return list(argv)


def spawn(argv, **kwargs):
    """Popen in a new session, registered for cleanup."""
    proc = subprocess.Popen(dying_with_parent(argv), start_new_session=True, **kwargs)
    _live.add(proc)
    return proc


def kill_process(proc, term_timeout=5.0):
    """SIGTERM the process group, then SIGKILL it; returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(term_timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # Once the leader is reaped its pid may be reused, so an exited process's group is left
    # alone; nothing started here forks children of its own.
    _live.discard(proc)
    return proc.returncode


def kill_all():
    for proc in list(_live):
        kill_process(proc, term_timeout=2.0)


atexit.register(kill_all)


def _exit_on_signal(signum, _frame):
    # Turn meson's SIGTERM (timeout) and Ctrl-C into an exception so `with` blocks unwind.
    raise SystemExit(128 + signum)


signal.signal(signal.SIGTERM, _exit_on_signal)


def wait_for(predicate, timeout, interval=0.2, what="condition", alive=None):
    """Poll `predicate()` until it returns a truthy value, which is returned.

    `alive`, if given, is called each round and should raise when a process we depend on died,
    so a crash fails fast instead of waiting out the timeout.
    """
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        if alive is not None:
            alive()
        try:
            result = predicate()
            if result:
                return result
            last_exc = None
        except Exception as exc:  # noqa: BLE001 - kept for the timeout message
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = " (last error: %r)" % last_exc if last_exc else ""
            raise HarnessError("timed out after %.0f s waiting for %s%s" % (timeout, what, detail))
        time.sleep(interval)


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path, lines=40):
    try:
        with open(path, "r", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


# ---- Redis ------------------------------------------------------------------------------------


class RedisServer:
    """redis-server on a free port in a temp dir, no persistence.

    with RedisServer() as r:  r.url, r.port, r.client()
    """

    def __init__(self, start_timeout=10.0, args=()):
        self.start_timeout = start_timeout
        self.args = list(args)  # more redis-server options, e.g. --cluster-enabled yes
        self.port = None
        self.proc = None
        self._tmp = None

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def client(self, **kwargs):
        kwargs.setdefault("decode_responses", True)
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)

    def start(self):
        self._tmp = tempfile.mkdtemp(prefix="pd-redis-")
        # free_port() can race with another process; a second port fixes that.
        for _attempt in range(3):
            self.port = free_port()
            log = os.path.join(self._tmp, "redis.log")
            self.proc = spawn(
                [_tool("PD_REDIS_SERVER", "redis-server"),
                 "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", self._tmp,
                 "--daemonize", "no", "--logfile", log] + self.args,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_for(self._ping, self.start_timeout, 0.05, "redis-server PING",
                         alive=self._check_alive)
                return self
            except HarnessError:
                kill_process(self.proc)
                if "Address already in use" not in _tail(log):
                    raise HarnessError("redis-server did not start:\n" + _tail(log))
        raise HarnessError("redis-server: no free port after 3 attempts")

    def _ping(self):
        with contextlib.closing(self.client(socket_timeout=0.5)) as c:
            return c.ping()

    def _check_alive(self):
        if self.proc.poll() is not None:
            raise HarnessError("redis-server exited with %s" % self.proc.returncode)

    def stop(self):
        if self.proc is not None:
            kill_process(self.proc)
            self.proc = None
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    # ---- faults (tests/faults/) ----

    def down(self):
        """Kills redis-server (SIGKILL: clients see the connection drop) but keeps its port
        and directory for up()."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            _live.discard(self.proc)
            self.proc = None

    def up(self):
        """Starts redis-server again on the same port (empty: there is no persistence)."""
        log = os.path.join(self._tmp, "redis.log")
        deadline = time.monotonic() + self.start_timeout
        while True:
            self.proc = spawn(
                [_tool("PD_REDIS_SERVER", "redis-server"),
                 "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", self._tmp,
                 "--daemonize", "no", "--logfile", log] + self.args,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_for(self._ping, 3.0, 0.05, "redis-server PING", alive=self._check_alive)
                return self
            except HarnessError:
                kill_process(self.proc)
                if time.monotonic() > deadline:
                    raise HarnessError("redis-server did not come back:\n" + _tail(log))
                time.sleep(0.2)  # the port may still be in TIME_WAIT's hands

    def freeze(self):
        """SIGSTOP: connections stay open and nothing answers."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self):
        os.kill(self.proc.pid, signal.SIGCONT)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# ---- Kafka ------------------------------------------------------------------------------------


class Broker:
    """pd-kafka-broker with the given topics; `bootstrap` is its address list.

    with Broker({"events": 4}) as b:  b.bootstrap
    `topics` is a dict name -> partitions or a list of "name[:partitions]".
    """

    def __init__(self, topics, brokers=1, start_timeout=15.0, control=False):
        if isinstance(topics, dict):
            topics = ["%s:%d" % (name, parts) for name, parts in topics.items()]
        self.topics = list(topics)
        self.brokers = brokers
        self.control = control
        self.start_timeout = start_timeout
        self.bootstrap = None
        self.proc = None
        self._tmp = None

    def start(self):
        self._tmp = tempfile.mkdtemp(prefix="pd-broker-")
        ready = os.path.join(self._tmp, "ready")
        self.log_path = os.path.join(self._tmp, "broker.log")
        argv = [env_path("PD_BROKER"), "--brokers", str(self.brokers), "--ready-file", ready]
        for t in self.topics:
            argv += ["--topic", t]
        if self.control:
            argv.append("--control")
        with open(self.log_path, "wb") as log:
            pipe = subprocess.PIPE if self.control else subprocess.DEVNULL
            self.proc = spawn(argv, stdin=pipe, stdout=pipe, stderr=log)

        def read_ready():
            if self.proc.poll() is not None:
                raise HarnessError("pd-kafka-broker exited with %s:\n%s"
                                   % (self.proc.returncode, _tail(self.log_path)))
            with contextlib.suppress(FileNotFoundError), open(ready) as f:
                return f.read().strip()
            return None

        self.bootstrap = wait_for(read_ready, self.start_timeout, 0.05, "pd-kafka-broker")
        if self.control:
            self.proc.stdout.readline()  # the bootstrap line
        return self

    def command(self, line):
        """One fault-injection command (Broker(control=True); pd-kafka-broker --help lists
        them: down/up BROKER, rtt BROKER MS, leader TOPIC PART BROKER, coordinator GROUP
        BROKER, errors API N ERROR, clear API). Raises HarnessError when it is refused."""
        if not self.control:
            raise HarnessError("Broker(control=True) takes commands")
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline().decode().strip()
        if reply != "ok":
            raise HarnessError("pd-kafka-broker refused %r: %s" % (line, reply or "(exited)"))

    def stop(self):
        """Stops the broker; returns its exit code (0 on a clean SIGTERM shutdown)."""
        code = None
        if self.proc is not None:
            code = kill_process(self.proc, term_timeout=10.0)
            self.proc = None
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        return code

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _as_bytes(value):
    if value is None or isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


def produce_kcat(bootstrap, topic, keyed_lines, timeout=60.0):
    """Produce `KEY<TAB>VALUE` lines (str or bytes, without newline) with kcat -P -K'\\t'.

    Uses the murmur2 partitioner so keys land where kafka-python would put them. Returns the
    number of lines sent; raises if kcat reports a failure.
    """
    payload = b"".join(_as_bytes(line).rstrip(b"\n") + b"\n" for line in keyed_lines)
    count = payload.count(b"\n")
    proc = subprocess.run(
        [_tool("PD_KCAT", "kcat"), "-P", "-b", bootstrap, "-t", topic, "-K", KCAT_KEY_DELIM,
         "-X", "topic.partitioner=" + KCAT_PARTITIONER, "-X", "message.max.bytes=1000000",
         "-X", "acks=all"],
        input=payload, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
        check=False)
    if proc.returncode != 0 or b"ERROR" in proc.stderr:
        raise HarnessError("kcat -P failed (%d): %s" % (proc.returncode,
                                                       proc.stderr.decode(errors="replace")))
    return count


def produce_python(bootstrap, topic, records, timeout=60.0):
    """Produce (key, value) pairs with kafka-python; keys/values may be str or bytes.

    Waits for every acknowledgement; returns {partition: count}.
    """
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                             max_request_size=1048576)
    try:
        futures = [producer.send(topic, key=_as_bytes(k), value=_as_bytes(v))
                   for k, v in records]
        producer.flush(timeout)
        counts = {}
        for fut in futures:
            md = fut.get(timeout)
            counts[md.partition] = counts.get(md.partition, 0) + 1
        return counts
    finally:
        producer.close(timeout)


class KafkaInspector:
    """Offsets and metadata through one set of kafka-python clients; reuse it in wait loops.

    Note for librdkafka's mock broker: OffsetFetch with a null topic list ("all partitions") is
    answered with a null list, which kafka-python 2.0.2's list_consumer_group_offsets() cannot
    iterate, so partitions are always passed explicitly.
    """

    def __init__(self, bootstrap):
        self.bootstrap = bootstrap
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                       enable_auto_commit=False)
        self._admin = None

    def close(self):
        self._consumer.close()
        if self._admin is not None:
            self._admin.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def partitions(self, topic, timeout=10.0):
        def lookup():
            # partitions_for_topic() answers from cached metadata; topics() refreshes it.
            self._consumer.topics()
            return self._consumer.partitions_for_topic(topic)
        parts = wait_for(lookup, timeout, 0.1, "metadata for topic %r" % topic)
        return [TopicPartition(topic, p) for p in sorted(parts)]

    def end_offsets(self, topic):
        return {tp.partition: off
                for tp, off in self._consumer.end_offsets(self.partitions(topic)).items()}

    def beginning_offsets(self, topic):
        return {tp.partition: off
                for tp, off in self._consumer.beginning_offsets(self.partitions(topic)).items()}

    def committed_offsets(self, group, topic):
        """{partition: offset} the group committed; partitions without a commit are left out."""
        if self._admin is None:
            self._admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        got = self._admin.list_consumer_group_offsets(group, partitions=self.partitions(topic))
        return {tp.partition: om.offset for tp, om in got.items() if om.offset >= 0}


def end_offsets(bootstrap, topic):
    with KafkaInspector(bootstrap) as k:
        return k.end_offsets(topic)


def beginning_offsets(bootstrap, topic):
    with KafkaInspector(bootstrap) as k:
        return k.beginning_offsets(topic)


def committed_offsets(bootstrap, group, topic):
    """{partition: offset} committed by `group` on `topic` (uncommitted partitions left out)."""
    with KafkaInspector(bootstrap) as k:
        return k.committed_offsets(group, topic)


def consume_group(bootstrap, group, topic, expected, timeout=60.0, commit=True):
    """Join `group`, read until `expected` records arrived, commit, leave. Returns the records.

    The mock broker delays the first join of a group by 3 s, like a real broker's
    group.initial.rebalance.delay.ms.
    """
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             max_partition_fetch_bytes=1048576)
    records = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while len(records) < expected:
            if time.monotonic() > deadline:
                raise HarnessError("consumed %d of %d records from %r in %.0f s"
                                   % (len(records), expected, topic, timeout))
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        if commit:
            consumer.commit()
        return records
    finally:
        consumer.close()


# ---- the event generator ----------------------------------------------------------------------


def eventgen(*args, timeout=60.0):
    """Run pd-eventgen with `args` (strings); returns stdout bytes."""
    argv = [env_path("PD_EVENTGEN")] + [str(a) for a in args]
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        raise HarnessError("pd-eventgen %s failed (%d): %s"
                           % (" ".join(argv[1:]), proc.returncode,
                              proc.stderr.decode(errors="replace")))
    return proc.stdout


# ---- the daemon -------------------------------------------------------------------------------

# Log lines at error severity or worse, in the usual shapes: a journal "<0>".."<3>" prefix,
# level=error, [error], a leading "error:" (after an optional timestamp and "prog:"), or an
# upper-case ERROR/CRITICAL/FATAL token. A message that merely mentions errors ("warning: 3 decode
# errors") does not count. Adjust once the daemon's log format settles.
_LEVELS = r"(error|err|crit|critical|alert|emerg|fatal)"
ERROR_LINE_RES = (
    re.compile(r"^\s*<[0-3]>"),
    re.compile(r"\blevel=" + _LEVELS + r"\b", re.IGNORECASE),
    re.compile(r"\[" + _LEVELS + r"\]", re.IGNORECASE),
    re.compile(r"^(?:[\d\-:.,TZ+]+\s+)*(?:[\w.\-\[\]]+:\s+)?" + _LEVELS + r"\b", re.IGNORECASE),
    re.compile(r"\b(ERROR|CRITICAL|CRIT|FATAL|ALERT|EMERG)\b"),
)


def is_error_line(line):
    return any(r.search(line) for r in ERROR_LINE_RES)


class Daemon:
    """propensityd --config CONFIG with extra environment `env`, stderr (and stdout) to a file.

    with Daemon(config, {"KAFKA_BROKERS": ...}) as d:
        d.wait_until(lambda: ..., timeout=60)
        assert d.stop() == 0
    """

    def __init__(self, config, env=None, args=(), binary=None, log_path=None):
        self.config = config
        self.env = dict(env or {})
        self.args = list(args)
        self.binary = binary
        self.log_path = log_path
        self.proc = None
        self._tmp = None
        self.returncode = None

    def start(self):
        binary = self.binary or env_path("PD_DAEMON")
        if self.log_path is None:
            self._tmp = tempfile.mkdtemp(prefix="pd-daemon-")
            self.log_path = os.path.join(self._tmp, "propensityd.log")
        env = dict(os.environ)
        # config/example.yaml serves /metrics on ${PROPENSITYD_HTTP:-127.0.0.1:9464}: a free
        # port, so tests running at once do not collide on 9464
        env.setdefault("PROPENSITYD_HTTP", "127.0.0.1:%d" % free_port())
        env.update({k: str(v) for k, v in self.env.items()})
        with open(self.log_path, "wb") as log:
            self.proc = spawn([binary, "--config", self.config] + self.args, env=env,
                              stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self):
        """Raise HarnessError with the log tail if the daemon has exited."""
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise HarnessError("propensityd is not running (exit code %s); log tail:\n%s"
                               % (code, self.log_tail()))

    def wait_until(self, predicate, timeout, interval=0.2, what="condition"):
        """Poll `predicate` until truthy; fail fast if the daemon dies, with its log tail."""
        try:
            return wait_for(predicate, timeout, interval, what, alive=self.check_alive)
        except HarnessError as exc:
            if "timed out" in str(exc):
                raise HarnessError("%s; daemon log tail:\n%s" % (exc, self.log_tail())) from None
            raise

    def stop(self, timeout=10.0, sig=signal.SIGTERM):
        """Send `sig` (SIGTERM) and wait up to `timeout` s; returns the exit code.

        Raises HarnessError (after SIGKILL) if the daemon does not exit in time.
        """
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                kill_process(self.proc, term_timeout=0.5)
                raise HarnessError("propensityd did not exit within %.0f s of %s; log tail:\n%s"
                                   % (timeout, signal.Signals(sig).name, self.log_tail()))
        self.returncode = self.proc.returncode
        _live.discard(self.proc)
        self.proc = None
        return self.returncode

    def kill(self):
        if self.proc is not None:
            self.returncode = kill_process(self.proc, term_timeout=0.5)
            self.proc = None

    def log_text(self):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except (OSError, TypeError):
            return ""

    def log_tail(self, lines=40):
        return _tail(self.log_path, lines) if self.log_path else ""

    def error_lines(self):
        return [line for line in self.log_text().splitlines() if is_error_line(line)]

    def cleanup(self):
        self.kill()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, *exc):
        # HarnessError messages already carry the log tail.
        if exc_type is not None and not issubclass(exc_type, HarnessError) and self.log_path:
            sys.stderr.write("---- propensityd log tail ----\n%s\n" % self.log_tail(80))
        self.cleanup()


def versions():
    """One line on the client libraries, for test logs."""
    return "python %s, kafka-python %s, redis-py %s" % (
        sys.version.split()[0], kafka.__version__, redis.__version__)


# ---- operations: configs, sd_notify, HTTP, the control socket (test_ops_*.py) ----------------

import json as _json
import urllib.error as _urlerror
import urllib.request as _urlrequest


def ops_config(directory, daemon=None, snapshot_dir=None, forget_type=False, extra="",
               dead_letter_topic=None, redis_extra=""):
    """Writes pipeline.yaml in `directory`: config/example.yaml plus a `daemon:` section from
    the dict `daemon` (key -> YAML scalar text), an optional snapshot dir, a `forget` event
    type when `forget_type`, a dead-letter topic, and lines added to `redis:`. Returns the
    path."""
    with open(os.path.join(source_root(), "config", "example.yaml")) as f:
        text = f.read()
    # the example's own daemon: section (metrics on 127.0.0.1:9464) gives way to the test's
    text = re.sub(r"^daemon:\n(?:[ \t]+\S.*\n)*", "", text, flags=re.MULTILINE)
    if dead_letter_topic:
        text = text.replace("  types: [view,", "  dead_letter_topic: %s\n  types: [view,"
                            % dead_letter_topic, 1)
    if redis_extra:
        text = text.replace("redis:\n", "redis:\n" + redis_extra, 1)
    if forget_type:
        text = text.replace("types: [view, click, add_to_cart, purchase, review]",
                            "types: [view, click, add_to_cart, purchase, review, forget]\n"
                            "  forget_type: forget")
        if "forget_type" not in text:
            raise HarnessError("ops_config: config/example.yaml no longer has the types line")
    if snapshot_dir:
        text += "\nsnapshot:\n  dir: %s\n  interval: 0\n  keep: 3\n" % snapshot_dir
    if daemon:
        text += "\ndaemon:\n" + "".join("  %s: %s\n" % kv for kv in daemon.items())
    text += extra
    path = os.path.join(directory, "pipeline.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


class NotifySocket:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET; collects the messages.

    with NotifySocket() as n:  env["NOTIFY_SOCKET"] = n.path; ...; n.wait_for("READY=1")
    Each message is a dict of its KEY=VALUE lines; `messages` keeps them in order.
    """

    def __init__(self):
        self._tmp = None
        self.path = None
        self.sock = None
        self.messages = []

    def __enter__(self):
        self._tmp = tempfile.mkdtemp(prefix="pd-notify-")
        self.path = os.path.join(self._tmp, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        return self

    def __exit__(self, *exc):
        self.sock.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def collect(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return self.messages
            fields = {}
            for line in data.decode("utf-8", "replace").split("\n"):
                if "=" in line:
                    k, v = line.split("=", 1)
                    fields[k] = v
            self.messages.append(fields)

    def index_of(self, key, value=None, start=0):
        """Index of the first message at or after `start` that has key (= value)."""
        self.collect()
        for i in range(start, len(self.messages)):
            m = self.messages[i]
            if key in m and (value is None or m[key] == value):
                return i
        return -1

    def wait_for(self, key, value=None, start=0, timeout=30.0, alive=None):
        return wait_for(lambda: (lambda i: i + 1 if i >= 0 else None)(
            self.index_of(key, value, start)), timeout, 0.05,
            "sd_notify %s%s" % (key, "=" + value if value else ""), alive=alive) - 1


def http_get(port, path, timeout=5.0):
    """(status, body text) of GET http://127.0.0.1:port/path; HTTP errors are answers too."""
    url = "http://127.0.0.1:%d%s" % (port, path)
    try:
        with _urlrequest.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8")
    except _urlerror.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8")


def metrics_samples(port, timeout=5.0):
    """{name or name{labels}: value} of a daemon's /metrics (samples only); HarnessError when
    it does not answer 200."""
    status, body = http_get(port, "/metrics", timeout=timeout)
    if status != 200:
        raise HarnessError("/metrics answered %d" % status)
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def control_call(endpoint, request, timeout=5.0, frames=None):
    """Sends one request (dict -> JSON, str/bytes verbatim, or `frames`: a list of bytes sent
    as one multipart message) on a fresh REQ socket; returns the parsed JSON reply."""
    import zmq  # python3-zmq; only the ops tests need it
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
    sock.setsockopt(zmq.SNDTIMEO, int(timeout * 1000))
    try:
        sock.connect(endpoint)
        if frames is not None:
            sock.send_multipart(frames)
        else:
            if isinstance(request, dict):
                request = _json.dumps(request)
            sock.send(_as_bytes(request))
        reply = sock.recv()
    finally:
        sock.close()
    return _json.loads(reply.decode("utf-8"))


def run_ctl(*args, env=None, timeout=30.0):
    """Runs propensityctl (PD_CTL) with `args`; returns the CompletedProcess (text)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([env_path("PD_CTL")] + [str(a) for a in args], env=full_env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout, check=False)


def produce_events(bootstrap, topic, events):
    """Produces event dicts (or raw str/bytes values) keyed by their user_id with kcat."""
    lines = []
    for e in events:
        if isinstance(e, dict):
            lines.append("%s\t%s" % (e.get("user_id", "nobody"), _json.dumps(e)))
        else:
            value = e.decode("utf-8", "replace") if isinstance(e, bytes) else e
            lines.append("garbage\t%s" % value.replace("\n", " ").replace("\t", " "))
    return produce_kcat(bootstrap, topic, lines)
