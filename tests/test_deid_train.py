"""``train-deid --init``: fine-tune an existing encryptor's couplings through decoder + identity net (true steps),
with validation checkpoint selection. Tiny generator and a tiny identity net stand in for lite and dlib."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from deid_tiny import TinyGenerator, tiny_encryptor
from torch import nn

from faceprivacy.cli import main
from faceprivacy.deid.riddle.encryptor import LatentEncryptor, random_keys
from faceprivacy.deid.riddle.surrogate import val_score
from faceprivacy.deid.riddle.train import to_tensor, train_encryptor


class TinyEmbed(nn.Module):
    """Differentiable stand-in for DlibArc: pooled image -> unit 16-d descriptor."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.proj = nn.Parameter(torch.randn(3 * 8 * 8, 16, generator=g), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(torch.tanh(F.adaptive_avg_pool2d(x, 8).flatten(1) @ self.proj), dim=1)

    @torch.no_grad()
    def embed_uint8(self, crops, bs: int = 64, device="cpu"):
        return self(to_tensor(crops, device)).numpy()


def _linear(enc: LatentEncryptor) -> dict:
    return {k: getattr(enc, k).clone() for k in ("mu", "basis", "sigma", "id_basis")}


def test_init_finetunes_only_the_couplings_and_stays_exact(datakit, tmp_path):
    init = tmp_path / "init.pt"
    tiny_encryptor().save(init)
    ref = LatentEncryptor.load(init)
    enc, rep = train_encryptor(datakit, tmp_path / "out.pt", generator=TinyGenerator(), dlib=TinyEmbed(),
                               init=init, steps=6, true_every=1, batch=8, true_batch=4, lr=1e-2,
                               max_train=40, max_val=24, seed=0)
    assert "val_init" in rep and "proxy" not in rep  # every step true: no proxy fitted
    for k, v in _linear(ref).items():
        assert torch.equal(getattr(enc, k), v), k
    diff = max(float((a - b).detach().abs().max()) for a, b in zip(enc.couplings.parameters(), ref.couplings.parameters(),
                                                            strict=True))
    assert diff > 1e-4  # the couplings were trained
    saved = LatentEncryptor.load(tmp_path / "out.pt")
    assert saved.meta["init_id"] == "tiny" and saved.meta["variant"].startswith("decoder+dlib")
    enc64 = saved.for_inference()
    z = torch.randn(5, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    rot, cond = random_keys(5, enc64.cfg, torch.Generator().manual_seed(2), dtype=torch.float64)
    assert (enc64.decrypt(enc64.encrypt(z, rot, cond), rot, cond) - z).abs().max() < 1e-9


def test_validation_selection_keeps_the_best_state(datakit, tmp_path):
    init = tmp_path / "init.pt"
    tiny_encryptor().save(init)
    ref = LatentEncryptor.load(init)
    enc, rep = train_encryptor(datakit, None, generator=TinyGenerator(), dlib=TinyEmbed(), init=init, steps=4,
                               true_every=1, batch=8, true_batch=4, lr=0.3, max_train=40, max_val=24, seed=0,
                               val_every=2)
    tr = rep["train"]
    assert [v["step"] for v in tr["val"]] == [2, 4]
    scores = [val_score(rep["val_init"])] + [v["score"] for v in tr["val"]]
    assert val_score(rep["val_trained"]) == min(scores)
    same = all(torch.equal(a, b) for a, b in zip(enc.couplings.parameters(), ref.couplings.parameters(),
                                                  strict=True))
    assert same == (tr["chosen_step"] == 0)


def test_cli_init_missing_file(tmp_path):
    assert main(["-q", "train-deid", "--init", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o.pt")]) == 2
    assert not (tmp_path / "o.pt").exists()


def test_cli_passes_the_stage2_options(tmp_path, monkeypatch):
    import faceprivacy.deid.riddle.train as train_mod

    init = tmp_path / "init.pt"
    tiny_encryptor().save(init)
    seen = {}

    def fake(data, out, **kw):
        seen.update(kw, out=out)
        return None, {"val_trained": {}, "train": {"chosen_step": 0}}

    monkeypatch.setattr(train_mod, "train_encryptor", fake)
    assert main(["-q", "train-deid", "--data", str(tmp_path), "--init", str(init), "--out", str(tmp_path / "o.pt"),
                 "--steps", "7", "--true-every", "1", "--batch", "16", "--true-batch", "4", "--val-every", "3",
                 "--lr", "2e-4", "--w-div", "3", "--w-wrong", "0.5", "--w-img", "0.25"]) == 0
    assert seen["init"] == init and seen["out"] == tmp_path / "o.pt"
    assert (seen["steps"], seen["true_every"], seen["batch"], seen["true_batch"], seen["val_every"]) == (7, 1, 16, 4, 3)
    assert (seen["lr"], seen["w_div"], seen["w_wrong"], seen["w_img"]) == (2e-4, 3.0, 0.5, 0.25)
