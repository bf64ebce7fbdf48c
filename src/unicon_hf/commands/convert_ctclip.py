"""`unicon convert-ctclip CHECKPOINT OUTPUT_DIR`: an original CT-CLIP checkpoint -> a UniconModel repo."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert-ctclip",
        help="convert an original CT-CLIP checkpoint (.pt or .safetensors) into a UniconModel folder",
        description=(
            "Convert a CT-CLIP checkpoint into a save_pretrained folder (safetensors) that "
            "AutoModel.from_pretrained loads. Configs default to the safetensors metadata when present, "
            "else CT-CLIP v2's."
        ),
    )
    parser.add_argument("checkpoint", help="CT-CLIP checkpoint: .pt/.pth (read with weights_only=True) or .safetensors")
    parser.add_argument("output_dir", help="folder to write the converted model to")
    parser.add_argument("--vision-config", metavar="JSON",
                        help="CTViT(...) arguments as a JSON file or inline JSON, e.g. '{\"dim\": 512, \"frames\": 240}'")
    parser.add_argument("--text-config", metavar="JSON", help="BertConfig fields as a JSON file or inline JSON")
    parser.add_argument("--dim-latent", type=int, metavar="N", help="CLIP latent size (CT-CLIP v2: 512)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..convert.ctclip import convert_checkpoint, parse_json_argument

    model, report = convert_checkpoint(
        args.checkpoint,
        args.output_dir,
        vision_arguments=parse_json_argument(args.vision_config, "--vision-config"),
        text_config=parse_json_argument(args.text_config, "--text-config"),
        dim_latent=args.dim_latent,
    )
    print(report.summary())
    print(f"wrote {args.output_dir} ({model.num_parameters():,} parameters)")
    return 0
