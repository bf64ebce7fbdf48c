"""Peak memory of sliding-window segmentation on a 512 x 512 x 300 CT: slab-wise aggregation
(`unicon_hf.sliding_window`) vs MONAI's full-volume float32 accumulator, in the same run.

Each method runs in a fresh subprocess so that peaks do not mask each other. The predictor is a tiny
convolution (3 classes, 96^3 windows, overlap 0.25): the point is the aggregation buffers, not the network.
Reported: extra peak RSS over the process's RSS just before inference (the input volume and torch already
loaded), and on a CUDA device also `torch.cuda.max_memory_allocated` with the volume kept on the CPU.

    python bench/sliding_window_memory.py [--shape 300 512 512] [--device cpu|cuda] [--out bench/results/...]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

METHODS = ("unicon_slab", "unicon_slab_fp16", "monai_full_float32")


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def run_one(method: str, shape: list[int], roi: int, classes: int, overlap: float, device: str) -> dict:
    """Runs inside the child process; returns the measurement."""
    import torch
    from monai.inferers import sliding_window_inference

    from unicon_hf.sliding_window import sliding_window_segmentation

    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    conv = torch.nn.Conv3d(1, classes, 3, padding=1).to(device).eval()

    def predictor(x):
        return conv(x).softmax(dim=1)

    volume = torch.randn(1, 1, *shape)  # the CT, kept on the CPU (what a 512x512x300 scan costs anyway)
    predictor(volume[:, :, :roi, :roi, :roi].to(device))  # warm-up: kernels and allocator
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_base = torch.cuda.memory_allocated()
    before = rss_mb()
    start = time.perf_counter()
    if method == "monai_full_float32":
        probabilities = sliding_window_inference(volume, roi, 4, predictor, overlap=overlap, mode="gaussian",
                                                 sw_device=device, device=device)
        labels = torch.empty(probabilities.shape[2:], dtype=torch.uint8)
        for d in range(0, labels.shape[0], 8):  # chunked, so the int64 argmax does not count against MONAI
            labels[d:d + 8] = probabilities[0, :, d:d + 8].argmax(dim=0).to("cpu", torch.uint8)
        labels = labels[None]
    else:
        dtype = torch.float16 if method.endswith("fp16") else torch.float32
        labels = sliding_window_segmentation(volume, predictor, (roi, roi, roi), classes, overlap=overlap,
                                             sw_batch_size=4, accumulate_dtype=dtype, device=device).labels
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"method": method, "seconds": round(seconds, 2), "rss_before_mb": round(before, 1),
              "rss_peak_mb": round(peak, 1), "extra_peak_rss_mb": round(peak - before, 1),
              "labels_checksum": int(labels.long().sum())}
    if device == "cuda":
        result["cuda_extra_peak_mb"] = round((torch.cuda.max_memory_allocated() - cuda_base) / 2**20, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=[300, 512, 512], metavar=("D", "H", "W"))
    parser.add_argument("--roi", type=int, default=96)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "sliding_window_memory.json"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child, args.shape, args.roi, args.classes, args.overlap, args.device)))
        return
    results = []
    for method in METHODS:
        command = [sys.executable, __file__, "--child", method, "--shape", *map(str, args.shape), "--roi", str(args.roi),
                   "--classes", str(args.classes), "--overlap", str(args.overlap), "--device", args.device]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
        print(json.dumps(results[-1]))
    by = {r["method"]: r for r in results}
    naive = by["monai_full_float32"]
    summary = {
        "shape_dhw": args.shape, "roi": args.roi, "classes": args.classes, "overlap": args.overlap,
        "device": args.device, "python": platform.python_version(), "machine": platform.machine(),
        "results": results,
        "labels_identical_fp32": by["unicon_slab"]["labels_checksum"] == naive["labels_checksum"],
        "extra_rss_ratio_naive_over_slab": round(naive["extra_peak_rss_mb"] / max(by["unicon_slab"]["extra_peak_rss_mb"], 1e-6), 2),
        "extra_rss_ratio_naive_over_slab_fp16": round(
            naive["extra_peak_rss_mb"] / max(by["unicon_slab_fp16"]["extra_peak_rss_mb"], 1e-6), 2),
    }
    d, h, w = args.shape
    summary["buffers_mb_analytic"] = {  # what each method must hold besides the predictor's own work memory
        "unicon_slab": round((args.classes * args.roi * h * w * 4 + d * h * w) / 2**20, 1),
        "unicon_slab_fp16": round((args.classes * args.roi * h * w * 2 + d * h * w) / 2**20, 1),
        "monai_full_float32": round(((args.classes + 1) * d * h * w * 4 + d * h * w) / 2**20, 1),
    }
    if args.device == "cuda":
        summary["cuda_ratio_naive_over_slab"] = round(naive["cuda_extra_peak_mb"] / by["unicon_slab"]["cuda_extra_peak_mb"], 2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "results"}, indent=2))


if __name__ == "__main__":
    main()
