"""GPU check of the foundation: CT-CLIP conformance on CUDA and CT-CLIP v2-sized forward timings.

Writes bench/results/gpu_foundation.json (or $OUT/gpu_foundation.json). Timings are compared within
the same run (fp32 vs bf16 autocast, eager vs SDPA) since these machines are shared.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def timed(fn, repeats=3):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    from unicon_hf import UniconConfig, UniconModel
    from unicon_hf.convert.ctclip import convert_checkpoint

    results = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    shared = Path(os.environ.get("UNICON_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
    conformance = shared / "conformance" / "ctclip_tiny_public.safetensors"
    if conformance.is_file():
        from safetensors import safe_open

        model, _ = convert_checkpoint(conformance)
        model = model.cuda().eval()
        with safe_open(str(conformance), framework="pt") as handle:
            vectors = {k: handle.get_tensor(k) for k in handle.keys()}
        with torch.no_grad():
            out = model(pixel_values=vectors["input.pixel_values"].cuda(), input_ids=vectors["input.input_ids"].cuda(),
                        attention_mask=vectors["input.attention_mask"].cuda())
        results["conformance_max_abs_error"] = {
            "image_latents": float((out.image_embeds.cpu() - vectors["expected.image_latents"]).abs().max()),
            "logits_per_image": float((out.logits_per_image.cpu() - vectors["expected.logits_per_image"]).abs().max()),
        }
    model = UniconModel(UniconConfig()).cuda().eval()
    x = torch.randn(1, 1, 240, 480, 480, device="cuda")
    for implementation in ("sdpa", "eager"):
        model.set_attn_implementation(implementation)
        with torch.no_grad():
            results[f"v2_forward_fp32_{implementation}_s"] = timed(lambda: model.vision_model(x))
            with torch.autocast("cuda", dtype=torch.bfloat16):
                results[f"v2_forward_bf16_{implementation}_s"] = timed(lambda: model.vision_model(x))
    results["v2_peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    out_dir = Path(os.environ.get("OUT", Path(__file__).resolve().parent / "results"))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu_foundation.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
