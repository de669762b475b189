"""Recently made plans, so a statement is planned once rather than at every Flight call.

An ADBC or JDBC client sends one query as up to four calls (prepare, bind, GetFlightInfo, DoGet),
and each needs the plan; planning (parse, govern, schema inference, pushdown, split) costs
milliseconds. A plan depends only on the statement, the classes of the bound values (a plan is
a template other values of the same classes are bound into), the principal (name, roles,
attributes) and the policy in force, so those make the key; the gateway bumps its policy
generation when the policy files change, which retires every plan made under the old policy.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

from gateway.principals import Principal

V = TypeVar("V")

PLAN_CACHE_SIZE = 1024


def plan_key(
    sql: str, principal: Principal, parameters: Hashable, policy_generation: int
) -> Hashable:
    """Everything a plan depends on besides the (fixed) mesh and stores; ``parameters`` is what
    of the bound values it depends on (planner.parameters)."""
    return (
        sql,
        principal.cache_key(),
        parameters,
        policy_generation,
    )


class PlanCache(Generic[V]):
    """A thread-safe LRU of plans (or of anything else worked out per statement and principal:
    parameter types, listings) with hit and miss counts.

    Every Flight call looks a plan up, so lookups take no lock of their own: OrderedDict's
    ``get`` and ``move_to_end`` are each one call into C, atomic under the GIL (a Python lock
    here made 19 of 32 server threads wait in line for it at 32 clients). Only adding, which
    evicts, is locked.
    """

    def __init__(self, size: int = PLAN_CACHE_SIZE):
        self.size = size
        self.hits = 0
        self.misses = 0
        self._plans: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, *keys: Hashable) -> V | None:
        """The plan under the first of ``keys`` that has one."""
        for key in keys:
            plan = self._plans.get(key)
            if plan is not None:
                with contextlib.suppress(KeyError):  # evicted meanwhile: still a good plan
                    self._plans.move_to_end(key)
                self.hits += 1
                return plan
        self.misses += 1
        return None

    def put(self, key: Hashable, plan: V) -> None:
        with self._lock:
            self._plans[key] = plan
            self._plans.move_to_end(key)
            while len(self._plans) > self.size:
                self._plans.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._plans.clear()

    def __len__(self) -> int:
        return len(self._plans)
