"""redis.key_layout: cluster against a real Redis Cluster node (redis-server --cluster-enabled,
one node owning all 16384 slots).

A pipeline with a logistic model and a recommender writes under the cluster layout. What it
checks:
  - every user's score hash is {prefix}:{user}:u and its list {prefix}:{user}:rec (the user id
    in braces), and no key of the plain layout ({prefix}:u:..., {prefix}:rec:...) exists
  - both keys of a user hash to the same slot (CLUSTER KEYSLOT), and a reader's MULTI reading
    the hash and the list of one user runs, where the same transaction over the plain layout's
    two keys is refused with CROSSSLOT (so the test fails if the layout is not what makes it
    work)
  - {prefix}:popular and {prefix}:model:{name} keep their names; offsets reach what was produced
"""

import os
import random
import shutil
import sys
import tempfile
import time

import redis as redispy

import harness

TOPIC = "events"
GROUP = "cluster-keys"
PREFIX = "pd"

CONFIG = """
kafka:
  brokers: ${KAFKA_BROKERS}
  topics: [ "${KAFKA_TOPIC}" ]
  group: ${KAFKA_GROUP}
  start: earliest
redis:
  url: ${REDIS_URL}
  prefix: %(prefix)s
  key_layout: cluster
  ttl: 1h
  flush_interval: 50ms
events:
  fields: { user: user_id, item: item_id, type: type, time: ts }
  types: [view, click, purchase]
features:
  device: { categorical: context.device }
  item: { categorical: item_id }
models:
  buys:
    type: logistic
    features: [device, item]
    example_on: [view]
    label: { positive_on: purchase, within: 1m, match: user }
    output: buy_p
  recs:
    type: recommender
    interactions: { view: 1, click: 2, purchase: 4 }
    k: 5
    dim: 8
    limits: { refresh: 100ms, similar_refresh: 1s }
"""


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def events(rng, users, n):
    out, ts = [], 1764000000000
    for i in range(n):
        ts += rng.randint(100, 2000)
        out.append({"user_id": rng.choice(users), "item_id": "i%d" % rng.randint(0, 30),
                    "type": rng.choice(["view", "view", "click", "purchase"]), "ts": ts,
                    "context": {"device": rng.choice(["ios", "web"])}})
    return out


def main():
    print(harness.versions())
    rng = random.Random(11)
    users = ["u%d" % i for i in range(40)] + ["a:b", "x y"]
    evs = events(rng, users, 600)
    tmp = tempfile.mkdtemp(prefix="pd-cluster-")
    try:
        config = os.path.join(tmp, "cluster.yaml")
        with open(config, "w") as f:
            f.write(CONFIG % {"prefix": PREFIX})
        # the bus port would be port + 10000, past 65535 for a high free port: one of its own
        args = ["--cluster-enabled", "yes", "--cluster-port", str(harness.free_port()),
                "--cluster-config-file", os.path.join(tmp, "nodes.conf")]
        with harness.RedisServer(args=args) as rs, harness.Broker({TOPIC: 2}) as broker, \
                harness.KafkaInspector(broker.bootstrap) as k:
            r = rs.client()
            r.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            harness.wait_for(lambda: "cluster_state:ok" in r.execute_command("CLUSTER", "INFO"),
                             10, 0.1, "the one-node cluster to own every slot")
            env = {"KAFKA_BROKERS": broker.bootstrap, "KAFKA_TOPIC": TOPIC,
                   "KAFKA_GROUP": GROUP, "REDIS_URL": rs.url}
            with harness.Daemon(config, env) as daemon:
                harness.produce_events(broker.bootstrap, TOPIC, evs)
                produced = {p: o for p, o in k.end_offsets(TOPIC).items() if o > 0}
                daemon.wait_until(lambda: k.committed_offsets(GROUP, TOPIC) == produced, 60,
                                  0.2, "offsets %s committed" % produced)
                seen = {u for u in (e["user_id"] for e in evs)}
                daemon.wait_until(lambda: all(r.exists("%s:{%s}:rec" % (PREFIX, u))
                                              for u in seen), 20, 0.2, "every user's list")
                keys = set(r.keys("*"))
                plain = [x for x in keys if x.startswith(PREFIX + ":u:") or
                         x.startswith(PREFIX + ":rec:")]
                check(not plain, "keys of the plain layout: %s" % sorted(plain)[:5])
                for u in seen:
                    hkey, lkey = "%s:{%s}:u" % (PREFIX, u), "%s:{%s}:rec" % (PREFIX, u)
                    check(r.type(hkey) == "hash" and "buy_p" in r.hgetall(hkey),
                          "%s: %r" % (hkey, r.hgetall(hkey)))
                    check(r.type(lkey) == "zset" and 0 < r.zcard(lkey) <= 5, lkey)
                    check(r.ttl(hkey) > 0 and r.ttl(lkey) > 0, "TTLs of %s" % u)
                    check(r.execute_command("CLUSTER", "KEYSLOT", hkey) ==
                          r.execute_command("CLUSTER", "KEYSLOT", lkey), "slots of %s" % u)
                check(r.exists("%s:popular" % PREFIX) and r.exists("%s:model:buys" % PREFIX),
                      "popular list and model summary under their usual names")

                # a reader's one-transaction read of one user: fine with the tag, CROSSSLOT
                # for the plain names
                pipe = r.pipeline(transaction=True)
                pipe.hgetall("%s:{u1}:u" % PREFIX)
                pipe.zrevrange("%s:{u1}:rec" % PREFIX, 0, -1, withscores=True)
                h, lst = pipe.execute()
                check("buy_p" in h and lst, "the transaction read %r %r" % (h, lst))
                pipe = r.pipeline(transaction=True)
                pipe.hgetall("%s:u:u1" % PREFIX)
                pipe.zrevrange("%s:rec:u1" % PREFIX, 0, -1)
                try:
                    pipe.execute()
                    check(False, "redis took a cross-slot transaction: the check proves nothing")
                except redispy.exceptions.ResponseError as exc:
                    check("CROSSSLOT" in str(exc), "unexpected refusal %s" % exc)
                print("%d users: hash and list in one slot each; cross-slot refused for the "
                      "plain names" % len(seen))
                daemon.stop()
                check(daemon.returncode == 0, "exit status %r" % daemon.returncode)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
