"""RFC 9162 Merkle trees over SHA-256: tree heads, inclusion and consistency proofs.

Standard library only: the incident log's verifier (which must not import
server code) and the server both use this module. Leaves are hashed with a
0x00 prefix and inner nodes with 0x01 (RFC 9162 section 2.1.1), so a leaf can
never pass for a node. Functions take *leaf hashes* (32 bytes each), not raw
entries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from panicbutton.errors import PanicbuttonError

EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(PanicbuttonError, ValueError):
    """A proof that does not prove what it claims; the message says where it fails."""


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) for the given leaf hashes."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(root(leaves[:k]), root(leaves[k:]))


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]): the audit path of leaf ``index`` in the tree of ``leaves``."""
    if not 0 <= index < len(leaves):
        raise ValueError(f"leaf {index} is not in a tree of {len(leaves)}")
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*inclusion_proof(index, leaves[:k]), root(leaves[k:])]
    return [*inclusion_proof(index - k, leaves[k:]), root(leaves[:k])]


def consistency_proof(size1: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]): proves the tree of the first ``size1`` leaves is a prefix."""
    if not 0 <= size1 <= len(leaves):
        raise ValueError(f"size {size1} is not within a tree of {len(leaves)}")
    if size1 in (0, len(leaves)):
        return []
    return _subproof(size1, leaves, complete=True)


def _subproof(m: int, leaves: Sequence[bytes], *, complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [root(leaves)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], complete=complete), root(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], complete=False), root(leaves[:k])]


def consistency_proof_from(size1: int, edge: Sequence[bytes], new: Sequence[bytes]) -> list[bytes]:
    """PROOF(size1, D[size1 + len(new)]) from the old tree's right edge alone (the roots
    of its perfect subtrees, largest first) and the leaf hashes after it: the nodes a
    consistency proof takes from the old tree are exactly those subtrees."""
    size2 = size1 + len(new)
    if size1 <= 0 or len(edge) != size1.bit_count():
        raise ValueError(f"a tree of {size1} has {size1.bit_count()} edge hashes")
    nodes, start = {}, 0
    for bit, h in zip(
        (b for b in (1 << i for i in reversed(range(size1.bit_length()))) if size1 & b),
        edge,
        strict=True,
    ):
        nodes[start, start + bit] = h
        start += bit

    def mth(a: int, b: int) -> bytes:
        if (a, b) in nodes:
            return nodes[a, b]
        if a < size1:
            raise ValueError(f"leaves {a}..{b - 1} are not a subtree of the old tree's edge")
        return root(new[a - size1 : b - size1])

    def sub(a: int, b: int, *, complete: bool) -> list[bytes]:
        if size1 == b:
            return [] if complete else [mth(a, b)]
        k = _split(b - a)
        if size1 <= a + k:
            return [*sub(a, a + k, complete=complete), mth(a + k, b)]
        return [*sub(a + k, b, complete=False), mth(a, a + k)]

    return sub(0, size2, complete=True)


def _check_hashes(*hashes: bytes) -> None:
    for h in hashes:
        if len(h) != 32:
            raise ProofError(f"a hash must be 32 bytes (SHA-256), got {len(h)}")


def _lift(fn: int, sn: int) -> tuple[int, int]:
    """Right-shift both until LSB(fn) is set or fn is 0 (the last node of a level)."""
    while not fn & 1 and fn != 0:
        fn >>= 1
        sn >>= 1
    return fn, sn


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], expected_root: bytes
) -> None:
    """RFC 9162 section 2.1.3.2; raises :class:`ProofError` unless ``leaf`` is at
    ``index`` in the tree of ``size`` with ``expected_root``."""
    _check_hashes(leaf, expected_root, *proof)
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            fn, sn = _lift(fn, sn)
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the tree is deep")
    if r != expected_root:
        raise ProofError("inclusion proof does not lead to the root")


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 section 2.1.4.2; raises :class:`ProofError` unless the tree of
    ``size1`` with ``root1`` is a prefix of the tree of ``size2`` with ``root2``.
    An empty earlier tree proves nothing and is refused."""
    if size1 <= 0 or size2 < size1:
        raise ProofError(f"no consistency from size {size1} to size {size2}")
    if size1 == size2:
        if proof or root1 != root2:
            raise ProofError("trees of equal size need an empty proof and equal roots")
        return
    if not proof:
        raise ProofError("consistency proof is empty")
    _check_hashes(root1, root2, *proof)
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # an exact power of two: the old root is a node
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is longer than needed")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            fn, sn = _lift(fn, sn)
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is shorter than needed")
    if (fr, sr) != (root1, root2):
        raise ProofError("consistency proof does not lead to both roots")
