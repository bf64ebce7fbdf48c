"""The CT-CLIP converter + port reproduce test vectors made with the original CT-CLIP implementation."""

import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModel

import unicon_hf  # noqa: F401  (registers the Auto classes)
from unicon_hf.cli import main as unicon_main
from unicon_hf.convert.ctclip import convert_state_dict, build_config, read_checkpoint

from tiny import tiny_config

SHARED = Path(os.environ.get("UNICON_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
CONFORMANCE = SHARED / "conformance" / "ctclip_tiny_public.safetensors"


@pytest.fixture(scope="module")
def vectors():
    assert CONFORMANCE.is_file(), f"conformance vectors not found at {CONFORMANCE} (set UNICON_SHARED_DIR)"
    with safe_open(str(CONFORMANCE), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


@pytest.fixture(scope="module")
def converted_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("converted") / "ctclip-tiny"
    assert unicon_main(["convert-ctclip", str(CONFORMANCE), str(out)]) == 0
    return out


def run_all(model, pixel_values, input_ids, attention_mask):
    with torch.no_grad():
        out = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask,
                    output_hidden_states=True)
    vision = out.vision_model_output
    b, t, h, w, d = vision.last_hidden_state.shape
    return {
        "patch_embeddings": vision.patch_embeddings,
        "spatial_transformer_output": vision.spatial_last_hidden_state.reshape(b * t, h * w, d),
        "temporal_transformer_output": vision.last_hidden_state.permute(0, 2, 3, 1, 4).reshape(b * h * w, t, d),
        "encoded_tokens": vision.last_hidden_state,
        "quantized_tokens": vision.quantized_tokens,
        "text_last_hidden_state": out.text_model_output.last_hidden_state,
        "image_latents": out.image_embeds,
        "text_latents": out.text_embeds,
        "logits_per_image": out.logits_per_image,
    }


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_converted_conformance_file_reproduces_every_expected_tensor(vectors, converted_dir, attn_implementation):
    model = AutoModel.from_pretrained(converted_dir, attn_implementation=attn_implementation).eval()
    assert model.config.vision_config._attn_implementation == attn_implementation
    outputs = run_all(model, vectors["input.pixel_values"], vectors["input.input_ids"], vectors["input.attention_mask"])
    expected_keys = {key[len("expected."):] for key in vectors if key.startswith("expected.")}
    assert expected_keys == set(outputs)
    for name, value in outputs.items():
        expected = vectors[f"expected.{name}"]
        assert value.shape == expected.shape, name
        torch.testing.assert_close(value, expected, atol=1e-4, rtol=0, msg=lambda m: f"{name}: {m}")


def test_conversion_report_accounts_for_every_key(vectors, capsys, tmp_path):
    assert unicon_main(["convert-ctclip", str(CONFORMANCE), str(tmp_path / "m")]) == 0
    printed = capsys.readouterr().out
    assert "unused checkpoint keys: 0" in printed
    assert "model weights not filled: 0" in printed
    assert "to_pixels.0.weight" in printed and "decoder" in printed  # decoder keys listed as ignored


# --- a second, differently shaped model: save -> CT-CLIP key layout -> convert -> reload ----------------------
def to_ctclip_state_dict(model) -> dict:
    """Write our weights back under CT-CLIP's original key names (independent of the converter's table)."""
    names = {
        "vision_model.embeddings.input_norm": "visual_transformer.to_patch_emb.1",
        "vision_model.embeddings.projection": "visual_transformer.to_patch_emb.2",
        "vision_model.embeddings.output_norm": "visual_transformer.to_patch_emb.3",
        "vision_model.spatial_position_bias.mlp": "visual_transformer.spatial_rel_pos_bias.net",
        "vision_model.spatial_encoder": "visual_transformer.enc_spatial_transformer",
        "vision_model.temporal_encoder": "visual_transformer.enc_temporal_transformer",
        "text_model": "text_transformer",
        "visual_projection": "to_visual_latent",
        "text_projection": "to_text_latent",
    }
    parts = {".position_generator.conv.": ".0.dsconv.", ".attention.norm.": ".1.norm.",
             ".attention.q_proj.": ".1.to_q.", ".attention.kv_proj.": ".1.to_kv.",
             ".attention.out_proj.": ".1.to_out.", ".attention.q_scale": ".1.q_scale",
             ".attention.k_scale": ".1.k_scale", ".feed_forward.norm.": ".3.0.",
             ".feed_forward.up_proj.": ".3.1.", ".feed_forward.down_proj.": ".3.4."}
    out = {}
    for key, tensor in model.state_dict().items():
        if key == "logit_scale":
            out["temperature"] = tensor.clone()
            continue
        if key == "vision_model.quantizer.codebook":
            out["visual_transformer.vq._codebook.embed"] = tensor[None].clone()
            continue
        new = key
        for ours, theirs in names.items():
            if new.startswith(ours):
                new = theirs + new[len(ours):]
        for ours, theirs in parts.items():
            new = new.replace(ours, theirs)
        out[new] = tensor.clone()
    # Decoder / training-only keys a real checkpoint carries: must be reported as ignored, not break anything.
    out["visual_transformer.to_pixels.0.weight"] = torch.zeros(3, 3)
    out["to_visual_latent_extra.weight"] = torch.zeros(3, 3)
    return out


def test_differently_shaped_model_round_trips_through_a_pt_checkpoint(tmp_path):
    vision = dict(hidden_size=48, num_attention_heads=3, head_dim=8, spatial_depth=3, temporal_depth=1,
                  patch_size=[4, 6], temporal_patch_size=2, image_size=[12, 18], num_frames=6, codebook_size=10)
    original = unicon_hf.UniconModel(tiny_config(vision=vision, projection_dim=12)).eval()
    with torch.no_grad():  # non-trivial values for parameters that init to constants
        for name, p in original.named_parameters():
            if "scale" in name or "gamma" in name:
                p.mul_(torch.empty_like(p).uniform_(0.5, 1.5))
    checkpoint = tmp_path / "ctclip.pt"
    # A DataParallel-style `module.` prefix inside a wrapping `state_dict` key, as training scripts save them.
    torch.save({"state_dict": {f"module.{k}": v for k, v in to_ctclip_state_dict(original).items()}}, checkpoint)

    ctvit_arguments = {"dim": 48, "heads": 3, "dim_head": 8, "spatial_depth": 3, "temporal_depth": 1,
                       "patch_size": [4, 6], "temporal_patch_size": 2, "image_size": [12, 18], "frames": 6,
                       "codebook_size": 10}
    text = original.config.text_config.to_dict()
    text_fields = {k: text[k] for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                         "intermediate_size", "max_position_embeddings")}
    import json
    (tmp_path / "text.json").write_text(json.dumps(text_fields))
    out = tmp_path / "converted"
    assert unicon_main(["convert-ctclip", str(checkpoint), str(out), "--vision-config", json.dumps(ctvit_arguments),
                        "--text-config", str(tmp_path / "text.json"), "--dim-latent", "12"]) == 0
    reloaded = AutoModel.from_pretrained(out).eval()

    pixel_values = torch.randn(2, 1, 6, 12, 18)
    input_ids = torch.randint(0, 64, (3, 7))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 4:] = 0
    a = run_all(original, pixel_values, input_ids, attention_mask)
    b = run_all(reloaded, pixel_values, input_ids, attention_mask)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0, msg=lambda m: f"{name}: {m}")


def test_missing_encoder_weight_is_an_error_naming_it(vectors):
    state_dict, metadata = read_checkpoint(CONFORMANCE)
    del state_dict["visual_transformer.enc_temporal_transformer.layers.1.1.to_q.weight"]
    import json
    config = build_config(json.loads(metadata["vision"]), json.loads(metadata["text"]))
    with pytest.raises(ValueError, match=r"temporal_encoder\.layers\.1\.attention\.q_proj\.weight"):
        convert_state_dict(state_dict, config)


def test_wrong_config_for_checkpoint_names_key_and_shapes(tmp_path):
    code = unicon_main(["convert-ctclip", str(CONFORMANCE), str(tmp_path / "x"), "--vision-config", '{"dim": 32}'])
    assert code == 2
    assert not (tmp_path / "x").exists()


def test_pickled_objects_are_refused(tmp_path):
    import datetime

    path = tmp_path / "evil.pt"  # an arbitrary Python object: weights_only loading must refuse to build it
    torch.save({"state_dict": {"x": datetime.datetime(2020, 1, 1)}}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        read_checkpoint(path)
