"""``seqstream train --config NAME|PATH [--section-field VALUE ...]``.

``NAME`` is one of ``training/configs/*.yaml`` (ecg, ecg-large, nab, skab); every field of the
config can be overridden by a flag (``seqstream train --help`` lists them). Writes the artifact,
``report.json`` and ``plot.png`` to ``--output`` (default ``artifacts/<name>/``) and prints the
headline figures.
"""

from __future__ import annotations

import argparse
import json

from training.config import add_flags, load_config

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="ecg",
                        help="config name in training/configs (ecg, ecg-large, nab, skab) or a "
                             "YAML path; default ecg")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as JSON and exit")
    add_flags(parser)


def run(args: argparse.Namespace) -> int:
    flags = {k: v for k, v in vars(args).items() if k not in ("config", "print_config")}
    cfg = load_config(args.config, flags)
    if args.print_config:
        print(json.dumps(cfg.as_dict(), indent=2))
        return 0
    from training.fit import fit  # imported here: --help and --print-config skip torch

    result = fit(cfg)
    fm = result.metrics["forecast"]
    print(f"artifact {result.output} model_id {result.model_id[:12]} "
          f"({result.report['wall_s']:.0f} s, {result.report['training']['epochs']} epochs)")
    line = (f"test 1-step: MAE {fm['mae']:.4f} RMSE {fm['rmse']:.4f} R² {fm['r2']:.4f} "
            f"MASE {fm['mase']:.3f} (vs persistence on test {fm['mae_ratio_persistence']:.3f}")
    if fm.get("seasonal_naive"):
        line += f", vs seasonal-naive m={fm['seasonal_naive']['season']} " \
                f"{fm['mae_ratio_seasonal']:.3f}"
    print(line + ") [scaled units]")
    flags_m = result.metrics.get("flags")
    if flags_m:
        print(f"flags per {flags_m['unit']}: precision {flags_m['precision']:.3f} recall "
              f"{flags_m['recall']:.3f} F1 {flags_m['f1']:.3f} (chance: precision "
              f"{flags_m['prevalence']:.3f}, F1 {flags_m['f1_chance']:.3f}; AUC "
              f"{flags_m['auc']:.3f})")
    print(f"threshold {result.report['threshold']['value']:.4g} "
          f"({result.report['threshold']['method']}); report {result.output / 'report.json'}, "
          f"plot {result.output / 'plot.png'}")
    return 0
