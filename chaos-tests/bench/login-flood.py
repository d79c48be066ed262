#!/usr/bin/env python3
"""Login flood: wrong passwords against a running `conclave dev --no-tls` cluster, measuring the
peak RSS of its node processes. Half the attempts name the admin, half an unknown user. Linux only
(reads /proc); CI smoke-runs it at a tiny size
(chaos-tests/bench/smoke.sh). Standard library only.

    conclave dev --no-tls --data-dir /tmp/flood --api-port 32080 --cluster-port 32090 \\
        --dns-port 32053 --admin-password flood-test-pass-1 > /tmp/flood.out &
    python3 chaos-tests/bench/login-flood.py --port 32080 --sources 250 \\
        --pids $(grep -o 'pid [0-9]*' /tmp/flood.out | awk '{print $2}')
"""
import argparse
import asyncio
import json
import time


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def attempt(i, port, nodes, sources, outcomes):
    host = f"127.0.0.{i % nodes + 1}"
    # With --sources N, attempt i comes from 127.0.1.(i % N + 1): N distinct source addresses,
    # so the per-source login throttle does not turn most attempts into quick 429s.
    local = (f"127.0.1.{i % sources + 1}", 0) if sources else None
    user = "admin" if i % 2 == 0 else f"nobody{i}"
    body = json.dumps({"username": user, "password": f"wrong-password-{i}"}).encode()
    try:
        reader, writer = await asyncio.open_connection(host, port, local_addr=local)
        writer.write(
            b"POST /api/v1/login HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (host.encode(), port, len(body))
            + body
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 120)
        status = answer.split(b" ")[1].decode() if answer else "no answer"
        writer.close()
    except Exception as e:  # a refused or reset connection is an outcome too
        status = type(e).__name__
    outcomes[status] = outcomes.get(status, 0) + 1


async def sample(pids, peak, done):
    while not done.is_set():
        for pid in pids:
            peak[pid] = max(peak.get(pid, 0), rss_kb(pid))
        await asyncio.sleep(0.2)


async def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8080, help="plain API port of every node")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sources", type=int, default=0,
                   help="spread attempts over this many source addresses 127.0.1.N (max 254)")
    p.add_argument("--pids", type=int, nargs="+", required=True, help="node processes")
    a = p.parse_args()
    at_rest = {pid: rss_kb(pid) for pid in a.pids}
    peak, outcomes, done = {}, {}, asyncio.Event()
    sampler = asyncio.create_task(sample(a.pids, peak, done))
    start = time.time()
    for r in range(a.rounds):
        await asyncio.gather(
            *[attempt(r * a.concurrency + i, a.port, a.nodes, a.sources, outcomes) for i in range(a.concurrency)]
        )
    took = time.time() - start
    done.set()
    await sampler
    print(f"{a.rounds * a.concurrency} logins in {took:.1f} s: {outcomes}")
    for pid in a.pids:
        after = rss_kb(pid)
        print(f"pid {pid}: RSS at rest {at_rest[pid] // 1024} MB, "
              f"peak {peak[pid] // 1024} MB, after {after // 1024} MB")


if __name__ == "__main__":
    asyncio.run(main())
