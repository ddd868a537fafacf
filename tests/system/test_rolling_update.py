"""A rolling update and a crash behind a load balancer, with every piece a real process.

Three replicas share one Redis behind HAProxy (standing in for swarm's routing mesh). Clients
follow the room through HAProxy and reconnect by themselves, as EventSource does; a poster posts
all along. Each replica in turn is SIGTERMed and restarted, then one is SIGKILLed and restarted:
every message whose POST got 201 reaches every client exactly once, in order.
"""

from __future__ import annotations

from collections import Counter

import trio

from ..integration.support import TIMEOUT
from .clients import EventSourceClient, Poster, delivery_faults
from .conftest import Cluster
from .processes import ReplicaProcess

CLIENTS = 4
STEP = 20  # messages accepted after each change, so that traffic flows through every one
DEADLINE = 120  # seconds for the whole scenario


def _streams_on(replica: ReplicaProcess, clients: list[EventSourceClient]) -> int:
    return sum(client.replica == replica.replica_id for client in clients)


async def test_a_rolling_update_and_a_crash_lose_and_duplicate_no_accepted_message(
    cluster: Cluster,
) -> None:
    clients = [EventSourceClient(f"c{n}", cluster.url) for n in range(1, CLIENTS + 1)]
    poster = Poster(cluster.url)
    stops: list[str] = []  # what each stop did, for the summary
    exit_codes: dict[str, int] = {}
    began = trio.current_time()
    try:
        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:
                for client in clients:
                    nursery.start_soon(client.run)
                with trio.fail_after(TIMEOUT):
                    for client in clients:
                        await client.connected.wait()
                nursery.start_soon(poster.run)
                await poster.accepted_count_reaches(STEP)

                for replica in cluster.replicas:  # the rolling update, one replica at a time
                    streams = _streams_on(replica, clients)
                    sent = trio.current_time()
                    poster.phase = f"{replica.replica_id} TERM"
                    exit_codes[replica.replica_id] = await replica.terminate()
                    took = trio.current_time() - sent
                    stops.append(f"{replica.replica_id} TERM {streams} streams {took:.2f}s")
                    poster.phase = f"{replica.replica_id} restart"
                    await cluster.restart(replica)
                    poster.phase = "steady"
                    await poster.accepted_count_reaches(len(poster.accepted) + STEP)

                # The crash hits the replica serving the most streams (one has two or more).
                victim = max(cluster.replicas, key=lambda replica: _streams_on(replica, clients))
                streams = _streams_on(victim, clients)
                poster.phase = f"{victim.replica_id} KILL"
                killed = await victim.kill()
                stops.append(f"{victim.replica_id} KILL {streams} streams")
                poster.phase = f"{victim.replica_id} restart"
                await cluster.restart(victim)
                poster.phase = "steady"
                await poster.accepted_count_reaches(len(poster.accepted) + STEP)

                poster.stop.set()
                await poster.stopped.wait()
                wanted = {message["id"] for message in poster.accepted}
                # A lost message never comes: stop waiting, and let the checks below name it.
                with trio.move_on_after(TIMEOUT):
                    while not all(client.has_all(wanted) for client in clients):  # noqa: ASYNC110
                        await trio.sleep(0.02)  # nothing signals "all delivered": poll
                nursery.cancel_scope.cancel()
    except BaseException:
        print(cluster.logs())  # shown by pytest with the failure
        raise
    finally:
        faults = {client.name: delivery_faults(client, poster) for client in clients}
        endings = sum((client.endings for client in clients), Counter[str]())
        print(
            f"\ncluster: posted {poster.posted}, accepted {len(poster.accepted)},"
            f" refused {len(poster.refused)} {dict(Counter(poster.refused.values()))};"
            f" delivered {', '.join(f'{c.name} {len(c.messages)}' for c in clients)};"
            f" lost {sum(f['lost'] for f in faults.values())},"
            f" duplicated {sum(f['duplicated'] for f in faults.values())};"
            f" stream endings {dict(endings)}; {'; '.join(stops)};"
            f" {trio.current_time() - began:.1f}s"
        )

    assert exit_codes == {replica.replica_id: 0 for replica in cluster.replicas}, cluster.logs()
    assert killed == -9
    assert len(poster.accepted) >= STEP * (len(cluster.replicas) + 2)
    for name, fault in faults.items():
        assert not any(fault.values()), f"{name}: {fault}"
    # The changes did cut streams, and the clients came back by themselves.
    assert sum(len(client.streams) for client in clients) > len(clients)
