"""Recommendations: a recommender model's lists go from Kafka through propensityd to Redis.

Two groups of users, each interacting only with the items of its own category, on a pipeline
whose only model is a recommender (k 5).

What it checks:
  - every user has {prefix}:rec:{user}, a sorted set of at most k items with a TTL, at least
    80% of them from the user's own category
  - {prefix}:popular exists, and {prefix}:sim:{item} exists for items of both categories,
    its items mostly of the item's category
  - a reader polling one user's list while the daemon replaces it (a second wave of that
    user's events) only ever sees complete lists: exactly k items once there are k
  - the feed publishes list changes (topic = model name, "items" best first)
  - control `score USER` shows the user's list; `forget USER` (control) and a forget event
    remove the user's list key; `reload` of the same file keeps the model's state
  - /metrics counts list writes and carries the model's own figures (hr_at_k, no log_loss);
    {prefix}:model:{name} carries them too
  - the group's committed offsets reach what was produced; SIGTERM exits 0, no error lines
"""

import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time

import zmq

import harness

TOPIC = "events"
GROUP = "recs"
PREFIX = "pd"
MODEL = "recs"
K = 5
USERS_PER_GROUP = 30
ITEMS_PER_CATEGORY = 20
EVENTS_PER_USER = 12
WATCHED = "ua-1"  # polled while the second wave rewrites its list
WAVE2_EVENTS = 300

CONFIG = """
kafka:
  brokers: ${KAFKA_BROKERS}
  topics: [ "${KAFKA_TOPIC}" ]
  group: ${KAFKA_GROUP}
  start: earliest
redis:
  url: ${REDIS_URL}
  prefix: %(prefix)s
  ttl: 1h
  flush_interval: 50ms
events:
  fields: { user: user_id, item: item_id, type: type, time: ts }
  types: [view, click, purchase, forget]
  forget_type: forget
models:
  %(model)s:
    type: recommender
    interactions: { view: 1, click: 2, purchase: 4 }
    k: %(k)d
    dim: 16
    limits: { refresh: 100ms, similar_refresh: 1s }
daemon:
  control: %(control)s
  feed: %(feed)s
  http: 127.0.0.1:%(http)d
"""


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def ok(reply, what):
    check(reply.get("ok") is True, "%s: expected ok, got %r" % (what, reply))
    return reply.get("result")


def category(name):
    return name.split("-", 1)[0][-1]  # "ua-3" -> "a", "a-7" -> "a"


def events_for(user, n, rng, ts):
    cat = category(user)
    out = []
    for _ in range(n):
        item = "%s-%d" % (cat, rng.randrange(ITEMS_PER_CATEGORY))
        kind = rng.choices(["view", "click", "purchase"], [6, 3, 1])[0]
        ts += rng.randrange(1000, 20000)
        out.append({"user_id": user, "item_id": item, "type": kind, "ts": ts})
    return out, ts


def first_wave(rng):
    """The users and their events in rounds of one event per user, each user's in time order.

    Rounds go out a refresh apart, as live traffic does: the daemon judges each list it
    published against the user's next item, which a whole backlog in one batch would leave
    unpublished (popularity, judged as it stands, would lead then)."""
    users = ["u%s-%d" % (c, i) for c in "ab" for i in range(USERS_PER_GROUP)]
    streams, ts0 = {}, 1764000000000
    for u in users:
        streams[u], _ = events_for(u, EVENTS_PER_USER, rng, ts0)
    rounds = [[streams[u][n] for u in users] for n in range(EVENTS_PER_USER)]
    return users, rounds


class ListReader(threading.Thread):
    """Reads one sorted set as fast as it can; keeps the sizes and the distinct lists seen."""

    def __init__(self, client, key):
        super().__init__(daemon=True)
        self.client, self.key = client, key
        self.sizes, self.lists = [], set()
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            members = self.client.zrevrange(self.key, 0, -1)
            self.sizes.append(len(members))
            self.lists.add(tuple(members))


