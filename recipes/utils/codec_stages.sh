#!/usr/bin/env bash
# Stages 2-7 shared by every recipe: train codec (or, with --unit_model ssl, the k-means model over an SSL
# layer, after --ssl_iterations HuBERT-style iterations trained here), extract units, resynthesize and
# evaluate, train the prior, sample, train a unit vocoder on the content units and convert voices. Run from a recipe dir (it reads ./path.sh and ./cmd.sh) after the recipe's own stages 0-1:
#   utils/codec_stages.sh --exp exp/tiny --train_set train_clean_5 --dev_set dev_clean_2 \
#       --eval_sets "dev_clean_2" --codec_config conf/codec_tiny.yaml --prior_config conf/prior_tiny.yaml
# Each stage is idempotent (a .done marker in its output dir), launches its jobs through cmd.sh's
# $cuda_cmd (training) and $decode_cmd (extraction, resynthesis, sampling) and logs to EXP/log/.
set -euo pipefail

stage=2
stop_stage=7
exp=                # experiment dir (required)
train_set=          # data/<train_set> trains the codec and the prior (required)
dev_set=            # data/<dev_set> validates them (required)
eval_sets=          # space-separated sets to extract, resynthesize and evaluate (required)
codec_config=       # YAML for vqaudio train-codec (required)
prior_config=       # YAML for vqaudio train-prior (required)
nj=2                # parallel unit-extraction jobs per set
num_samples=4       # stage 6: utterances to sample
sample_seconds=4    # stage 6: seconds per sample
alignments=         # stage 4: a phone CTM; when set, the units' phonetic quality is scored too
n_q_curve=          # stage 4: residual depths the codec is scored at (comma list; default 1,2,4,... up to its n_q)
unit_model=codec    # codec: the codec's units; ssl: k-means units of an SSL layer
ssl_model=          # ssl: a transformers SSL model folder or Hub id (e.g. facebook/hubert-base-ls960)
ssl_layer=6         # ssl: the layer clustered (and, with --ssl_iterations, the layer each iteration clusters)
ssl_k=500           # ssl: k-means units
ssl_iterations=0    # ssl: train this many HuBERT iterations here first (vqaudio train-ssl), from MFCC k-means
ssl_targets_k=100   # ssl: units each train-ssl iteration predicts
ssl_config=         # ssl: YAML for vqaudio train-ssl (conf/ssl_tiny.yaml on CPUs)
vocoder_config=     # stage 7: YAML for vqaudio train-vocoder (conf/vocoder_tiny.yaml on CPUs); empty: no stage 7
num_convert=2       # stage 7: utterances of each eval-set speaker converted into the next speaker's voice
vocoder_scores="--asr --speaker-sim"  # stage 7: vqaudio evaluate's outside scorers (pip install 'vqaudio[eval]')
help_message="Usage: $0 --exp DIR --train_set SET --dev_set SET --eval_sets \"SET...\" \\
    --codec_config FILE --prior_config FILE [--stage N] [--stop_stage N] [--nj N] [--num_samples N]
    [--sample_seconds S] [--alignments PHONES.ctm] [--n_q_curve 1,2,4,8]
    [--unit_model codec|ssl] [--ssl_model PATH_OR_HUB_ID] [--ssl_layer N] [--ssl_k K]
    [--ssl_iterations N --ssl_config FILE [--ssl_targets_k K]]
    [--vocoder_config FILE] [--num_convert N] [--vocoder_scores \"--asr --speaker-sim\"]
  Stages: 2 train codec  3 extract units (--nj jobs, merged)  4 resynthesize and evaluate, and score
          the codec at each depth of --n_q_curve (EXP/eval_n_q/SET; with --alignments also
          vqaudio evaluate-units: PNMI, purity, ABX)
          5 train the prior  6 sample speech and summarise it
          7 train a unit vocoder on the content units (the codec's level 0, or the SSL k-means units),
            resynthesize each eval set in its speakers' own voices (a reference utterance each), convert
            --num_convert utterances of each speaker into the next speaker's voice, and score both
            (EXP/vocoder/RESULTS.md; --vocoder_scores \"\" without the eval extra)
  With --unit_model ssl, stage 2 trains k-means (--ssl_k) on layer --ssl_layer of --ssl_model, or of the
  last of --ssl_iterations HuBERT models trained here (iteration 1 predicts MFCC k-means units, each next
  one k-means units of the previous model's layer); stage 3 extracts those units; stage 4 scores them
  (--alignments) but resynthesizes nothing (the codec cannot decode them); stage 6 is skipped; stage 7
  trains the unit vocoder on them, the way back to audio."

. ./path.sh
. ./cmd.sh
. utils/parse_options.sh
. utils/recipe_lib.sh
check_stages "$stage" "$stop_stage" 0 7
for option in exp train_set dev_set eval_sets codec_config prior_config; do
  [ -n "${!option}" ] || { echo "$0: --$option is required (see --help)" >&2; exit 1; }
done
case "$unit_model" in
  codec) units_model=$exp/codec/model.pt ;;
  ssl)
    units_model=$exp/kmeans_ssl
    if [ "$ssl_iterations" -gt 0 ] 2>/dev/null; then
      [ -n "$ssl_config" ] || { echo "$0: --ssl_iterations needs --ssl_config (conf/ssl_tiny.yaml)" >&2; exit 1; }
    elif [ "$ssl_iterations" != 0 ] || [ -z "$ssl_model" ]; then
      echo "$0: --unit_model ssl needs --ssl_model PATH_OR_HUB_ID or --ssl_iterations N (N >= 1)" >&2; exit 1
    fi ;;
  *) echo "$0: --unit_model must be codec or ssl, got '$unit_model'" >&2; exit 1 ;;
esac

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ] && [ "$unit_model" == ssl ]; then
  need data/$train_set/.done 1
  if [ "$ssl_iterations" -gt 0 ]; then
    targets=$exp/ssl/kmeans_mfcc
    if done_or_run $targets 2; then
      log 2 "MFCC k-means targets for HuBERT iteration 1 in $targets"
      $train_cmd $exp/log/kmeans_mfcc.log vqaudio train-kmeans --no-deltas --cmvn --context 2 --k $ssl_targets_k \
        --data data/$train_set --out $targets -f
      touch $targets/.done
    fi
    for it in $(seq 1 $ssl_iterations); do
      out=$exp/ssl/it$it
      if done_or_run $out 2; then
        resume=""; [ -f $out/checkpoints/last.ckpt ] && resume="--resume"
        log 2 "HuBERT iteration $it in $out ${resume:+(resuming)}; log: $exp/log/train_ssl_it$it.log"
        $cuda_cmd $exp/log/train_ssl_it$it.log vqaudio train-ssl --config "$ssl_config" --targets $targets \
          --train-data data/$train_set --valid-data data/$dev_set --exp-dir $out $resume
        touch $out/.done
      fi
      [ $it -lt $ssl_iterations ] || break
      targets=$exp/ssl/kmeans_it$it
      if done_or_run $targets 2; then
        log 2 "k-means targets of iteration $it's layer $ssl_layer in $targets"
        $cuda_cmd $exp/log/kmeans_it$it.log vqaudio train-kmeans --feature ssl --ssl-model $out --layer $ssl_layer \
          --k $ssl_targets_k --data data/$train_set --out $targets -f
        touch $targets/.done
      fi
    done
    ssl_model=$exp/ssl/it$ssl_iterations
  fi
  if done_or_run $units_model 2; then
    log 2 "k-means ($ssl_k units) on layer $ssl_layer of $ssl_model in $units_model"
    $cuda_cmd $exp/log/kmeans_ssl.log vqaudio train-kmeans --feature ssl --ssl-model "$ssl_model" --layer $ssl_layer \
      --k $ssl_k --data data/$train_set --out $units_model -f
    touch $units_model/.done
  fi
