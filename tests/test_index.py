import json
import shutil

import numpy as np
import pytest
import scipy.sparse as sp

from sparseir.errors import UsageError
from sparseir.index import IndexFormatError, IndexWriter, SparseIndex, open_index, write_index
from sparseir.index.format import ARRAYS


def random_vectors(n_docs=300, n_dims=64, density=0.1, seed=0):
    x = sp.random(n_docs, n_dims, density=density, format="csr", random_state=seed, dtype=np.float32)
    x.data *= 3
    return x


def build(tmp_path, x=None, quantize="float32", name="ix"):
    x = random_vectors() if x is None else x
    ids = [f"doc{i}" for i in range(x.shape[0])]
    terms = [f"t{j}" for j in range(x.shape[1])]
    return write_index(tmp_path / name, ids, x, terms, quantize=quantize), x


def test_round_trip_float32(tmp_path):
    path, x = build(tmp_path)
    ix = SparseIndex.load(path)
    assert (ix.n_docs, ix.n_dims, ix.n_postings) == (300, 64, x.nnz)
    assert isinstance(ix.docs, np.memmap)
    assert ix.doc_ids[5] == "doc5" and ix.terms[-1] == "t63"
    assert (ix.to_csr() != x).nnz == 0
    for t in range(ix.n_dims):  # postings sorted by document id
        assert (np.diff(ix.docs[ix.offsets[t]:ix.offsets[t + 1]].astype(np.int64)) > 0).all()


def test_uint8_quantisation_error_is_half_a_step(tmp_path):
    path, x = build(tmp_path, quantize="uint8")
    ix = SparseIndex.load(path)
    assert ix.impacts.dtype == np.uint8
    assert ix.scale == pytest.approx(x.data.max() / 255)
    err = abs(ix.to_csr() - x).max()
    assert err <= ix.scale / 2 + 1e-6
    assert ix.stats()["bytes_per_posting"] < SparseIndex.load(build(tmp_path, x, "float32", "f")[0]).stats()[
        "bytes_per_posting"]


def test_chunked_build_equals_one_shot(tmp_path):
    x = random_vectors(1000, 50)
    ids = [str(i) for i in range(1000)]
    with IndexWriter(tmp_path / "chunked", terms=[str(j) for j in range(50)], quantize="float32") as w:
        for s in range(0, 1000, 137):
            w.add(ids[s:s + 137], x[s:s + 137])
    one = SparseIndex.load(write_index(tmp_path / "one", ids, x, [str(j) for j in range(50)], quantize="float32"))
    chunked = SparseIndex.load(tmp_path / "chunked")
    for name in ("offsets", "docs", "impacts", "doc_nnz"):
        np.testing.assert_array_equal(getattr(one, name), getattr(chunked, name))


def test_empty_documents_are_counted(tmp_path):
    x = random_vectors(10, 8, 0.5).tolil()
    x[3, :] = 0
    path, _ = build(tmp_path, x.tocsr())
    ix = SparseIndex.load(path)
    assert ix.manifest["n_empty_docs"] >= 1 and ix.doc_nnz[3] == 0


def test_errors_leave_nothing_behind(tmp_path):
    x = random_vectors(10, 8)
    with pytest.raises(UsageError, match="duplicate document id 'a'"):
        write_index(tmp_path / "dup", ["a"] * 10, x, list("abcdefgh"))
    with pytest.raises(UsageError, match="non-negative"):
        write_index(tmp_path / "neg", [str(i) for i in range(10)], -x, list("abcdefgh"))
    with pytest.raises(RuntimeError):
        with IndexWriter(tmp_path / "crash", terms=list("abcdefgh")) as w:
            w.add([str(i) for i in range(10)], x)
            raise RuntimeError("encoder died")
    assert list(tmp_path.iterdir()) == []


def test_existing_index_needs_overwrite(tmp_path):
    path, x = build(tmp_path)
    with pytest.raises(UsageError, match="overwrite"):
        build(tmp_path)
    x2 = random_vectors(seed=3)
    write_index(path, [f"d{i}" for i in range(300)], x2, [f"t{j}" for j in range(64)], quantize="float32",
                overwrite=True)
    assert (SparseIndex.load(path).to_csr() != x2).nnz == 0
    assert [p.name for p in tmp_path.iterdir()] == ["ix"]
    assert len(list((path / "segments").glob("s*"))) == 2  # the previous commit's segment is kept a while


