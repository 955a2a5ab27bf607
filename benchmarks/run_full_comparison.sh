#!/usr/bin/env bash
# The full comparison tables of BENCHMARKS.md § 3, run as they were run there (one torch thread
# per process, several processes side by side). Every command resumes if rerun; outputs go to
# runs/full/ (ignored by git). On a 2-core machine the whole set takes about 2.5 hours of
# wall-clock with two or three of these running at once. Summaries: see the end of this file.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1
export CAPTUM_LAYER_SALIENCY_DATA="${CAPTUM_LAYER_SALIENCY_DATA:-../shared/data}"
PY="${PY:-.venv/bin/python}"
compare() { "$PY" -m captum_layer_saliency compare "$@"; }
FAITH=comprehensiveness,sufficiency,log_odds
PLAUS=token_f1,iou_f1,auprc
LAYERS=$(seq -s, -f 'dls_layer%g' 0 6)

# 1. SST-2 dev, all 872 sentences: every method but Shapley sampling, DLS at every layer.
compare --task sst2 --out runs/full/sst2 --metrics $FAITH,$PLAUS \
  --methods dls,$LAYERS,input_x_gradient,saliency,integrated_gradients,deeplift,deeplift_shap,gradient_shap,occlusion,lime,kernel_shap,attention_cls,attention_rollout,random,lafa
# 2. Shapley value sampling (~560 forwards per sentence) on the first 200 sentences.
compare --task sst2 --out runs/full/sst2_shapley --metrics $FAITH,$PLAUS --limit 200 \
  --methods dls,input_x_gradient,shapley_sampling
# 3. The token-by-token curve metrics and Kendall tau against leave-one-out, first 100 sentences.
compare --task sst2 --out runs/full/sst2_curves --limit 100 \
  --metrics deletion_auc,insertion_auc,kendall_tau_loo \
  --methods dls,input_x_gradient,saliency,integrated_gradients,deeplift_shap,gradient_shap,occlusion,lime,kernel_shap,attention_cls,attention_rollout,random
# 4. AG News held-out, first 1,000: DLS against the gradient baselines of the goal.
compare --task ag_news --out runs/full/ag_news --metrics $FAITH --limit 1000 \
  --methods dls,input_x_gradient,integrated_gradients,gradient_shap,deeplift_shap
# 5. AG News, the other methods, first 200.
compare --task ag_news --out runs/full/ag_news_rest --metrics $FAITH --limit 200 \
  --methods dls,input_x_gradient,saliency,deeplift,occlusion,lime,kernel_shap,attention_cls,attention_rollout,random,lafa
# 6. AG News, Shapley value sampling, first 48.
compare --task ag_news --out runs/full/ag_news_shapley --metrics $FAITH --limit 48 \
  --methods dls,input_x_gradient,shapley_sampling
# 7. AG News, the curve metrics and Kendall tau, first 32 (~100 forwards per text per method).
compare --task ag_news --out runs/full/ag_news_curves --limit 32 \
  --metrics deletion_auc,insertion_auc,kendall_tau_loo \
  --methods dls,input_x_gradient,saliency,integrated_gradients,gradient_shap,deeplift_shap,occlusion,lime,attention_cls,random
# 8. HateXplain test posts with a human rationale, first 600.
compare --task hatexplain_toxic --out runs/full/hatexplain --metrics $FAITH,$PLAUS --limit 600 \
  --methods dls,input_x_gradient,saliency,integrated_gradients,deeplift,deeplift_shap,gradient_shap,occlusion,lime,kernel_shap,attention_cls,attention_rollout,random,lafa

# Summaries (each compare also writes its own summary.md, plots and report.html). The
# "confirm" tables leave out the examples the defaults were chosen on (benchmarks/ablation_dls.py
# --limit 160 on SST-2: idx 0-159; --limit 96 on AG News: the first 96 held-out rows, idx <= 458).
summarize() { "$PY" -m captum_layer_saliency summarize "$@"; }
summarize runs/full/sst2 runs/full/sst2_shapley --json runs/full/summary_sst2.json
summarize runs/full/sst2 --index-from 160 --json runs/full/summary_sst2_confirm.json
summarize runs/full/ag_news runs/full/ag_news_rest runs/full/ag_news_shapley \
  --json runs/full/summary_ag_news.json
summarize runs/full/ag_news --index-from 459 --json runs/full/summary_ag_news_confirm.json