def check_lists(r, users):
    shares = []
    for u in users:
        key = "%s:rec:%s" % (PREFIX, u)
        items = r.zrevrange(key, 0, -1)
        check(0 < len(items) <= K, "%s has %d items: %r" % (key, len(items), items))
        ttl = r.pttl(key)
        check(ttl is not None and ttl > 0, "%s has no TTL (%r)" % (key, ttl))
        own = sum(1 for i in items if category(i) == category(u)) / len(items)
        shares.append(own)
        check(own >= 0.8, "%s: only %.0f%% of %r from category %s"
              % (key, 100 * own, items, category(u)))
    print("rec lists: %d users, mean own-category share %.2f"
          % (len(users), sum(shares) / len(shares)))


def check_item_lists(r):
    popular = r.zrevrange("%s:popular" % PREFIX, 0, -1)
    check(0 < len(popular) <= K, "%s:popular: %r" % (PREFIX, popular))
    sims = {}
    for cat in "ab":
        for i in range(ITEMS_PER_CATEGORY):
            item = "%s-%d" % (cat, i)
            got = r.zrevrange("%s:sim:%s" % (PREFIX, item), 0, -1)
            if got:
                sims[item] = got
    check(any(category(i) == "a" for i in sims) and any(category(i) == "b" for i in sims),
          "similar lists for %s" % sorted(sims))
    for item, got in sims.items():
        check(len(got) <= K, "sim:%s has %d items" % (item, len(got)))
        own = sum(1 for x in got if category(x) == category(item)) / len(got)
        check(own >= 0.8, "sim:%s = %r is not of its category" % (item, got))
    print("popular %r; %d similar lists" % (popular, len(sims)))


def check_metrics(port, r):
    status, body = harness.http_get(port, "/metrics")
    check(status == 200, "/metrics answered %d" % status)
    lines = body.splitlines()

    def sample(prefix):
        for line in lines:
            if line.startswith(prefix):
                return float(line.rsplit(" ", 1)[1])
        return None
    writes = sample('propensityd_redis_writes_total{kind="list"}')
    check(writes is not None and writes > 0, "list writes %r" % writes)
    check(sample("propensityd_redis_lists_coalesced_total") is not None, "lists coalesced")
    hr = sample('propensityd_model_hr_at_k{model="%s"}' % MODEL)
    check(hr is not None and 0 <= hr <= 1, "hr_at_k %r" % hr)
    check(sample('propensityd_model_log_loss{model="%s"}' % MODEL) is None,
          "a model of lists has no log loss")
    summary = r.hgetall("%s:model:%s" % (PREFIX, MODEL))
    check("hr_at_k" in summary and int(summary["examples"]) > 0, "model summary %r" % summary)
    print("metrics: %d list writes, hr_at_k %.3f" % (writes, hr))


