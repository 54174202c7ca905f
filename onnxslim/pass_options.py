"""The low-rank and int8 pass configs from the CLI's options (`o`: click's keyword arguments)."""
from __future__ import annotations


def lowrank_config(o):
    if o["lowrank_energy"] is None and o["lowrank_target_macs"] is None:
        return None
    from onnxslim.passes.lowrank import LowRankConfig
    kw = dict(energy=o["lowrank_energy"], target_macs=o["lowrank_target_macs"],
              ops=tuple(s.strip() for s in o["lowrank_ops"].split(",") if s.strip()),
              exclude=tuple(o["exclude"]), conv_svd=o["conv_svd"])
    if o["round_to"] is not None:
        kw["round_to"] = o["round_to"]
    config = LowRankConfig(**kw)
    config.check()
    return config


def quantize_config(o):
    if not o["quantize"]:
        return None
    from onnxslim.passes.quantize import QuantizeConfig
    kw = {"mode": o["quantize"]}
    if o["calib_method"]:
        kw["calib_method"] = o["calib_method"]
    if o["quant_target"]:
        kw["target"] = o["quant_target"]
    if o["per_tensor"]:
        kw["per_channel"] = False
    if o["no_cle"]:
        kw["cle"] = False
    if o["no_bias_correction"]:
        kw["bias_correction"] = False
    if o["tolerance"] is not None:
        kw["tolerance"] = o["tolerance"]
    config = QuantizeConfig(**kw)
    if hasattr(config, "check"):
        config.check()
    return config
