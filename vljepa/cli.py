"""`vljepa` command line: train, cache-features, and dispatchers for eval and stream.

    vljepa train --config recipes/vljepa/tiny_cpu.yaml [--set optim.max_steps=50 ...]
    vljepa cache-features --config recipes/vljepa/tiny_cpu.yaml --out runs/cache [--pooled] [--set ...]
    vljepa pretrain --config recipes/vljepa/pretrain_tiny_cpu.yaml   # -> vljepa.pretrain.main (V-JEPA X-encoder)
    vljepa eval ...     # -> vljepa.eval_cli.main(argv)     (imported only when used)
    vljepa stream ...   # -> vljepa.stream.cli_main(argv) (imported only when used)

A recipe is a YAML file of `vljepa.recipe.TrainConfig`; `--set a.b=c` overrides it and unknown
keys are errors (jepa_common.config).
"""

from __future__ import annotations

import argparse
import json
import sys

from jepa_common.config import ConfigError, config_help, load_config


def _recipe_parser(prog: str, description: str) -> argparse.ArgumentParser:
    from vljepa.recipe import TrainConfig

    p = argparse.ArgumentParser(prog=prog, description=description, epilog=config_help(TrainConfig),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML recipe, e.g. recipes/vljepa/tiny_cpu.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set optim.lr=1e-4 (repeatable)")
    return p


def train_main(argv: list[str]) -> None:
    from vljepa.recipe import TrainConfig
    from vljepa.train import train

    p = _recipe_parser("vljepa train", "Train a VL-JEPA model from a recipe.")
    args = p.parse_args(argv)
    result = train(_load(p, TrainConfig, args))
    print(json.dumps({"step": result["step"], "model_dir": result["model_dir"], "last": result["last"]}))


def cache_main(argv: list[str]) -> None:
    from vljepa.cache import cache_features
    from vljepa.recipe import TrainConfig, build_dataset, build_model

    p = _recipe_parser("vljepa cache-features", "Run the frozen X-encoder once over a recipe's data.")
    p.add_argument("--out", required=True, help="output folder for the feature shards")
    p.add_argument("--pooled", action="store_true", help="store the mean visual token instead of all tokens")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--shard-size", type=int, default=1024)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    args = p.parse_args(argv)
    cfg = _load(p, TrainConfig, args)
    model = build_model(cfg.model)
    out = cache_features(model, build_dataset(cfg.data, model), args.out, batch_size=args.batch_size,
                         shard_size=args.shard_size, pooled=args.pooled, dtype=args.dtype)
    print(f"cached features in {out}")


def _load(parser: argparse.ArgumentParser, cls: type, args: argparse.Namespace):
    """The recipe + overrides, or a one-line usage error (exit 2) naming the bad key or value."""
    try:
        return load_config(cls, args.config, args.overrides)
    except ConfigError as e:
        parser.error(str(e))


def _eval_main(argv: list[str]) -> None:
    from vljepa.eval_cli import main

    main(argv)


def _pretrain_main(argv: list[str]) -> None:
    from vljepa.pretrain import main

    main(argv)


def _stream_main(argv: list[str]) -> None:
    from vljepa.stream import cli_main

    cli_main(argv)


COMMANDS = {"train": train_main, "cache-features": cache_main, "eval": _eval_main, "stream": _stream_main,
            "pretrain": _pretrain_main}


def main(argv: list[str] | None = None) -> None:
    """`vljepa COMMAND ...`; no command or an unknown one prints the usage and exits with status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return
    if not argv or argv[0] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr)
        problem = f"unknown command {argv[0]!r}" if argv else "no command given"
        print(f"vljepa: error: {problem}; choose one of {sorted(COMMANDS)}", file=sys.stderr)
        sys.exit(2)
    COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