def main():
    print(harness.versions())
    rng = random.Random(7)
    tmp = tempfile.mkdtemp(prefix="pd-recs-")
    try:
        users, rounds = first_wave(rng)
        ctl_path = os.path.join(tmp, "control.sock")
        control = "ipc://" + ctl_path
        feed = "tcp://127.0.0.1:%d" % harness.free_port()
        http_port = harness.free_port()
        config = os.path.join(tmp, "recs.yaml")
        with open(config, "w") as f:
            f.write(CONFIG % {"prefix": PREFIX, "model": MODEL, "k": K, "control": control,
                              "feed": feed, "http": http_port})

        with harness.RedisServer() as rs, harness.Broker({TOPIC: 2}) as broker, \
                harness.KafkaInspector(broker.bootstrap) as k:
            r = rs.client()
            env = {"KAFKA_BROKERS": broker.bootstrap, "KAFKA_TOPIC": TOPIC,
                   "KAFKA_GROUP": GROUP, "REDIS_URL": rs.url}
            sub = zmq.Context.instance().socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.SUBSCRIBE, MODEL.encode())
            sub.setsockopt(zmq.RCVTIMEO, 10000)
            with harness.Daemon(config, env) as daemon:
                daemon.wait_until(lambda: os.path.exists(ctl_path), 15, 0.05, "control socket")
                sub.connect(feed)
                # live traffic, not a backlog: the rounds go out once the group has joined
                daemon.wait_until(lambda: harness.control_call(control, {"cmd": "status"})
                                  ["result"]["kafka"]["assigned_partitions"] == 2, 15, 0.1,
                                  "partitions assigned")
                t0 = time.monotonic()
                for events in rounds:
                    harness.produce_events(broker.bootstrap, TOPIC, events)
                    time.sleep(0.15)
                produced = {p: o for p, o in k.end_offsets(TOPIC).items() if o > 0}
                daemon.wait_until(lambda: k.committed_offsets(GROUP, TOPIC) == produced, 30,
                                  0.2, "offsets %s committed" % produced)
                print("%d events committed after %.1f s"
                      % (sum(map(len, rounds)), time.monotonic() - t0))
                check_lists(r, users)
                check_item_lists(r)

                # ---- the feed: list changes, topic = model name
                topic, payload = sub.recv_multipart()
                msg = json.loads(payload)
                check(topic == MODEL.encode() and msg["model"] == MODEL and msg["field"] == "rec"
                      and isinstance(msg["items"], list) and "key" in msg,
                      "feed message %r" % msg)

                # ---- a reader never sees a partial list while the daemon replaces it
                key = "%s:rec:%s" % (PREFIX, WATCHED)
                reader = ListReader(rs.client(), key)
                reader.start()
                wave2, _ = events_for(WATCHED, WAVE2_EVENTS, rng, 1764100000000)
                wave2.append({"user_id": "ub-0", "type": "forget", "ts": 1764200000000})
                for i in range(0, len(wave2), 20):  # in bursts, over several refreshes
                    harness.produce_events(broker.bootstrap, TOPIC, wave2[i:i + 20])
                    time.sleep(0.05)
                produced = {p: o for p, o in k.end_offsets(TOPIC).items() if o > 0}
                daemon.wait_until(lambda: k.committed_offsets(GROUP, TOPIC) == produced, 30,
                                  0.2, "offsets %s committed" % produced)
                reader.stop.set()
                reader.join(5)
                sizes = set(reader.sizes)
                print("reader: %d reads, sizes %s, %d distinct lists"
                      % (len(reader.sizes), sorted(sizes), len(reader.lists)))
                check(sizes == {K}, "a reader saw list sizes %s, want only %d" % (sorted(sizes), K))
                check(len(reader.lists) >= 2, "the watched list never changed while polled")
                check(not r.exists("%s:rec:ub-0" % PREFIX), "a forget event left ub-0's list")

                # ---- control: score shows the list, forget removes it
                sc = ok(harness.control_call(control, {"cmd": "score", "user": "ua-2"}), "score")
                lst = sc["lists"]["rec"]
                check(0 < len(lst) <= K and all("item" in x and "score" in x for x in lst),
                      "score's list %r" % sc)
                check(any(m.get("list") for m in sc["models"]), "score's models %r" % sc)
                check(r.exists("%s:rec:ua-2" % PREFIX), "ua-2 has no list before forget")
                fg = ok(harness.control_call(control, {"cmd": "forget", "user": "ua-2"}),
                        "forget")
                check(fg["known"] is True and fg["redis_deleted"] is True, "forget %r" % fg)
                check(not r.exists("%s:rec:ua-2" % PREFIX), "forget left ua-2's list")

                # ---- reload of the same file: the model keeps what it learned
                def interactions():
                    st = ok(harness.control_call(control, {"cmd": "status"}), "status")
                    return [m for m in st["models"] if m["name"] == MODEL][0]["interactions"]
                before = interactions()
                rl = ok(harness.control_call(control, {"cmd": "reload"}), "reload")
                check(not rl["fresh"], "reload started %r fresh" % rl["fresh"])
                check(interactions() == before, "interactions %r after reload, %r before"
                      % (interactions(), before))

                check_metrics(http_port, r)
                code = daemon.stop(timeout=10)
                check(code == 0, "exit code %s on SIGTERM" % code)
                errors = daemon.error_lines()
                check(not errors, "error lines in the daemon log:\n  " + "\n  ".join(errors[:10]))
            sub.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("recommendations test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
