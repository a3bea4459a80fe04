"""A database failover that takes the old address away: the web host's open connections to it are half-open, nothing
they send is answered and nothing resets them, while the name the service connects by now leads to the new one.

The web process runs on a host of its own (a network namespace, see hosts.py) and reaches Postgres by the name
``pg-primary``, which its ``/etc/hosts`` gives first to one address of the store host and, at the failover, to
another; the first address then leaves the store host. Deliveries are sent from inside the web host over its own
loopback, all through the failover. Within seconds the intake must be accepting them again on the new address: a
connection that waits on the lost one must be given up, not left to the kernel's retransmissions (about 15 minutes
by default).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import make_url

from localrun.embedded import free_port
from tests.chaos.hosts import Host, Hosts, hosts, require
from tests.chaos.tcp_proxy import TcpProxy, forward
from tests.chaos.test_multihost import HostProcess
from tests.worker_process import ROOT, isolated_env, wait_http_ok

pytestmark = pytest.mark.slow

AFTER_FAILOVER_SECONDS = 45.0
# The lost connection given up (the intake's own wait for a commit is 15 s), then a new one on the new address.
RECOVERY_SECONDS = 25.0

# One signed delivery every 0.5 s, each on a connection and a thread of its own (an answer may take the intake's
# whole wait), for ``seconds``; then every answer as JSON: (sent at, monotonic s; HTTP status, 0 for none).
_SENDER = """
import json, sys, threading, time, http.client
from tests.webhook_payloads import encode, event, signed_headers
port, seconds = int(sys.argv[1]), float(sys.argv[2])
answers, threads = [], []
def send():
    raw = encode(event("userUpdated"))
    sent = time.monotonic()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", "/webhooks/asgardeo", body=raw, headers=signed_headers(raw))
        status = conn.getresponse().status
    except OSError:
        status = 0
    answers.append((sent, status))
end = time.monotonic() + seconds
while time.monotonic() < end:
    thread = threading.Thread(target=send)
    thread.start()
    threads.append(thread)
    time.sleep(0.5)
for thread in threads:
    thread.join()
print(json.dumps(sorted(answers)))
"""


@pytest.fixture
def web_host(clean_db: None, clean_redis: None) -> Iterator[tuple[Hosts, Host, int, str]]:
    """The web process on a host of its own, reaching Postgres as ``pg-primary`` (the old address for now) and
    Redis over the bridge; the hosts, the web host, its port and Postgres's old address."""
    require()
    proxies: list[TcpProxy] = []
    web: HostProcess | None = None
    with hosts(["web"]) as made:
        try:
            env = isolated_env(None)
            proxies += forward(env, ("REDIS_URL", "CELERY_BROKER_URL"), made.store_address)
            # Postgres on two addresses of the store host, the same port on each, as one name would lead to either.
            database = make_url(env["DATABASE_URL"])
            old = made.add_store_address(200)
            port = 0
            for address in (old, made.store_address):
                proxy = TcpProxy(database.port or 5432, database.host or "127.0.0.1", listen_host=address, port=port)
                proxy.start()
                proxies.append(proxy)
                port = proxy.port
            env["DATABASE_URL"] = database.set(host="pg-primary", port=port).render_as_string(hide_password=False)
            host = made.hosts["web"]
            made.resolve("web", {"pg-primary": old})
            web_port = free_port()
            web = HostProcess(host, "web", {**env, "WEB_BIND": f"0.0.0.0:{web_port}"}).start()
            wait_http_ok(f"http://{host.address}:{web_port}/healthz", process=web)
            yield made, host, web_port, old
        finally:
            if web is not None:
                web.close()
            for proxy in proxies:
                proxy.stop()
    assert made.leftovers() == [], "the test must remove every namespace and link it made"


def test_the_intake_accepts_deliveries_again_within_seconds_of_a_failover_that_took_the_old_address_away(
    web_host: tuple[Hosts, Host, int, str],
) -> None:
    made, host, port, old = web_host
    seconds = 5 + AFTER_FAILOVER_SECONDS
    sender = subprocess.Popen(
        host.command([sys.executable, "-c", _SENDER, str(port), str(seconds)]),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(5)
        made.resolve("web", {"pg-primary": made.store_address})
        made.drop_store_address(old)
        failover_at = time.monotonic()
        out, _ = sender.communicate(timeout=seconds + 120)
    finally:
        sender.kill()
    answers = [(round(sent - failover_at, 1), status) for sent, status in json.loads(out)]
    assert {status for at, status in answers if at < 0} == {202}, answers
    late = [(at, status) for at, status in answers if at >= RECOVERY_SECONDS]
    assert late, "no delivery was sent long enough after the failover"
    assert {status for _, status in late} == {202}, f"(s after the failover, status) of every delivery: {answers}"
