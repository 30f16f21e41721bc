"""The VQ image tokenizer: shapes, checkpoints (own and LlamaGen-layout), exact resume, and (slow) the tiny
preset trained on rendered shape scenes reconstructing held-out scenes."""

import json
import random
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from interleaf.shapes import random_scene, render
from interleaf.storage import file_sha256
from interleaf.tokenizers import image as image_tokenizers
from interleaf.tokenizers.image import image_to_tensor, tensor_to_image
from interleaf.tokenizers.vq import VQConfig, VQModel, load_vq, save_vq, vq_preset
from interleaf.tokenizers.vq_train import VQTrainConfig, evaluate_vq, train_vq

# a smaller model than the tiny preset, for the fast tests: same code paths, a tenth of the compute
MICRO = replace(vq_preset("tiny"), image_size=16, channels=8, channel_mult=(1, 2), z_channels=8,
                codebook_size=32)


def _scenes(n, seed, size=32):
    rng = random.Random(seed)
    return torch.stack([image_to_tensor(render(random_scene(rng, rng.choice([1, 2])), size), size)
                        for _ in range(n)])


def test_presets():
    tiny, base = vq_preset("tiny"), vq_preset("base")
    assert (tiny.image_size, tiny.grid, tiny.codebook_size, tiny.codebook_embed_dim) == (32, (8, 8), 256, 8)
    assert (base.image_size, base.downsample, base.grid, base.codebook_size) == (256, 16, (16, 16), 8192)
    assert tiny.codebook_l2_norm and base.codebook_l2_norm
    with pytest.raises(ValueError, match="unknown VQ preset"):
        vq_preset("huge")
    with pytest.raises(ValueError, match="not a multiple"):
        replace(tiny, image_size=30)


def test_encode_decode_shapes():
    torch.manual_seed(0)
    model = VQModel(vq_preset("tiny")).eval()
    x = _scenes(3, 0)
    codes = model.encode(x)
    assert codes.shape == (3, 8, 8) and codes.dtype == torch.long
    assert 0 <= int(codes.min()) and int(codes.max()) < 256
    out = model.decode(codes)
    assert out.shape == (3, 3, 32, 32) and float(out.min()) >= -1 and float(out.max()) <= 1
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\)"):
        model.encode(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"\(B, 8, 8\)"):
        model.decode(torch.zeros(1, 4, 4, dtype=torch.long))


def test_image_tensor_conversions():
    img = render(random_scene(random.Random(0), 2), 32)
    t = image_to_tensor(img, 32)
    assert t.shape == (3, 32, 32) and t.min() >= -1 and t.max() <= 1
    assert tensor_to_image(t).tobytes() == img.tobytes()  # exact for 8-bit images at their own size
    rgba = Image.new("RGBA", (40, 20), (255, 0, 0, 0))  # fully transparent: composited on white
    assert torch.allclose(image_to_tensor(rgba, 16), torch.ones(3, 16, 16))
    assert image_to_tensor(Image.new("L", (64, 48), 0), 32).shape == (3, 32, 32)  # grey, non-square


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = VQModel(MICRO).eval()
    path = str(tmp_path / "vq.pt")
    save_vq(model, path)
    assert model.sha256 == file_sha256(path)
    loaded = load_vq(path)
    assert loaded.config == MICRO and loaded.sha256 == model.sha256 and not loaded.training
    x = _scenes(4, 1, 16)
    assert torch.equal(loaded.encode(x), model.encode(x))
    assert torch.equal(loaded.decode(model.encode(x)), model.decode(model.encode(x)))
    info = image_tokenizers.read_info(path)  # without loading the weights
    assert VQConfig(**info.config) == MICRO and info.grid == MICRO.grid and info.kind == "interleaf.vq"
    assert info.fingerprint == loaded.sha256 and isinstance(loaded, image_tokenizers.ImageTokenizer)


