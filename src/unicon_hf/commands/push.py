"""`unicon push`: publish a model folder (weights, code, processor, pipelines, handler, card) to the Hub or a local
folder, or one task as an adapter-only repo (see `unicon_hf.publish`)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "push",
        help="publish a model folder to a Hub repo (or a local folder) with card, pipelines and endpoint handler",
        description="Upload a UNICON model folder: safetensors weights only, config with auto_map and code files, "
        "preprocessor and tokenizer, custom pipelines, handler.py + requirements.txt for Inference Endpoints, and "
        "README.md generated from the run's report.json. TARGET is a Hub repo id (org/name) or a local folder "
        "(file:///path, /path, ./path). With --task, publish only that task as an adapter-only repo naming "
        "--base-model.",
    )
    parser.add_argument("model_dir", help="saved model folder (e.g. runs/demo/model)")
    parser.add_argument("target", help="Hub repo id org/name, or a local folder (file:///path, /path, ./path)")
    parser.add_argument("--revision", default=None, help="Hub branch to create/upload to (e.g. one per stage)")
    parser.add_argument("--public", action="store_true", help="create the Hub repo public (default: private)")
    parser.add_argument("--token", default=None, help="Hub token (default: the logged-in one)")
    parser.add_argument("--message", default=None, help="commit message")
    parser.add_argument("--report", default=None, help="report.json for the card (default: MODEL_DIR/report.json)")
    parser.add_argument("--no-report", action="store_true", help="allow a card without results")
    parser.add_argument("--keep-card", action="store_true", help="upload MODEL_DIR/README.md as it is")
    parser.add_argument("--repo-id", default=None, help="for a local target: the Hub id the card should name")
    parser.add_argument("--task", default=None, help="publish only this task, as an adapter-only repo")
    parser.add_argument("--base-model", default=None, help="with --task: Hub id of the model the task belongs to")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import UserInputError
    from ..publish import push, push_adapter

    if args.task:
        if not args.base_model:
            raise UserInputError("--task needs --base-model: the Hub id of the full model the adapter belongs to")
        where = push_adapter(args.model_dir, args.task, args.target, base_model=args.base_model,
                             revision=args.revision, private=not args.public, token=args.token,
                             commit_message=args.message)
    else:
        if args.base_model:
            raise UserInputError("--base-model is for adapter-only repos; add --task NAME")
        where = push(args.model_dir, args.target, revision=args.revision, private=not args.public, token=args.token,
                     commit_message=args.message, card=not args.keep_card, report=args.report,
                     require_report=not args.no_report, repo_id=args.repo_id)
    print(f"pushed to {where}")
    return 0
