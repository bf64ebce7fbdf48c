"""The foundation model on tiny configs: shapes, attention backends, dtypes, errors, save/load."""

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel

from unicon_hf import UniconConfig, UniconModel, UniconVisionConfig, UniconVisionModel, UserInputError

from tiny import tiny_config, tiny_vision_config


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return UniconModel(tiny_config()).eval()


def inputs(batch=2, shape=(8, 16, 16), texts=3, length=6):
    torch.manual_seed(1)
    input_ids = torch.randint(1, 64, (texts, length))
    return torch.randn(batch, 1, *shape), input_ids, torch.ones_like(input_ids)


def test_clip_call_shapes_and_normalised_embeddings(model):
    pixel_values, input_ids, mask = inputs()
    with torch.no_grad():
        out = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
    assert out.logits_per_image.shape == (2, 3)
    torch.testing.assert_close(out.logits_per_text, out.logits_per_image.T)
    torch.testing.assert_close(out.image_embeds.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(out.text_embeds.norm(dim=-1), torch.ones(3))
    vision = out.vision_model_output
    assert vision.last_hidden_state.shape == (2, 2, 2, 2, 32)  # (B, T, h, w, dim)
    assert vision.quantized_tokens.shape == (2, 2, 2, 2, 32)
    assert len(vision.spatial_hidden_states) == 2 and len(vision.temporal_hidden_states) == 2
    assert all(h.shape == (2, 2, 2, 2, 32) for h in vision.spatial_hidden_states + vision.temporal_hidden_states)
    # the last temporal layer output, normalised by the stage norm, is the encoder output
    norm = model.vision_model.temporal_encoder.norm_out
    torch.testing.assert_close(norm(vision.temporal_hidden_states[-1]), vision.last_hidden_state)
    # every quantized token is a row of the codebook
    codebook = model.vision_model.quantizer.codebook
    rows = vision.quantized_tokens.reshape(-1, 32)
    assert all((codebook == row).all(-1).any() for row in rows)


def test_features_match_the_clip_call(model):
    pixel_values, input_ids, mask = inputs()
    with torch.no_grad():
        out = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=mask)
        image = model.get_image_features(pixel_values).pooler_output
        text = model.get_text_features(input_ids, attention_mask=mask).pooler_output
    torch.testing.assert_close(torch.nn.functional.normalize(image, dim=-1), out.image_embeds)
    torch.testing.assert_close(torch.nn.functional.normalize(text, dim=-1), out.text_embeds)


def test_contrastive_loss_only_when_asked(model):
    pixel_values, input_ids, mask = inputs(batch=3)
    out = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=mask)
    assert out.loss is None
    out = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=mask, return_loss=True)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.visual_projection.weight.grad is not None
    model.zero_grad()


def test_eager_and_sdpa_agree():
    torch.manual_seed(0)
    config = tiny_config()
    sdpa = UniconModel(config).eval()
    pixel_values, input_ids, mask = inputs(shape=(16, 24, 32))
    with torch.no_grad():
        a = sdpa.vision_model(pixel_values, output_hidden_states=True)
        sdpa.set_attn_implementation("eager")
        assert sdpa.config.vision_config._attn_implementation == "eager"
        b = sdpa.vision_model(pixel_values, output_hidden_states=True)
    torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.spatial_last_hidden_state, b.spatial_last_hidden_state, atol=1e-5, rtol=0)


def test_bfloat16_runs(model):
    pixel_values, input_ids, mask = inputs()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=mask)
    assert torch.isfinite(out.logits_per_image.float()).all()
    bf16 = UniconModel(tiny_config()).to(torch.bfloat16).eval()
    with torch.no_grad():
        out = bf16.vision_model(pixel_values.to(torch.bfloat16))
    assert out.last_hidden_state.dtype == torch.bfloat16 and torch.isfinite(out.last_hidden_state.float()).all()


