"""RFC 9162 tree, proofs and verifiers against the public vectors and the reference MTH."""

from __future__ import annotations

import json

import pytest

from ledger.hashing import b64, leaf_hash, unb64
from ledger.merkle import (
    Frontier,
    ProofError,
    consistency_proof,
    consistency_proof_from_leaves,
    consistency_proof_plan,
    frontier_node_ids,
    inclusion_proof,
    inclusion_proof_from_leaves,
    inclusion_proof_plan,
    root_at,
    root_from_leaves,
    root_plan,
    verify_consistency,
    verify_inclusion,
)
from ledger.tests.rfc9162 import LEAVES, TREE, VECTORS, vector_files


def build_store(leaves: list[bytes]) -> dict[tuple[int, int], bytes]:
    """What the service's node table holds after appending `leaves` one by one."""
    frontier, store = Frontier(), {}
    for leaf in leaves:
        for level, index, h in frontier.append(leaf):
            assert (level, index) not in store, "a stored node is written once"
            store[(level, index)] = h
    return store


def fetch(store: dict, plan: list[tuple[int, int]]) -> dict:
    return {nid: store[nid] for nid in plan}


def check_vector(case: dict, fields: tuple[str, ...], verify) -> bool:
    """Run `verify` on the vector's fields (hashes decoded): it must refuse a wantErr case and accept
    the others. False when the case is refused already by its encoding (no verifier call)."""

    def decoded(field: str):
        value = case[field]
        if field == "proof":
            return [unb64(v) for v in value or []]
        return unb64(value) if isinstance(value, str) else value

    try:
        args = [decoded(f) for f in fields]
    except ValueError:
        assert case["wantErr"], "a happy case must decode"
        return False
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify(*args)
    else:
        verify(*args)
    return True


def assert_proof_from_stored_nodes(case: dict, proof: list[bytes]) -> None:
    """The proof built from the stored nodes is the happy path's, hash for hash."""
    assert [b64(h) for h in proof] == (case["proof"] or [])


def test_vectors_are_present():
    assert len(vector_files("inclusion")) > 50 and len(vector_files("consistency")) > 50


@pytest.mark.parametrize("size", range(9))
def test_roots_of_tree_json(size):
    want = bytes.fromhex(TREE["root_hashes_hex_by_size"][size])
    assert root_from_leaves(LEAVES[:size]) == want
    store = build_store(LEAVES)
    assert root_at(size, fetch(store, root_plan(size))) == want
    frontier = Frontier.from_nodes(size, fetch(build_store(LEAVES[:size]), frontier_node_ids(size)))
    assert frontier.size == size and frontier.root() == want


def test_frontier_resumes_from_stored_nodes():
    leaves = [leaf_hash(b"%d" % i) for i in range(40)]
    store = build_store(leaves[:23])
    frontier = Frontier.from_nodes(23, fetch(store, frontier_node_ids(23)))
    for leaf in leaves[23:]:
        for level, index, h in frontier.append(leaf):
            store[(level, index)] = h
    assert store == build_store(leaves)
    assert frontier.root() == root_from_leaves(leaves)


@pytest.mark.parametrize("path", vector_files("inclusion"), ids=lambda p: str(p.relative_to(VECTORS)))
def test_inclusion_vector(path):
    case = json.loads(path.read_text())
    fields = ("leafHash", "leafIdx", "treeSize", "proof", "root")
    if not check_vector(case, fields, verify_inclusion):
        return
    if path.name == "happy-path.json":
        index, size = case["leafIdx"], case["treeSize"]
        store = build_store(LEAVES[:size])
        assert_proof_from_stored_nodes(
            case, inclusion_proof(index, size, fetch(store, inclusion_proof_plan(index, size)))
        )
        assert root_at(size, store) == unb64(case["root"])


@pytest.mark.parametrize("path", vector_files("consistency"), ids=lambda p: str(p.relative_to(VECTORS)))
def test_consistency_vector(path):
    case = json.loads(path.read_text())
    if not check_vector(case, ("size1", "size2", "root1", "root2", "proof"), verify_consistency):
        return
    if path.name == "happy-path.json":
        size1, size2 = case["size1"], case["size2"]
        nodes = fetch(build_store(LEAVES[:size2]), consistency_proof_plan(size1, size2))
        assert_proof_from_stored_nodes(case, consistency_proof(size1, size2, nodes))


def test_stored_node_proofs_match_reference_for_sizes_up_to_70():
    leaves = [leaf_hash(b"entry %d" % i) for i in range(70)]
    store = build_store(leaves)
    max_nodes = 0
    for size in range(1, 71):
        root = root_from_leaves(leaves[:size])
        assert root_at(size, fetch(store, root_plan(size))) == root
        for index in range(size):
            plan = inclusion_proof_plan(index, size)
            max_nodes = max(max_nodes, len(plan))
            proof = inclusion_proof(index, size, fetch(store, plan))
            assert proof == inclusion_proof_from_leaves(index, leaves[:size])
            verify_inclusion(leaves[index], index, size, proof, root)
        for size1 in range(1, size + 1):
            plan = consistency_proof_plan(size1, size)
            max_nodes = max(max_nodes, len(plan))
            proof = consistency_proof(size1, size, fetch(store, plan))
            assert proof == consistency_proof_from_leaves(size1, leaves[:size])
            verify_consistency(size1, size, root_from_leaves(leaves[:size1]), root, proof)
    assert max_nodes <= 2 * 7  # O(log n): at most ~2·log2(70) stored nodes


def test_proof_plans_stay_logarithmic_for_big_trees():
    size = 10**12 + 12345
    assert len(inclusion_proof_plan(size // 3, size)) <= 2 * size.bit_length()
    assert len(consistency_proof_plan(size // 3, size)) <= 2 * size.bit_length()
    assert len(root_plan(size)) <= size.bit_length()


def test_tampered_proofs_are_refused():
    leaves = [leaf_hash(b"%d" % i) for i in range(13)]
    root = root_from_leaves(leaves)
    proof = inclusion_proof_from_leaves(5, leaves)
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
        with pytest.raises(ProofError):
            verify_inclusion(leaves[5], 5, 13, bad, root)
    with pytest.raises(ProofError):
        verify_inclusion(leaves[5], 6, 13, proof, root)
    with pytest.raises(ProofError, match="too long"):
        verify_inclusion(leaves[5], 5, 13, proof + [root], root)
    with pytest.raises(ProofError, match="too short"):
        verify_inclusion(leaves[5], 5, 13, proof[:-1], root)
    with pytest.raises(ProofError):
        verify_inclusion(leaves[5], 13, 13, proof, root)


@pytest.mark.parametrize(
    "call",
    [
        lambda: inclusion_proof_plan(3, 3),
        lambda: inclusion_proof_plan(0, 0),
        lambda: inclusion_proof_plan(-1, 4),
        lambda: consistency_proof_plan(5, 4),
        lambda: consistency_proof_plan(0, 4),
        lambda: root_plan(-1),
        lambda: root_at(3, {}),  # missing stored nodes
    ],
)
def test_out_of_range_arguments(call):
    with pytest.raises(ValueError):
        call()
