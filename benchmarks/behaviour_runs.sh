#!/bin/bash
# Fixed-seed CLI runs for "behaviour unchanged" checks (issue 12); compare two sets with compare_runs.py.
# usage: benchmarks/behaviour_runs.sh OUT_DIR [name-regex]   (from the repo root, in its virtual environment)
# ONNXSLIM="python -m onnxslim.cli" by default; SHARED: the shared models folder; DATA: a folder with calib16/,
# val8/ (images: the first 16 and images 200-207 of imagenet-dev in file order) and minilm16.npz /
# minilm_val8.npz (rows 0-15 and 100-107 of minilm_tokens.npz)
outdir=$1; filter=${2:-.}
R=$(pwd); S=${SHARED:-../shared/models}; D=${DATA:-data}
IMG="--resize 256 --crop 224 --mean 127 --std 128"
run() { ${ONNXSLIM:-python -m onnxslim.cli} "$@"; }
cases=(
"quickstart|$R/models/digits_resnet_folded.onnx|--target-macs 0.5 --calib $R/models/digits_calib.npz --data $R/models/digits_eval.npz"
"prune07_digits|$R/models/digits_resnet_folded.onnx|--target-macs 0.7 --calib $R/models/digits_calib.npz --data $R/models/digits_eval.npz"
"prune07_digits_recon|$R/models/digits_resnet.onnx|--target-macs 0.7 --importance reconstruction --allocation global --calib $R/models/digits_calib.npz"
"prune07_eff|$S/efficientnet_lite0.onnx|--target-macs 0.7 --calib $D/calib16 $IMG --data $D/val8"
"prune_lat_digits|$R/models/digits_resnet_folded.onnx|--target-latency 0.7 --calib $R/models/digits_calib.npz"
"lowrank_minilm|$S/minilm_l6.onnx|--lowrank 0.9 --calib $D/minilm16.npz --data $D/minilm_val8.npz"
"lowrank_minilm_nocalib|$S/minilm_l6.onnx|--lowrank 0.8"
"lowrank_digits|$R/models/digits_resnet_folded.onnx|--lowrank-target-macs 0.6 --lowrank-ops matmul,gemm,conv --calib $R/models/digits_calib.npz"
"lowrank_digits_spatial|$R/models/digits_resnet_folded.onnx|--lowrank 0.9 --lowrank-ops conv --conv-svd spatial --calib $R/models/digits_calib.npz"
"q8_digits|$R/models/digits_resnet_folded.onnx|--quantize int8 --calib $R/models/digits_calib.npz --data $R/models/digits_eval.npz"
"q8_digits_tol|$R/models/digits_resnet_folded.onnx|--quantize int8 --tolerance 0.05 --calib $R/models/digits_calib.npz"
"q8_eff|$S/efficientnet_lite0.onnx|--quantize int8 --calib $D/calib16 $IMG --data $D/val8"
"q8dyn_minilm|$S/minilm_l6.onnx|--quantize int8-dynamic"
"int4_minilm|$S/minilm_l6.onnx|--quantize int4 --calib $D/minilm16.npz"
"prune_q8_digits|$R/models/digits_resnet_folded.onnx|--target-macs 0.6 --calib $R/models/digits_calib.npz --quantize int8"
"bare_eff|$S/efficientnet_lite0.onnx|"
"bare_eff_bn|$S/efficientnet_lite0_bn.onnx|"
"bare_minilm|$S/minilm_l6.onnx|"
"bare_digits|$R/models/digits_resnet.onnx|"
"bare_digits_folded|$R/models/digits_resnet_folded.onnx|"
)
for f in $R/models/families/*.onnx; do b=$(basename $f .onnx)
  cases+=("bare_fam_$b|$f|" "prune_fam_$b|$f|--target-macs 0.6 --calib-size 8" "lowrank_fam_$b|$f|--lowrank 0.8 --lowrank-ops matmul,gemm,conv")
done
for c in "${cases[@]}"; do
  IFS='|' read -r name model args <<< "$c"
  echo "$name" | grep -qE "$filter" || continue
  out=$outdir/$name; rm -rf $out; mkdir -p $out
  ( cd $out && /usr/bin/time -f "%e s" -o time.txt bash -c "$(declare -f run); run '$model' out.onnx $args --no-latency --seed 0 --report report.json" >stdout.txt 2>stderr.txt; echo $? > rc )
  echo "$name rc=$(cat $out/rc) $(cat $out/time.txt | tail -1)"
done
