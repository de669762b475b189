"""Federated computational governance: who reads which product, masked how, which rows.

The Casbin model ships here (``model.conf``); the mesh's rules live in its ``policies/`` folder
(see :mod:`policies.source` for their format, ``policies/demo/`` for the demo mesh's rules).
"""

from __future__ import annotations

from policies.engine import PolicyEngine, ProductDecision
from policies.explain import explain
from policies.masks import MASK_KINDS, Mask

__all__ = ["MASK_KINDS", "Mask", "PolicyEngine", "ProductDecision", "explain"]
