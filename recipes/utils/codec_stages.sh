#!/usr/bin/env bash
# Stages 2-6 shared by every recipe: train codec, extract units, resynthesize and evaluate, train the prior,
# sample. Source it from a recipe's run.sh after stages 0-1, with these variables set:
#   stage stop_stage exp train_set dev_set eval_sets codec_config prior_config nj num_samples sample_seconds
# and cmd.sh and utils/recipe_lib.sh sourced (run_cmd, log, done_or_run, need). Each stage is idempotent (.done markers) and logs to $exp/log/.

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  need data/$train_set/.done 1
  if done_or_run $exp/codec 2; then
    resume=""; [ -f $exp/codec/checkpoints/last.ckpt ] && resume="--resume"
    log 2 "training the codec in $exp/codec ${resume:+(resuming)}"
    run_cmd $exp/log/train_codec.log vqaudio train-codec --config "$codec_config" --train-data data/$train_set \
      --valid-data data/$dev_set --exp-dir $exp/codec $resume
    touch $exp/codec/.done
  fi
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  need $exp/codec/model.pt 2
  for set in $train_set $eval_sets; do
    out=$exp/units/$set
    done_or_run $out 3 || continue
    log 3 "extracting units of data/$set with $nj jobs"
    pids=()
    for job in $(seq $nj); do
      run_cmd $exp/log/extract_$set.$job.log vqaudio extract-units --model $exp/codec/model.pt --data data/$set \
        --out $out --format kaldi,fairseq --nj $nj --job $job --threads 1 > /dev/null &
      pids+=($!)
    done
    failed=0
    for pid in "${pids[@]}"; do wait $pid || failed=1; done
    [ -f $out/units ] || { echo "$0: extraction of $set did not finish; see $exp/log/extract_$set.*.log" >&2; exit 1; }
    [ $failed -eq 0 ] || log 3 "some utterances of $set failed: see $out/failed.txt"
    touch $out/.done
  done
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  for set in $eval_sets; do
    need $exp/units/$set/.done 3
    if done_or_run $exp/resynth/$set 4; then
      log 4 "resynthesizing $set"
      run_cmd $exp/log/resynth_$set.log vqaudio resynth --model $exp/codec/model.pt --units $exp/units/$set \
        --out $exp/resynth/$set
      touch $exp/resynth/$set/.done
    fi
    if done_or_run $exp/eval/$set 4; then
      log 4 "evaluating $set"
      run_cmd $exp/log/evaluate_$set.log vqaudio evaluate --ref data/$set --hyp $exp/resynth/$set \
        --units $exp/units/$set --out $exp/eval/$set
      touch $exp/eval/$set/.done
    fi
  done
  { echo "# $tag: resynthesis"; for set in $eval_sets; do echo; tail -n +2 $exp/eval/$set/RESULTS.md; done; } > $exp/RESULTS.md
  log 4 "results in $exp/RESULTS.md"
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  need $exp/units/$train_set/.done 3
  if done_or_run $exp/prior 5; then
    resume=""; [ -f $exp/prior/checkpoints/last.ckpt ] && resume="--resume"
    log 5 "training the prior in $exp/prior ${resume:+(resuming)}"
    run_cmd $exp/log/train_prior.log vqaudio train-prior --config "$prior_config" --train-units $exp/units/$train_set \
      --valid-units $exp/units/$dev_set --exp-dir $exp/prior $resume
    touch $exp/prior/.done
  fi
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  need $exp/prior/prior.pt 5
  if done_or_run $exp/samples 6; then
    log 6 "sampling $num_samples utterances of ${sample_seconds}s"
    run_cmd $exp/log/sample.log vqaudio sample --prior $exp/prior --codec $exp/codec/model.pt --num $num_samples \
      --seconds $sample_seconds --out $exp/samples
    touch $exp/samples/.done
  fi
fi
