#!/usr/bin/env python3
"""Reads what propensityd publishes for a user, as an ad server does: one round trip per user.

    read_scores.py [--url redis://HOST:PORT/DB] [--prefix pd] [--family rec] [--top N] [--json] USER...

For each user it sends two commands in one pipeline (one write, one read of both replies):

    HGETALL   {prefix}:u:{user}                       model outputs, ts (ms), v (generation)
    ZREVRANGE {prefix}:rec:{user} 0 N-1 WITHSCORES    the recommendation list, best first

and prints the scores, the list and how old the scores are (now - ts). The pipeline is not a
MULTI transaction: propensityd writes each key whole (one HSET; the list in one MULTI), so
each reply is complete on its own, and two plain commands cost the server less. A missing hash
means the user has no scores (unknown or expired: fall back to defaults); a missing list means
none yet (fall back to {prefix}:popular). Exit status 0 when every user had scores or a list,
1 when one had neither, 2 on a usage or connection error.

Needs redis-py (Debian: python3-redis).
"""

import argparse
import json
import sys
import time

import redis


def read_user(client, prefix, family, user, top):
    """(scores, generation, ts_ms, recs) of one user in one round trip; fields absent as
    None, recs a list of (item, score text)."""
    pipe = client.pipeline(transaction=False)
    pipe.hgetall("%s:u:%s" % (prefix, user))
    # scores as Redis sends them (text), so they print exactly as stored
    pipe.zrevrange("%s:%s:%s" % (prefix, family, user), 0, top - 1, withscores=True,
                   score_cast_func=lambda s: s.decode() if isinstance(s, bytes) else s)
    fields, recs = pipe.execute()
    ts = fields.pop("ts", None)
    generation = fields.pop("v", None)
    return fields, generation, (int(ts) if ts is not None else None), recs


def main(argv=None):
    ap = argparse.ArgumentParser(description="Read a user's propensityd scores and list.")
    ap.add_argument("--url", default="redis://127.0.0.1:6379/0",
                    help="Redis URL, as the daemon's redis.url (default %(default)s)")
    ap.add_argument("--prefix", default="pd", help="redis.prefix (default %(default)s)")
    ap.add_argument("--family", default="rec",
                    help="the recommender's output, the list's key family (default %(default)s)")
    ap.add_argument("--top", type=int, default=10, help="list entries to read (default 10)")
    ap.add_argument("--json", action="store_true", help="one JSON object per user")
    ap.add_argument("users", nargs="+", metavar="USER")
    args = ap.parse_args(argv)
    if args.top < 1:
        ap.error("--top must be at least 1")

    client = redis.Redis.from_url(args.url, decode_responses=True, socket_timeout=2.0)
    status = 0
    try:
        for user in args.users:
            scores, generation, ts, recs = read_user(client, args.prefix, args.family, user,
                                                     args.top)
            now_ms = int(time.time() * 1000)
            staleness = now_ms - ts if ts is not None else None
            if not scores and ts is None and not recs:
                status = 1
            if args.json:
                print(json.dumps({"user": user, "scores": scores, "v": generation, "ts": ts,
                                  "staleness_ms": staleness,
                                  "recs": [[item, score] for item, score in recs]}))
                continue
            print("user %s" % user)
            if ts is None and not scores:
                print("no scores")
            for name in sorted(scores):
                print("score %s %s" % (name, scores[name]))
            if generation is not None:
                print("generation %s" % generation)
            if ts is not None:
                print("ts %d" % ts)
                print("staleness_ms %d" % staleness)
            if not recs:
                print("no list")
            for rank, (item, score) in enumerate(recs, 1):
                print("rec %d %s %s" % (rank, item, score))
    except redis.RedisError as exc:
        print("read_scores.py: redis %s: %s" % (args.url, exc), file=sys.stderr)
        return 2
    finally:
        client.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