@pytest.mark.parametrize("shape", [(4, 8, 8), (12, 40, 24), (8, 16, 56)])
def test_encoder_takes_any_size_divisible_by_the_patches(model, shape):
    with torch.no_grad():
        out = model.vision_model(torch.randn(1, 1, *shape))
    assert out.last_hidden_state.shape == (1, shape[0] // 4, shape[1] // 8, shape[2] // 8, 32)


def test_position_bias_computed_once_per_forward_and_cached_per_grid(model):
    calls = []
    hook = model.vision_model.spatial_position_bias.mlp[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            model.vision_model(torch.randn(1, 1, 8, 24, 24))
            assert len(calls) == 1  # two spatial layers share one bias
            model.vision_model(torch.randn(1, 1, 8, 24, 24))
            assert len(calls) == 1  # same grid, same weights: cached
            model.vision_model(torch.randn(1, 1, 8, 40, 40))
            assert len(calls) == 2  # another grid: computed for it
            model.vision_model.spatial_position_bias.mlp[0][0].weight.add_(0.0)  # in-place write invalidates
            model.vision_model(torch.randn(1, 1, 8, 24, 24))
            assert len(calls) == 3
        model.vision_model(torch.randn(1, 1, 8, 24, 24))  # grad-enabled, trainable weights: never cached
        model.vision_model(torch.randn(1, 1, 8, 24, 24))
        assert len(calls) == 5
    finally:
        hook.remove()


def test_bias_depends_on_actual_grid(model):
    bias = model.vision_model.spatial_position_bias
    with torch.no_grad():
        small = bias(2, 3, torch.device("cpu"), torch.float32)
        large = bias(4, 5, torch.device("cpu"), torch.float32)
    assert small.shape == (2, 6, 6) and large.shape == (2, 20, 20)


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "pixel_values, message",
    [
        (torch.randn(1, 8, 16, 16), r"5 dimensions .*unsqueeze\(0\)"),
        (torch.randn(1, 2, 8, 16, 16), r"2 channel\(s\) but .* expects 1"),
        (torch.randn(1, 1, 8, 20, 16), r"height 20 is not divisible by the patch size 8.*16 or 24"),
        (torch.randn(1, 1, 6, 16, 16), r"depth 6 is not divisible by the patch size 4.*4 or 8"),
    ],
)
def test_bad_pixel_values_give_clear_errors(model, pixel_values, message):
    with pytest.raises(UserInputError, match=message):
        model(pixel_values=pixel_values)


def test_non_finite_voxels_are_refused(model):
    pixel_values = torch.randn(1, 1, 8, 16, 16)
    pixel_values[0, 0, 3, 4, 5] = float("nan")
    pixel_values[0, 0, 1, 1, 1] = float("inf")
    with pytest.raises(UserInputError, match="2 NaN or infinite"):
        model(pixel_values=pixel_values)


def test_text_longer_than_the_encoder_is_refused(model):
    with pytest.raises(UserInputError, match=r"40 tokens long .* at most 32.*truncation=True"):
        model(input_ids=torch.ones(1, 40, dtype=torch.long))


def test_clip_projection_needs_its_grid(model):
    with pytest.raises(UserInputError, match=r"token grid of 2x2 .* gives 3x2"):
        model(pixel_values=torch.randn(1, 1, 8, 24, 16))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(image_size=20), r"image_size height 20 is not divisible by patch_size 8.*16 or 24"),
        (dict(num_frames=10), r"num_frames 10 is not divisible by temporal_patch_size 4.*8 or 12"),
        (dict(hidden_size=0), r"hidden_size must be positive"),
        (dict(attention_dropout=1.5), r"attention_dropout must be in \[0, 1\)"),
    ],
)
def test_config_validation(overrides, message):
    with pytest.raises(UserInputError, match=message):
        UniconVisionConfig(**tiny_vision_config(**overrides))


# ------------------------------------------------------------------------------------------------ save/load
def test_save_load_round_trip_is_bit_exact(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file()
    reloaded = AutoModel.from_pretrained(tmp_path / "m").eval()
    assert isinstance(reloaded, UniconModel)
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, reloaded.state_dict()[key]), key
    pixel_values, input_ids, mask = inputs()
    with torch.no_grad():
        a = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=mask)
        b = reloaded(pixel_values=pixel_values, input_ids=input_ids, attention_mask=mask)
    assert torch.equal(a.logits_per_image, b.logits_per_image)
    assert isinstance(AutoConfig.from_pretrained(tmp_path / "m"), UniconConfig)


def test_loading_a_repo_with_a_missing_weight_names_it(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    weights = load_file(tmp_path / "m" / "model.safetensors")
    del weights["vision_model.temporal_encoder.layers.1.attention.kv_proj.weight"]
    save_file(weights, tmp_path / "m" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(UserInputError, match=r"missing weight vision_model\.temporal_encoder\.layers\.1\.attention\.kv_proj\.weight"):
        UniconModel.from_pretrained(tmp_path / "m")


def test_loading_a_repo_with_a_wrongly_shaped_weight_names_it(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    weights = load_file(tmp_path / "m" / "model.safetensors")
    weights["visual_projection.weight"] = torch.zeros(16, 7)
    save_file(weights, tmp_path / "m" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(UserInputError, match=r"weight visual_projection\.weight has shape \(16, 7\), the config needs \(16, 128\)"):
        UniconModel.from_pretrained(tmp_path / "m")


def test_vision_model_alone(tmp_path):
    vision = UniconVisionModel(UniconVisionConfig(**tiny_vision_config())).eval()
    vision.save_pretrained(tmp_path / "v")
    reloaded = AutoModel.from_pretrained(tmp_path / "v").eval()
    x = torch.randn(1, 1, 8, 16, 16)
    with torch.no_grad():
        assert torch.equal(vision(x).last_hidden_state, reloaded(x).last_hidden_state)


@pytest.mark.slow
def test_ctclip_v2_sized_model_runs_a_forward_pass_on_cpu():
    """CT-CLIP v2 (dim 512, 4+4 layers, 240x480x480 input): ~10 s to build, ~40 s fp32 forward on 2 cores."""
    model = UniconModel(UniconConfig()).eval()
    with torch.no_grad():
        out = model(pixel_values=torch.randn(1, 1, 240, 480, 480), input_ids=torch.randint(0, 1000, (2, 16)))
    assert out.vision_model_output.last_hidden_state.shape == (1, 24, 24, 24, 512)
    assert out.logits_per_image.shape == (1, 2)