def test_loads_an_external_llamagen_layout_checkpoint(tmp_path):
    # LlamaGen publishes {"model": state_dict} without a config, with a 65,536-entry usage log
    # (quantize.codebook_used) and no interleaf usage statistics
    torch.manual_seed(0)
    model = VQModel(MICRO).eval()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("quantize.usage")
             and k != "quantize.steps"}
    state["quantize.codebook_used"] = torch.zeros(65536)
    path = str(tmp_path / "vq_ds8_c2i.pt")
    torch.save({"model": state}, path)
    with pytest.raises(ValueError, match="pass config="):
        load_vq(path)
    loaded = load_vq(path, config=MICRO)
    x = _scenes(2, 2, 16)
    assert torch.equal(loaded.encode(x), model.encode(x))
    with pytest.raises(ValueError, match="do not fit the config"):
        load_vq(path, config=replace(MICRO, channels=16))


def test_training_resumes_exactly(tmp_path):
    images = _scenes(64, 3, 16)
    cfg = replace(MICRO, restart_every=2)  # restarts happen (and draw from the global generator)
    train_cfg = VQTrainConfig(steps=6, batch_size=8, log_every=3, checkpoint_every=3, num_threads=1)

    torch.manual_seed(0)
    straight = VQModel(cfg)
    train_vq(straight, images, config=train_cfg, checkpoint=str(tmp_path / "a.pt"))

    torch.manual_seed(0)
    first = VQModel(cfg)
    train_vq(first, images, config=replace(train_cfg, steps=3), checkpoint=str(tmp_path / "b.pt"))
    torch.manual_seed(123)  # a fresh process: different global RNG, fresh weights
    resumed = VQModel(cfg)
    result = train_vq(resumed, images, config=train_cfg, checkpoint=str(tmp_path / "b.pt"))
    assert result.steps == 6
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert load_vq(str(tmp_path / "b.pt")).config == cfg  # a training checkpoint is a load_vq file


@pytest.mark.slow
def test_tiny_vq_reconstructs_held_out_shapes(tmp_path):
    """The tiny preset trained here on rendered scenes must reconstruct scenes it never saw.

    Threshold: 22 dB PSNR on held-out scenes, and at least 2 dB better than an unquantised 8x8 RGB
    thumbnail (area-downsampled, bilinear-upsampled: 19.2 dB here), which carries 3 floats per grid cell
    where the VQ carries one 8-bit code. 22 dB is an RMS error under 8% of the pixel range: every shape in
    its colour and place with soft edges. Blank white scores 12.7 dB. Measured: 27.4 dB after 600 steps,
    ~25 dB after 400.
    """
    train, held_out = _scenes(2000, 10), _scenes(200, 11)
    thumb = F.interpolate(F.interpolate(held_out, size=8, mode="area"), size=32, mode="bilinear")
    thumb_psnr = float((10 * torch.log10(1 / ((thumb - held_out) / 2).pow(2).flatten(1).mean(1))).mean())
    torch.manual_seed(0)
    model = VQModel(vq_preset("tiny"))
    result = train_vq(model, train, held_out=held_out, checkpoint=str(tmp_path / "vq.pt"),
                      config=VQTrainConfig(steps=400, batch_size=32, log_every=100, checkpoint_every=0,
                                           num_threads=1))
    m = result.held_out
    report = {**m, "thumbnail_psnr": thumb_psnr, "train_seconds": result.seconds,
              "restarted_codes": result.restarted_codes}
    (tmp_path / "vq_report.json").write_text(json.dumps(report, indent=2))
    print("tiny VQ held-out:", json.dumps(report))
    assert m["psnr"] > 22.0 and m["psnr"] > thumb_psnr + 2.0, report
    assert m["usage"] > 0.5, report  # codebook usage reported; restarts keep most codes alive
    assert evaluate_vq(load_vq(str(tmp_path / "vq.pt")), held_out[:50])["psnr"] > 22.0
