"""The low-rank and quantization pass configs from the CLI's options (`o`: click's keyword arguments)."""
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
    from onnxslim.passes.quantize import WEIGHT_ONLY, QuantizeConfig
    given = {"calib_method": o["calib_method"], "target": o["quant_target"], "tolerance": o["tolerance"],
             "per_channel": False if o["per_tensor"] else None, "cle": False if o["no_cle"] else None,
             "bias_correction": False if o["no_bias_correction"] else None, "block_size": o["block_size"],
             "symmetric": o["symmetric"], "embeddings": o["quantize_embeddings"],
             "exclude": tuple(o["exclude"]) if o["quantize"] in WEIGHT_ONLY else None}
    config = QuantizeConfig(mode=o["quantize"], **{k: v for k, v in given.items() if v is not None})
    config.check()
    return config
