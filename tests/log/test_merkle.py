"""RFC 9162 Merkle trees: the published vectors both ways, and properties."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from panicbutton.log.merkle import (
    EMPTY_ROOT,
    ProofError,
    consistency_proof,
    consistency_proof_from,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)
from tests.conftest import missing

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "merkle-vectors"


def vectors(kind: str) -> list[Any]:
    if not VECTORS.is_dir():
        return [pytest.param(None, id="vectors-missing")]
    return [
        pytest.param(path, id=str(path.relative_to(VECTORS / kind)))
        for path in sorted((VECTORS / kind).rglob("*.json"))
    ]


def load(path: Path | None) -> dict[str, Any]:
    if path is None:
        missing(f"Merkle test vectors not found at {VECTORS} (../shared beside the project)")
    assert path is not None
    return dict(json.loads(path.read_text()))


def b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


@pytest.mark.parametrize("path", vectors("inclusion"))
def test_inclusion_vectors(path: Path | None) -> None:
    case = load(path)
    args = (
        case["leafIdx"],
        case["treeSize"],
        b64(case["leafHash"]),
        [b64(p) for p in case["proof"] or []],
        b64(case["root"]),
    )
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", vectors("consistency"))
def test_consistency_vectors(path: Path | None) -> None:
    case = load(path)
    args = (
        case["size1"],
        case["size2"],
        b64(case["root1"]),
        b64(case["root2"]),
        [b64(p) for p in case["proof"] or []],
    )
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_known_answers_from_rfc_construction() -> None:
    a, b, c = (leaf_hash(x) for x in (b"a", b"b", b"c"))
    assert root([]) == EMPTY_ROOT
    assert root([a]) == a
    assert root([a, b, c]) == node_hash(node_hash(a, b), c)
    assert leaf_hash(b"") == bytes.fromhex(
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )


leaves = st.lists(st.binary(max_size=8), min_size=1, max_size=40).map(
    lambda xs: [leaf_hash(x) for x in xs]
)


@given(leaves, st.data())
def test_every_leaf_has_a_proof_and_no_other_leaf_fits_it(
    hashes: list[bytes], data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(hashes) - 1))
    proof = inclusion_proof(index, hashes)
    verify_inclusion(index, len(hashes), hashes[index], proof, root(hashes))
    with pytest.raises(ProofError):
        verify_inclusion(index, len(hashes), leaf_hash(b"forged"), proof, root(hashes))


@given(leaves)
def test_consistency_proofs_verify_for_every_pair_of_sizes(hashes: list[bytes]) -> None:
    for size2 in range(1, len(hashes) + 1):
        for size1 in range(1, size2 + 1):
            proof = consistency_proof(size1, hashes[:size2])
            verify_consistency(size1, size2, root(hashes[:size1]), root(hashes[:size2]), proof)


@given(leaves, st.data())
def test_a_changed_old_entry_breaks_consistency(hashes: list[bytes], data: st.DataObject) -> None:
    size1 = data.draw(st.integers(1, len(hashes)))
    changed = data.draw(st.integers(0, size1 - 1))
    rewritten = [*hashes]
    rewritten[changed] = leaf_hash(b"rewritten history")
    proof = consistency_proof(size1, rewritten)
    with pytest.raises(ProofError):
        verify_consistency(size1, len(hashes), root(hashes[:size1]), root(rewritten), proof)


def test_a_proof_from_the_old_trees_edge_is_the_proof_from_all_its_leaves() -> None:
    """The log keeper proves the log's new head consistent with its last checkpoint from
    that tree's edge (kept in memory) and the new leaves only."""
    from panicbutton.log.spec import Frontier  # noqa: PLC0415 - spec is above merkle

    hashes = [leaf_hash(bytes([i])) for i in range(70)]
    for size1 in range(1, 40):
        edge = Frontier()
        for h in hashes[:size1]:
            edge.append(h)
        for size2 in range(size1, 70):
            new = hashes[size1:size2]
            proof = consistency_proof_from(size1, edge.hashes, new)
            assert proof == consistency_proof(size1, hashes[:size2])
            verify_consistency(size1, size2, edge.root(), root(hashes[:size2]), proof)