def test_overwrite_refuses_what_is_not_an_index(tmp_path):
    x = random_vectors(10, 8)
    ids, terms = [str(i) for i in range(10)], list("abcdefgh")
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not a sparseir index"):
        write_index(precious, ids, x, terms, overwrite=True)
    assert [p.name for p in precious.iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        write_index(tmp_path / "file" / "ix", ids, x, terms)
    empty = tmp_path / "empty"
    empty.mkdir()
    write_index(empty, ids, x, terms)  # an empty directory is fine
    assert open_index(empty).n_docs == 10


def _segment(path):
    return open_index(path).segments[0].path


def _manifest(seg):
    return json.loads((seg / "manifest.json").read_text())


def _rewrite(seg, m):
    """Write a manifest with a re-computed checksum (a hostile edit)."""
    from sparseir.index.format import checksum

    m = {k: v for k, v in m.items() if k != "checksum"}
    m["checksum"] = checksum(m)
    (seg / "manifest.json").write_text(json.dumps(m))


def test_wrong_version_missing_truncated_corrupt(tmp_path):
    path, _ = build(tmp_path)
    seg = _segment(path)
    m = _manifest(seg)

    def copy(name):
        shutil.copytree(seg, tmp_path / name)
        return tmp_path / name

    bad = copy("version")
    _rewrite(bad, {**m, "version": 99})
    with pytest.raises(IndexFormatError, match="version 99.*reads version 2"):
        SparseIndex.load(bad)
    _rewrite(bad, {**m, "version": "1"})
    with pytest.raises(IndexFormatError, match=r"version\.json|version '1' is not an integer"):
        SparseIndex.load(bad)
    _rewrite(bad, {**m, "version": 1})
    with pytest.raises(IndexFormatError, match="version 1.*sparseir >= 0.2"):
        SparseIndex.load(bad)
    (bad / "manifest.json").write_text(json.dumps([1, 2]))
    with pytest.raises(IndexFormatError, match="manifest.json.*JSON list"):
        SparseIndex.load(bad)
    _rewrite(bad, {k: v for k, v in m.items() if k != "n_dims"})
    with pytest.raises(IndexFormatError, match="manifest.json.*'n_dims'"):
        SparseIndex.load(bad)

    scaled = copy("scaled")
    (scaled / "manifest.json").write_text(json.dumps({**m, "scale": m["scale"] * 2}))
    with pytest.raises(IndexFormatError, match="manifest.json: segment manifest checksum mismatch"):
        SparseIndex.load(scaled)

    partial = copy("partial")
    (partial / "manifest.json").unlink()
    with pytest.raises(IndexFormatError, match="no manifest.json"):
        SparseIndex.load(partial)

    missing = copy("missing")
    (missing / ARRAYS["docs"]).unlink()
    with pytest.raises(IndexFormatError, match="missing array file"):
        SparseIndex.load(missing)

    truncated = copy("truncated")
    f = truncated / ARRAYS["impacts"]
    f.write_bytes(f.read_bytes()[:-40])
    with pytest.raises(IndexFormatError, match="checksum"):
        SparseIndex.load(truncated)
    with pytest.raises(IndexFormatError, match="truncated|disagree"):
        SparseIndex.load(truncated, verify=False)

    corrupt = copy("corrupt")
    f = corrupt / ARRAYS["docs"]
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="checksum mismatch"):
        SparseIndex.load(corrupt)

    garbled = copy("garbled")
    (garbled / "manifest.json").write_text("{not json")
    with pytest.raises(IndexFormatError, match="corrupt segment manifest"):
        SparseIndex.load(garbled)


def test_version_1_index_gets_a_rebuild_error(tmp_path):
    v1 = tmp_path / "v1"
    v1.mkdir()
    (v1 / "manifest.json").write_text(json.dumps({"format": "sparseir-index", "version": 1, "n_docs": 1}))
    with pytest.raises(IndexFormatError, match="version 1.*sparseir >= 0.2"):
        open_index(v1)
    x = random_vectors(10, 8)
    write_index(v1, [str(i) for i in range(10)], x, list("abcdefgh"), overwrite=True)  # a sparseir index: replaced
    assert open_index(v1).n_docs == 10 and not (v1 / "manifest.json").exists()


def test_stats(tmp_path):
    path, x = build(tmp_path)
    s = SparseIndex.load(path).stats()
    assert s["n_postings"] == x.nnz and sum(s["weight_histogram"]["counts"]) == x.nnz
    assert s["bytes"] > x.nnz * 8
