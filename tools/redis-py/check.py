#!/usr/bin/env python3
"""redis-py, unchanged, against strata's RESP gateway.

Usage: check.py standalone HOST:PORT
       check.py cluster HOST:PORT

`standalone` drives one node the way an application does with
`redis.Redis`: RESP3 (redis-py 8's default) and RESP2, strings with
expiry, counters, multi-key commands, a pipeline, SCAN, and the error
types redis-py raises. `cluster` points `redis.cluster.RedisCluster` at
one node of a cluster and lets it discover the others from
`CLUSTER SLOTS` and follow `MOVED` by itself.

Every check is an assert: the script exits non-zero (with the traceback)
on the first behaviour that differs from what redis-py expects of Redis.
"""

import sys

import redis
from redis.cluster import RedisCluster


def standalone(host, port):
    for protocol in (3, 2):
        r = redis.Redis(host=host, port=port, protocol=protocol, decode_responses=True)
        assert r.ping() is True
        prefix = f"py{protocol}:"
        assert r.set(prefix + "greeting", "hello", ex=100) is True
        assert r.get(prefix + "greeting") == "hello"
        assert 0 < r.ttl(prefix + "greeting") <= 100
        assert r.set(prefix + "greeting", "again", nx=True) is None
        assert r.set(prefix + "greeting", "again", xx=True, get=True) == "hello"
        assert r.ttl(prefix + "greeting") == -1, "SET without KEEPTTL drops the TTL"
        assert r.expire(prefix + "greeting", 50) is True
        assert r.persist(prefix + "greeting") is True
        assert r.ttl(prefix + "greeting") == -1
        assert r.incr(prefix + "n") == 1
        assert r.incrby(prefix + "n", 41) == 42
        assert r.decr(prefix + "n") == 41
        assert r.append(prefix + "greeting", "!") == 6
        assert r.strlen(prefix + "greeting") == 6
        assert r.mset({prefix + "a": "1", prefix + "b": "2"}) is True
        assert r.mget(prefix + "a", prefix + "b", prefix + "none") == ["1", "2", None]
        assert r.exists(prefix + "a", prefix + "b", prefix + "none") == 2
        assert r.type(prefix + "a") == "string"
        assert r.getdel(prefix + "a") == "1"
        assert r.delete(prefix + "b", prefix + "none") == 1

        pipe = r.pipeline(transaction=False)
        for i in range(100):
            pipe.set(f"{prefix}p{i}", str(i))
        for i in range(100):
            pipe.get(f"{prefix}p{i}")
        replies = pipe.execute()
        assert replies[:100] == [True] * 100
        assert replies[100:] == [str(i) for i in range(100)], "a pipeline reads its own writes"
        assert sorted(r.scan_iter(match=prefix + "p*", count=17)) == sorted(
            f"{prefix}p{i}" for i in range(100))

        try:
            r.execute_command("NOSUCHCOMMAND", "x")
            raise AssertionError("an unknown command must fail")
        except redis.ResponseError as e:
            assert str(e).startswith("unknown command 'NOSUCHCOMMAND'"), e
        try:
            r.lpush(prefix + "n", "x")
            raise AssertionError("a list command on a string must fail")
        except redis.ResponseError as e:
            assert str(e).startswith("WRONGTYPE"), e
        try:
            r.incr(prefix + "greeting")
            raise AssertionError("INCR of a non-number must fail")
        except redis.ResponseError as e:
            assert "not an integer" in str(e), e

        binary = redis.Redis(host=host, port=port, protocol=protocol)
        blob = bytes(range(256)) * 4
        assert binary.set(prefix + "blob", blob) is True
        assert binary.get(prefix + "blob") == blob, "values are binary-safe"
        print(f"standalone, RESP{protocol}: ok")
        r.close()
        binary.close()


def cluster(host, port):
    rc = RedisCluster(host=host, port=port, decode_responses=True)
    nodes = rc.get_nodes()
    primaries = rc.get_primaries()
    assert len(primaries) >= 2, f"more than one shard expected, got {primaries}"
    keys = [f"user:{i}" for i in range(200)]
    for k in keys:
        assert rc.set(k, k.upper()) is True
    for k in keys:
        assert rc.get(k) == k.upper()
    # Each key lives on exactly one primary: the one its slot maps to.
    owners = {}
    for k in keys:
        node = rc.get_node_from_key(k)
        owners.setdefault(node.name, 0)
        owners[node.name] += 1
        direct = redis.Redis(host=node.host, port=node.port, decode_responses=True)
        assert direct.get(k) == k.upper(), f"{k} is on {node.name}"
        direct.close()
    assert len(owners) >= 2, f"200 keys all on one shard: {owners}"
    # Hash tags keep multi-key commands on one slot.
    assert rc.mset_nonatomic({"{order:7}:a": "1", "{order:7}:b": "2"}) == [True]
    assert rc.mget_nonatomic(["{order:7}:a", "{order:7}:b"]) == ["1", "2"]
    assert rc.keyslot("{order:7}:a") == rc.keyslot("{order:7}:b")
    pipe = rc.pipeline()
    for k in keys[:50]:
        pipe.incr(k + ":visits")
    assert pipe.execute() == [1] * 50
    assert rc.delete(*keys) == len(keys)
    print(f"cluster: ok ({len(primaries)} primaries, {len(nodes)} nodes, keys per primary {owners})")
    rc.close()


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("standalone", "cluster"):
        sys.exit(__doc__)
    host, port = sys.argv[2].rsplit(":", 1)
    print(f"redis-py {redis.__version__}")
    {"standalone": standalone, "cluster": cluster}[sys.argv[1]](host, int(port))


if __name__ == "__main__":
    main()
