"""SAE model and trainer: dictionary recovery, AuxK, checkpoint/resume, the encoder round trip."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sparseir._fs import FileLock
from sparseir.cli import main
from sparseir.errors import LockError
from sparseir.sae.checkpoint import DIAGNOSTICS, FREQ_HIST, LABELS, load_sae
from sparseir.sae.diagnostics import scan
from sparseir.sae.finalize import finalize_sae
from sparseir.sae.model import SAEConfig, SparseAutoencoder
from sparseir.sae.store import ActivationStore, StoreWriter
from sparseir.sae.train import TrainConfig, train_sae

from conftest import MINILM


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def synthetic_store(path: Path, d: int, n_atoms: int, n: int, s: int, seed: int = 0, meta: dict | None = None):
    """Rows that are sparse non-negative combinations of ``s`` of ``n_atoms`` unit atoms."""
    rng = np.random.default_rng(seed)
    atoms = rng.normal(size=(n_atoms, d))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    idx = np.argsort(rng.random((n, n_atoms)), axis=1)[:, :s]
    codes = np.zeros((n, n_atoms))
    np.put_along_axis(codes, idx, rng.uniform(0.5, 1.5, (n, s)), 1)
    x = codes @ atoms
    texts = [f"text {i} about topic {int(idx[i, 0])}" for i in range(n)]
    with StoreWriter(path, n, d, meta or {"kind": "embedding", "model": "synthetic"}, dtype="float32") as w:
        w.acts[:] = x
        w.row_text[:] = np.arange(n)
        w.texts = [{"id": str(i), "text": t} for i, t in enumerate(texts)]
    return ActivationStore(path), atoms


def test_topk_shapes_and_unit_decoder():
    torch.manual_seed(0)
    sae = SparseAutoencoder(SAEConfig(d_in=8, n_latents=32, k=3, matryoshka=(8, 16)))
    assert sae.cfg.matryoshka == (8, 16, 32)
    assert torch.allclose(sae.W_dec.norm(dim=0), torch.ones(32), atol=1e-5)
    assert torch.allclose(sae.W_enc, sae.W_dec.t())
    x = torch.randn(10, 8)
    out = sae(x)
    assert ((out.latents > 0).sum(-1) <= 3).all()
    out.loss.backward()
    sae.project_decoder_grad()
    assert torch.allclose((sae.W_dec.grad * sae.W_dec).sum(0), torch.zeros(32), atol=1e-5)
    z = sae.eval().encode(x, k=2)
    assert ((z > 0).sum(-1) <= 2).all() and (z >= 0).all()


def test_similarity_term_ranks_codes_like_inputs():
    torch.manual_seed(0)
    sae = SparseAutoencoder(SAEConfig(d_in=16, n_latents=64, k=4, sim_coef=1.0))
    x = torch.randn(32, 16)
    out = sae(x)
    assert out.sim_loss > 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert sae.W_enc.grad.abs().sum() > 0 and sae.sim_log_scale.grad is not None


def test_batchtopk_learns_an_inference_threshold():
    torch.manual_seed(0)
    sae = SparseAutoencoder(SAEConfig(d_in=8, n_latents=32, k=3, activation="batchtopk"))
    x = torch.randn(64, 8)
    sae(x)
    assert sae.threshold > 0
    z = sae.eval().encode(x)
    assert (z[z > 0] >= sae.threshold).all()


def test_config_rejects_bad_values():
    with pytest.raises(ValueError):
        SAEConfig(d_in=8, n_latents=16, k=0)
    with pytest.raises(ValueError):
        SAEConfig(d_in=8, n_latents=16, k=2, activation="relu")
    with pytest.raises(ValueError):
        SAEConfig(d_in=8, n_latents=16, k=2, matryoshka=(8, 4))


@pytest.mark.parametrize("activation", ["topk", "batchtopk"])
def test_recovers_known_dictionary(tmp_path, activation):
    store, atoms = synthetic_store(tmp_path / "acts", d=16, n_atoms=24, n=6000, s=2)
    model, info = train_sae(
        store,
        tmp_path / "sae",
        SAEConfig(d_in=16, n_latents=48, k=2, activation=activation, dead_after=2000),
        TrainConfig(batch_size=64, epochs=3, lr=3e-3, warmup_steps=20),
        progress=False,
    )
    cos = atoms @ model.W_dec.detach().numpy()
    assert cos.max(1).mean() >= 0.9
    res = scan(model, store, progress=False)
    assert res.fvu < 0.2
    assert res.l0 <= 2.0 + 1e-6 if activation == "topk" else res.l0 > 0
    assert info["log"] and {"fvu", "l0", "dead_frac", "aux_loss"} <= set(info["log"][-1])


def test_auxk_lowers_dead_fraction(tmp_path):
    store, _ = synthetic_store(tmp_path / "acts", d=32, n_atoms=256, n=8000, s=4)
    dead = {}
    for aux in (1.0 / 32, 0.0):
        model, _ = train_sae(
            store,
            tmp_path / f"sae{aux}",
            SAEConfig(d_in=32, n_latents=512, k=4, aux_coef=aux, aux_k=16, dead_after=2000),
            TrainConfig(batch_size=128, epochs=4, lr=1e-2),
            progress=False,
        )
        dead[aux] = scan(model, store, progress=False).dead_frac
    assert dead[1.0 / 32] < dead[0.0]


def test_checkpoint_resume_matches_uninterrupted_run(tmp_path):
    store, _ = synthetic_store(tmp_path / "acts", d=8, n_atoms=12, n=2000, s=2)
    sae_cfg = SAEConfig(d_in=8, n_latents=16, k=2, dead_after=500)
    train_cfg = TrainConfig(batch_size=64, epochs=2, lr=3e-3, chunk_rows=700, checkpoint_every=7)
    full, _ = train_sae(store, tmp_path / "full", sae_cfg, train_cfg, progress=False)
    train_sae(store, tmp_path / "part", sae_cfg, train_cfg, max_steps=23, progress=False)
    assert json.loads((tmp_path / "part" / "sae_config.json").read_text())["step"] == 23
    resumed, info = train_sae(store, tmp_path / "part", sae_cfg, train_cfg, progress=False)
    assert info["step"] == info["train"]["total_steps"]
    for name, t in full.state_dict().items():
        assert torch.allclose(t.float(), resumed.state_dict()[name].float(), atol=1e-6), name
    with pytest.raises(ValueError, match="different run"):
        train_sae(store, tmp_path / "part", SAEConfig(d_in=8, n_latents=16, k=3), train_cfg, progress=False)


def test_one_trainer_per_output_folder(tmp_path, capsys):
    store, _ = synthetic_store(tmp_path / "acts", d=8, n_atoms=12, n=1000, s=2)
    sae_cfg, train_cfg = SAEConfig(d_in=8, n_latents=16, k=2), TrainConfig(batch_size=64)
    out = tmp_path / "runs" / "sae"
    train_sae(store, out, sae_cfg, train_cfg, max_steps=3, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # another run holds the lock beside OUT (inside it would not survive a checkpoint)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from sparseir._fs import FileLock; lock = FileLock(Path(sys.argv[1]), str); "
                               "print('held', flush=True); time.sleep(60)", str(tmp_path / "runs" / ".sae.lock")],
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        assert holder.stdout.readline().strip() == "held"
        busy = f"{re.escape(str(out))} is being trained by another process \\(pid {holder.pid} on "
        with pytest.raises(LockError, match=busy):
            train_sae(store, out, sae_cfg, train_cfg, progress=False)
        assert main(["sae", "train", str(tmp_path / "acts"), str(out), "--n-latents", "16", "-k", "2",
                     "--batch-size", "64"]) == 2
        err = capsys.readouterr().err
        assert re.match(f"sparseir: error: {busy}.*only one trainer per output folder", err), err
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    finally:
        holder.kill()
        holder.wait()
    _, info = train_sae(store, out, sae_cfg, train_cfg, progress=False)  # the lock died with its holder
    assert info["step"] == info["train"]["total_steps"] > 3
    with FileLock(tmp_path / "runs" / ".sae.lock", str):  # in one process too, e.g. a run in another thread
        with pytest.raises(LockError, match=f"pid {os.getpid()} on "):
            train_sae(store, out, sae_cfg, train_cfg, progress=False)


@pytest.mark.parametrize("options, message", [
    (["-k", "0"], "argument -k/--k: must be >= 1, got 0"),
    (["-k", "17"], "sae train: k must be in [1, n_latents=16], got 17"),
    (["--sim-coef", "-1"], "argument --sim-coef: must be >= 0.0, got -1"),
    (["--aux-coef", "nan"], "argument --aux-coef: must be >= 0.0, got nan"),
    (["--sim-coef", "inf"], "argument --sim-coef: must be a finite number >= 0, got inf"),
    (["--epochs", "0"], "argument --epochs: must be a finite number > 0, got 0"),
    (["--lr", "inf"], "argument --lr: must be a finite number > 0, got inf"),
    (["--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
    (["--matryoshka", "a,b"], "--matryoshka must be comma-separated integers, got 'a,b'"),
    (["-k", "2", "--matryoshka", "12,8"], "sae train: matryoshka prefixes must increase within (0, 16], got (12, 8)"),
])
def test_sae_train_refuses_bad_options_with_exit_2(tmp_path, capsys, options, message):
    synthetic_store(tmp_path / "acts", d=8, n_atoms=12, n=200, s=2)
    try:  # argparse rejects a value out of range itself (SystemExit); the settings' checks return 2
        code = main(["sae", "train", str(tmp_path / "acts"), str(tmp_path / "sae"), "--n-latents", "16", *options])
    except SystemExit as e:
        code = e.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "sae").exists()


def test_a_folder_that_is_not_a_store_is_named_with_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "meta.json").write_text("{x")
    np.save(bad / "activations.npy", np.zeros(3, np.float32))
    for folder, message in ((tmp_path / "missing", "is not an activation store"),
                            (bad, f"{bad / 'meta.json'}: not valid JSON")):
        assert main(["sae", "train", str(folder), str(tmp_path / "sae")]) == 2
        assert message in capsys.readouterr().err
    (bad / "meta.json").write_text("{}")
    assert main(["sae", "train", str(bad), str(tmp_path / "sae")]) == 2
    assert f"{bad / 'activations.npy'} must be a non-empty 2-D array" in capsys.readouterr().err
    assert not (tmp_path / "sae").exists()


def test_sae_collect_refuses_a_bad_layer_or_model_with_exit_2(tmp_path, capsys):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"_id": "1", "text": "hello world"}\n')
    for options, message in ((["--model", str(MINILM), "--source", "hidden", "--layer", "99"],
                              "layer must be in [-7, 6]"),
                             (["--model", str(tmp_path / "nothing")], "cannot load a sentence-transformers model"),
                             (["--model", str(tmp_path / "nothing"), "--source", "hidden"], "cannot load a tokenizer")):
        assert main(["sae", "collect", str(corpus), str(tmp_path / "store"), *options]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "store").exists()


def test_center_false_scales_raw_inputs_and_is_part_of_the_run(tmp_path):
    store, _ = synthetic_store(tmp_path / "acts", d=8, n_atoms=12, n=1000, s=2)
    train = np.concatenate([x for _, x in store.chunks(4096, "train")]).astype(np.float64)
    mean, scale = store.norm_stats(center=False)
    assert not mean.any() and scale == pytest.approx(np.sqrt((train ** 2).sum(1).mean()), rel=1e-6)
    mean, scale = store.norm_stats()
    assert np.allclose(mean, train.mean(0), atol=1e-6)
    assert scale == pytest.approx(np.sqrt(((train - train.mean(0)) ** 2).sum(1).mean()), rel=1e-5)
    sae_cfg = SAEConfig(d_in=8, n_latents=16, k=2)
    model, info = train_sae(store, tmp_path / "sae", sae_cfg, TrainConfig(batch_size=64, center=False), max_steps=5,
                            progress=False)
    assert not model.norm_mean.any() and info["train"]["center"] is False
    with pytest.raises(ValueError, match="different run"):
        train_sae(store, tmp_path / "sae", sae_cfg, TrainConfig(batch_size=64), progress=False)


def test_finalize_writes_labels_and_diagnostics(tmp_path):
    store, _ = synthetic_store(tmp_path / "acts", d=8, n_atoms=12, n=1500, s=2)
    model, info = train_sae(
        store, tmp_path / "sae", SAEConfig(d_in=8, n_latents=16, k=2), TrainConfig(batch_size=64, epochs=1),
        progress=False,
    )
    diag = finalize_sae(tmp_path / "sae", model, info, store, progress=False)
    assert 0 <= diag["dead_frac"] <= 1 and diag["fvu"] < 1 and 0 < diag["l0"] <= 2
    labels = json.loads((tmp_path / "sae" / LABELS).read_text())
    assert len(labels["labels"]) == 16 and all(lab.startswith(f"f{i}:") for i, lab in enumerate(labels["labels"]))
    assert (tmp_path / "sae" / FREQ_HIST).read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "sae" / DIAGNOSTICS).read_text())["n_latents"] == 16
    loaded, _ = load_sae(tmp_path / "sae")
    x = torch.from_numpy(np.array(store.acts[:5]))
    assert torch.allclose(loaded.encode(x), model.encode(x), atol=1e-6)


def test_encoder_round_trip(tmp_path):
    from sparseir.encoders import load_encoder
    from sparseir.encoders.sae import SAESparseEncoder

    store, _ = synthetic_store(
        tmp_path / "acts", d=384, n_atoms=64, n=1000, s=3, meta={"kind": "embedding", "model": str(MINILM)}
    )
    model, info = train_sae(
        store, tmp_path / "sae", SAEConfig(d_in=384, n_latents=128, k=8), TrainConfig(batch_size=100), progress=False
    )
    finalize_sae(tmp_path / "sae", model, info, store, progress=False)
    enc = load_encoder(f"sae:{tmp_path / 'sae'}", k=4)
    assert isinstance(enc, SAESparseEncoder) and enc.dim == 128 and enc.terms[0].startswith("f0:")
    texts = ["insulin resistance in type 2 diabetes", "", "a study of tumour growth in mice"]
    docs = enc.encode_document(texts)
    assert docs.shape == (3, 128) and docs.dtype == np.float32
    assert docs.getrow(1).nnz == 0 and 0 < docs.getrow(0).nnz <= 4 and (docs.data > 0).all()
    (decoded,) = enc.decode(docs.getrow(0))  # a matrix gives a list per row
    assert decoded and all(term in enc.terms for term, _ in decoded)
    again = load_encoder(enc.config())
    assert again.fingerprint == enc.fingerprint
    assert np.allclose(again.encode_query(texts).toarray(), enc.encode_query(texts).toarray(), atol=1e-5)