elif [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  need data/$train_set/.done 1
  if done_or_run $exp/codec 2; then
    resume=""; [ -f $exp/codec/checkpoints/last.ckpt ] && resume="--resume"
    log 2 "training the codec in $exp/codec ${resume:+(resuming)}; log: $exp/log/train_codec.log"
    $cuda_cmd $exp/log/train_codec.log vqaudio train-codec --config "$codec_config" --train-data data/$train_set \
      --valid-data data/$dev_set --exp-dir $exp/codec $resume
    touch $exp/codec/.done
  fi
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  need $units_model 2
  for set in $train_set $eval_sets; do
    out=$exp/units/$set
    done_or_run $out 3 || continue
    log 3 "extracting units of data/$set with $nj jobs; logs: $exp/log/extract_$set.*.log"
    # Exit status 1 means some utterances failed (listed in failed.txt); the merged units are still written.
    $decode_cmd JOB=1:$nj $exp/log/extract_$set.JOB.log vqaudio extract-units --model $units_model \
      --data data/$set --out $out --format kaldi,fairseq --nj $nj --job JOB --threads 1 \
      || log 3 "some utterances of $set failed: see $out/failed.txt"
    [ -f $out/units ] || { echo "$0: extraction of $set did not finish; see $exp/log/extract_$set.*.log" >&2; exit 1; }
    touch $out/.done
  done
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  for set in $eval_sets; do
    need $exp/units/$set/.done 3
    if [ "$unit_model" == ssl ]; then
      log 4 "SSL units are not resynthesized (the codec cannot decode them)"
    elif done_or_run $exp/resynth/$set 4; then
      log 4 "resynthesizing $set"
      $decode_cmd $exp/log/resynth_$set.log vqaudio resynth --model $exp/codec/model.pt --units $exp/units/$set \
        --out $exp/resynth/$set
      touch $exp/resynth/$set/.done
    fi
    if [ "$unit_model" == codec ] && done_or_run $exp/eval/$set 4; then
      log 4 "evaluating $set"
      $train_cmd $exp/log/evaluate_$set.log vqaudio evaluate --ref data/$set --hyp $exp/resynth/$set \
        --units $exp/units/$set --out $exp/eval/$set
      touch $exp/eval/$set/.done
    fi
    if [ "$unit_model" == codec ] && done_or_run $exp/eval_n_q/$set 4; then
      log 4 "scoring the codec on $set at residual depths ${n_q_curve:-1, 2, 4, ... up to its n_q}"
      $train_cmd $exp/log/evaluate_n_q_$set.log vqaudio evaluate --model $exp/codec/model.pt --data data/$set \
        ${n_q_curve:+--n-q $n_q_curve} --out $exp/eval_n_q/$set
      touch $exp/eval_n_q/$set/.done
    fi
    if [ -n "$alignments" ] && done_or_run $exp/unit_quality/$set 4; then
      log 4 "scoring the units of $set against $alignments"
      $train_cmd $exp/log/evaluate_units_$set.log vqaudio evaluate-units --units $exp/units/$set \
        --alignments "$alignments" --data data/$set --out $exp/unit_quality/$set
      touch $exp/unit_quality/$set/.done
    fi
  done
  {
    if [ "$unit_model" == codec ]; then
      echo "# $(basename $exp): resynthesis"
      for set in $eval_sets; do echo; tail -n +2 $exp/eval/$set/RESULTS.md; done
      echo; echo "# $(basename $exp): quality by residual depth"
      for set in $eval_sets; do
        echo; echo "## $set"
        tail -n +2 $exp/eval_n_q/$set/RESULTS.md | sed "s#](quality_by_n_q.png)#](eval_n_q/$set/quality_by_n_q.png)#"
      done
    fi
    if [ -n "$alignments" ]; then
      echo; echo "# $(basename $exp): units"
      for set in $eval_sets; do echo; tail -n +2 $exp/unit_quality/$set/RESULTS.md; done
    fi
  } > $exp/RESULTS.md
  log 4 "results in $exp/RESULTS.md"
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  need $exp/units/$train_set/.done 3
  if done_or_run $exp/prior 5; then
    resume=""; [ -f $exp/prior/checkpoints/last.ckpt ] && resume="--resume"
    log 5 "training the prior in $exp/prior ${resume:+(resuming)}; log: $exp/log/train_prior.log"
    $cuda_cmd $exp/log/train_prior.log vqaudio train-prior --config "$prior_config" \
      --train-units $exp/units/$train_set --valid-units $exp/units/$dev_set --exp-dir $exp/prior $resume
    touch $exp/prior/.done
  fi
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ] && [ "$unit_model" == ssl ]; then
  log 6 "sampling speech needs a decoder for the units; the codec cannot decode SSL units: skipped"
