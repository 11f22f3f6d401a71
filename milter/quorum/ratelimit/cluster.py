"""Buckets on a Redis Cluster: one script call per hash slot, all sent before any reply is read.

A message's buckets live on several masters (each subject is its own hash tag). The calls are
written to every master first and the replies read afterwards, so the whole reservation costs
one network round trip. Each call is atomic on its slot; all-or-none across slots is kept by
releasing the slots that admitted when another refused or failed. Concurrent senders can thus
never pass the limit; at worst a message is refused because of a reservation that is being
undone at that instant.

redis-py's ClusterPipeline is not used: it refuses EVALSHA and resolves keys of script calls
with an extra COMMAND GETKEYS round trip. Slot routing comes from the RedisCluster client; on a
redirection (MOVED/ASK, a failover or resharding) or a node error the slot table is refreshed
before the next call and this call fails, so the limiter falls back for a moment.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from redis.cluster import RedisCluster
from redis.exceptions import AskError, ClusterDownError, MovedError, NoScriptError, ResponseError, TryAgainError

from quorum.ratelimit.backend import OPS, SCRIPT, SHA, Answer, parse_answer, script_call
from quorum.ratelimit.buckets import Charge

Call = tuple[Sequence[str], Sequence[str | int]]  # KEYS, ARGV
_TOPOLOGY_ERRORS = (MovedError, AskError, ClusterDownError, TryAgainError)


@functools.cache
def _wants_command_name(pool_type: Any) -> bool:
    """redis-py < 5.3 requires `get_connection(command_name, ...)`; 5.3 made it optional and
    deprecated (a DeprecationWarning when given)."""
    try:
        parameter = inspect.signature(pool_type.get_connection).parameters.get("command_name")
    except (TypeError, ValueError):
        return True
    return parameter is not None and parameter.default is inspect.Parameter.empty


def checkout(pool: Any, command: str) -> Any:
    """A connection from `pool`, however this redis-py version spells it."""
    return pool.get_connection(command) if _wants_command_name(pool.__class__) else pool.get_connection()


class ClusterBackend:
    name = "cluster"

    def __init__(self, client: RedisCluster, clock: Callable[[], int] | None = None) -> None:
        self.client = client
        self.clock = clock
        self._stale = False

    def _now(self) -> str:
        return str(self.clock()) if self.clock is not None else ""

    def slots(self, keys: Sequence[str]) -> list[list[int]]:
        """Indexes of `keys` grouped by hash slot, in order of first appearance."""
        groups: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(self.client.keyslot(key), []).append(i)
        return list(groups.values())

    def node_of(self, key: str) -> str:
        return str(self.client.get_node_from_key(key).name)

    # -- one round trip to every master involved -----------------------------------------------
    def fan_out(self, calls: Sequence[Call]) -> list[Any]:
        """Run each (keys, args) script call on its slot's master; a reply or an exception each."""
        results = self._send(calls, "EVALSHA", SHA)
        again = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if again:  # a restarted or flushed node: EVAL runs the script and caches it again
            for i, r in zip(again, self._send([calls[i] for i in again], "EVAL", SCRIPT), strict=True):
                results[i] = r
        return results

    def _send(self, calls: Sequence[Call], command: str, script: str) -> list[Any]:
        results: list[Any] = [None] * len(calls)
        by_node: dict[str, tuple[Any, list[int]]] = {}
        try:
            if self._stale:
                self.client.nodes_manager.initialize()
                self._stale = False
            for i, (keys, _args) in enumerate(calls):
                node = self.client.get_node_from_key(keys[0])
                by_node.setdefault(node.name, (node, []))[1].append(i)
        except Exception:
            self._stale = True
            raise
        sent: list[tuple[Any, Any, list[int]]] = []
        for node, idxs in by_node.values():
            pool = self.client.get_redis_connection(node).connection_pool
            try:
                conn = checkout(pool, command)
            except Exception as exc:
                self._fail(results, idxs, exc)
                continue
            try:
                packed = [(command, script, len(calls[i][0]), *calls[i][0], *calls[i][1]) for i in idxs]
                conn.send_packed_command(conn.pack_commands(packed))
            except Exception as exc:
                conn.disconnect()
                pool.release(conn)
                self._fail(results, idxs, exc)
                continue
            sent.append((pool, conn, idxs))
        for pool, conn, idxs in sent:
            n = 0
            try:
                for i in idxs:
                    try:
                        results[i] = conn.read_response()
                    except ResponseError as exc:
                        results[i] = exc
                        if isinstance(exc, _TOPOLOGY_ERRORS):
                            self._stale = True
                    n += 1
            except Exception as exc:
                conn.disconnect()
                self._fail(results, idxs[n:], exc)
            finally:
                pool.release(conn)
        return results

    def _fail(self, results: list[Any], idxs: Sequence[int], exc: Exception) -> None:
        self._stale = True
        for i in idxs:
            results[i] = exc

    # -- Backend -----------------------------------------------------------------------------
    def run(self, op: str, charges: Sequence[Charge]) -> Answer:
        if op not in OPS:
            raise ValueError(f"unknown op {op!r}")
        groups = self.slots([c.key for c in charges])
        now = self._now()
        calls = [script_call(op, [charges[i] for i in g], now) for g in groups]
        replies = self.fan_out(calls)
        errors = [r for r in replies if isinstance(r, Exception)]
        answers = [None if isinstance(r, Exception) else parse_answer(r) for r in replies]
        refused = [(a.wait_us, g[a.refused]) for a, g in zip(answers, groups, strict=True) if a and not a.admitted]
        if op == "reserve" and (errors or refused):
            taken = [c for c, a in zip(calls, answers, strict=True) if a and a.admitted]
            if taken:
                self.fan_out([(keys, ["release", *args[1:]]) for keys, args in taken])  # best effort
        if errors:
            raise errors[0]
        if refused:
            wait, index = max(refused, key=lambda r: (r[0], -r[1]))  # the first of the slowest, like the script
            return Answer(False, index, wait)
        return Answer(True)

    def peek(self, keys: Sequence[str]) -> tuple[int, list[int]]:
        groups = self.slots(keys)
        replies = self.fan_out([([keys[i] for i in g], ["peek", self._now()]) for g in groups])
        tats = [0] * len(keys)
        base = 0
        for g, reply in zip(groups, replies, strict=True):
            if isinstance(reply, Exception):
                raise reply
            now = int(reply[0])
            base = base or now
            for i, tat in zip(g, reply[1:], strict=True):
                tats[i] = int(tat) - now + base if int(tat) else 0  # on the first node's clock
        return base, tats

    def delete(self, keys: Sequence[str]) -> int:
        return sum(int(self.client.delete(k)) for k in keys)

    def close(self) -> None:
        self.client.close()
