"""Command line of LLM-JEPA: `llm-jepa train` and `llm-jepa eval`.

    llm-jepa train --config recipes/llm_jepa/tiny_cpu.yaml --set jepa.lam=0 --set train.output_dir=runs/x
    accelerate launch --config_file recipes/accelerate/ddp.yaml -m llm_jepa.cli train --config ...
    llm-jepa eval ...        # generation-based evaluation, see `llm_jepa.evaluate`

`train` resolves the recipe + overrides into an `LLMJepaConfig` and calls `llm_jepa.train.train`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from jepa_common.config import ConfigError


def _train_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="llm-jepa train", description="LLM-JEPA finetuning")
    parser.add_argument("--config", required=True, help="YAML recipe, e.g. recipes/llm_jepa/tiny_cpu.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="a.b=c",
                        help="override one config field (repeatable)")
    args = parser.parse_args(argv)
    from llm_jepa.config import load_llm_jepa_config
    from llm_jepa.train import train

    try:
        cfg = load_llm_jepa_config(args.config, args.overrides)
    except (ConfigError, ValueError) as e:
        parser.error(str(e))
    result = train(cfg)
    print(json.dumps(result, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `llm-jepa` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not argv or argv[0] not in ("train", "eval"):
        print("usage: llm-jepa {train,eval} ...  (llm-jepa train --help)", file=sys.stderr)
        return 2
    if argv[0] == "eval":
        from llm_jepa.evaluate import cli_main  # written by the evaluation side

        return cli_main(argv[1:])
    return _train_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