elif [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  need $exp/prior/prior.pt 5
  if done_or_run $exp/samples 6; then
    log 6 "sampling $num_samples utterances of ${sample_seconds}s"
    $decode_cmd $exp/log/sample.log vqaudio sample --prior $exp/prior --codec $exp/codec/model.pt \
      --num $num_samples --seconds $sample_seconds --out $exp/samples
    touch $exp/samples/.done
  fi
fi

if [ $stage -le 7 ] && [ $stop_stage -ge 7 ] && [ -z "$vocoder_config" ]; then
  log 7 "no --vocoder_config: the unit vocoder is not trained"
elif [ $stage -le 7 ] && [ $stop_stage -ge 7 ]; then
  need $exp/units/$train_set/.done 3
  need $exp/units/$dev_set/.done 3
  levels=""; [ "$unit_model" == codec ] && levels="--levels 0"  # content units: the codec's level 0
  if done_or_run $exp/vocoder 7; then
    resume=""; [ -f $exp/vocoder/checkpoints/last.ckpt ] && resume="--resume"
    log 7 "training the unit vocoder on $units_model's units in $exp/vocoder ${resume:+(resuming)}; log: $exp/log/train_vocoder.log"
    $cuda_cmd $exp/log/train_vocoder.log vqaudio train-vocoder --config "$vocoder_config" \
      --units $exp/units/$train_set --data data/$train_set --unit-model $units_model $levels \
      --valid-units $exp/units/$dev_set --valid-data data/$dev_set --exp-dir $exp/vocoder $resume
    touch $exp/vocoder/.done
  fi
  for set in $eval_sets; do
    need $exp/units/$set/.done 3
    if done_or_run $exp/vocoder/resynth/$set 7; then
      log 7 "resynthesizing $set with the vocoder, each utterance in its speaker's voice"
      $decode_cmd $exp/log/resynth_vocoder_$set.log vqaudio resynth --vocoder $exp/vocoder/model.pt \
        --units $exp/units/$set --own-voice --data data/$set --out $exp/vocoder/resynth/$set
      touch $exp/vocoder/resynth/$set/.done
    fi
    if done_or_run $exp/vocoder/eval/$set 7; then
      $train_cmd $exp/log/evaluate_vocoder_$set.log vqaudio evaluate --ref data/$set \
        --hyp $exp/vocoder/resynth/$set $vocoder_scores --out $exp/vocoder/eval/$set
      touch $exp/vocoder/eval/$set/.done
    fi
    if done_or_run $exp/vocoder/convert/$set 7; then
      mkdir -p $exp/vocoder/convert/$set
      # the first --num_convert utterances of each speaker, in the voice of the next speaker (in C order),
      # whose last utterance is the reference
      LC_ALL=C sort -k2,2 -k1,1 data/$set/utt2spk | awk -v n=$num_convert '
        { if (!($2 in count)) spk[s++] = $2; utt[$2, count[$2]++] = $1 }
        END { if (s < 2) exit; for (i = 0; i < s; i++) { t = spk[(i + 1) % s]; ref = utt[t, count[t] - 1]
                for (j = 0; j < n && j < count[spk[i]]; j++) print utt[spk[i], j], ref } }' \
        > $exp/vocoder/convert/$set/pairs
      if [ -s $exp/vocoder/convert/$set/pairs ]; then
        log 7 "converting $(wc -l < $exp/vocoder/convert/$set/pairs) utterances of $set into other speakers' voices"
        $decode_cmd $exp/log/convert_$set.log vqaudio convert --vocoder $exp/vocoder/model.pt --data data/$set \
          --pairs $exp/vocoder/convert/$set/pairs -o $exp/vocoder/convert/$set
        $train_cmd $exp/log/evaluate_convert_$set.log vqaudio evaluate --ref data/$set \
          --hyp $exp/vocoder/convert/$set $vocoder_scores --out $exp/vocoder/eval_convert/$set
      else
        log 7 "$set has fewer than two speakers: no conversions"
      fi
      touch $exp/vocoder/convert/$set/.done
    fi
  done
  {
    echo "# $(basename $exp): unit vocoder on $unit_model units"
    for set in $eval_sets; do
      echo; echo "## $set: resynthesis in each speaker's own voice"; tail -n +2 $exp/vocoder/eval/$set/RESULTS.md
      if [ -f $exp/vocoder/eval_convert/$set/RESULTS.md ]; then
        echo; echo "## $set: voice conversion"; tail -n +2 $exp/vocoder/eval_convert/$set/RESULTS.md
      fi
    done
  } > $exp/vocoder/RESULTS.md
  log 7 "results in $exp/vocoder/RESULTS.md"
fi
