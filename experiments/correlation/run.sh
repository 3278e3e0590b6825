#!/usr/bin/env bash
# Reproduces FG-NAS Table II / Table V and the Fig. 3 gamma sweep at CPU scale on the real CIFAR-10 images.
# Run from the repository root after the README's setup: bash experiments/correlation/run.sh
# Cost on this 2-core machine: about 40 min (run 1), 10 min (run 2), 10 min (gamma sweep).
set -euo pipefail
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
common=(--space nb201 --column cifar10_test --seed 0 --data cifar10 --batch-size 64 --processes "${WORKERS:-2}")

# Run 1: FG-NAS, its ablations and the cheaper baselines on 1,000 random archs.
.venv/bin/nasfleet bench correlation "${common[@]}" --sample "${SAMPLE:-1000}" --timing-sample 10 \
  --proxies fgnas,fgnas_nofp,fgnas_nogp,fgnas_linear,params,flops,synflow,logsynflow,naswot,snip,grad_norm,fisher,jacob_cov,zico,ni,garank \
  --out experiments/correlation/nb201-cifar10
.venv/bin/python experiments/correlation/summarize.py experiments/correlation/nb201-cifar10

# Run 2: the costlier baselines (GraSP, TE-NAS, COER-NAS) on the first 200 archs of the same seed.
.venv/bin/nasfleet bench correlation "${common[@]}" --sample "${SAMPLE2:-200}" --timing-sample 5 \
  --proxies grasp,tenas,coer,params,fgnas --out experiments/correlation/nb201-cifar10-costly

# Fig. 3: the important-layer ratio gamma, on the first 200 archs of run 1.
.venv/bin/python experiments/correlation/gamma_sweep.py experiments/correlation/nb201-cifar10 --archs "${GAMMA_ARCHS:-200}"
