"""`do_predict` with `predict_with_generate`: answer held-out prompts, score the answers, write them out.

Writes LLaMA-Factory's two files into output_dir: generated_predictions.jsonl (one {"prompt", "predict",
"label"} per sample, in dataset order) and predict_results.json (predict_bleu-4, predict_rouge-1/2/l, runtime
and throughput). Prompts go through the continuous-batching engine, `max_num_seqs` decoding together, each
prompt's slot freed the step its answer ends (`per_device_eval_batch_size` does not apply to generation); the
decoding settings are the generation keys (do_sample, temperature, top_p, max_new_tokens, ...), as for chat.
Sampled answers are seeded by their request, so a rerun writes the same predictions.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from lmforge.inference.batching import SamplingParams
from lmforge.inference.engine import sampling_params_of
from lmforge.inference.offline import generate_all
from lmforge.logging import get_logger

logger = get_logger(__name__)

PREDICTIONS_FILE = "generated_predictions.jsonl"


@torch.no_grad()
def generate_answers(model, prompts: list[list[int]], params: SamplingParams, max_num_seqs: int,
                     max_batch_tokens: int | None = None, progress: str | None = None) -> list[list[int]]:
    """The generated ids for each prompt (up to, not including, its stop token), in prompt order, through the
    continuous-batching engine: `max_num_seqs` answers decode together and a finished one's slot goes to the next
    prompt at once.

    `progress`: the label of a tqdm bar (prompts done, ETA) on stderr; None for no bar.
    """
    from tqdm.auto import tqdm

    bar = tqdm(total=len(prompts), desc=progress, unit="prompt", disable=progress is None, dynamic_ncols=True)
    answers = generate_all(model, prompts, params, max_num_seqs=max_num_seqs, max_batch_tokens=max_batch_tokens,
                           progress=bar)
    bar.close()
    stops = set(params.stop_token_ids)
    return [a.tokens[:-1] if a.tokens and a.finish_reason == "stop" and a.tokens[-1] in stops else a.tokens
            for a in answers]


def run_predict(cfg, trainer, tokenizer, template) -> dict[str, float]:
    """Generate for the predict set, score it, write the two files; returns the predict_* metrics."""
    from lmforge.data.pipeline import build_generation_data
    from lmforge.eval.text_metrics import similarity_scores

    if not trainer.is_world_process_zero():
        return {}
    data = build_generation_data(cfg.data, cfg.finetuning.stage, tokenizer, template, cfg.training.seed,
                                 training=cfg.training.do_train)
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.eval()
    prompts = data["input_ids"]
    generation = cfg.generation
    logger.info("predict: generating for %d prompts, %d at a time (max_num_seqs)", len(prompts),
                generation.max_num_seqs)
    start = time.perf_counter()
    with trainer.autocast_smart_context_manager():
        generated = generate_answers(model, prompts, sampling_params_of(generation, template.stop_token_ids(tokenizer)),
                                     generation.max_num_seqs, generation.max_batch_tokens,
                                     progress=None if cfg.training.disable_tqdm else "predict")
    runtime = time.perf_counter() - start
    skip = cfg.generation.skip_special_tokens
    predictions = [tokenizer.decode(ids, skip_special_tokens=skip).strip() for ids in generated]
    references = data["reference"]
    scores = similarity_scores(predictions, references)
    metrics = {f"predict_{key}": value for key, value in scores.items()}
    metrics.update({
        "predict_samples": len(prompts),
        "predict_truncated": sum(data["truncated"]),
        "predict_runtime": round(runtime, 4),
        "predict_samples_per_second": round(len(prompts) / runtime, 3),
        "predict_tokens_per_second": round(sum(len(ids) for ids in generated) / runtime, 3),
    })
    path = Path(cfg.training.output_dir) / PREDICTIONS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        for prompt, prediction, reference in zip(prompts, predictions, references):
            record = {"prompt": tokenizer.decode(prompt, skip_special_tokens=False), "predict": prediction,
                      "label": reference}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    trainer.save_metrics("predict", metrics)
    logger.info("predict: BLEU-4 %.2f, ROUGE-1 %.2f, ROUGE-2 %.2f, ROUGE-L %.2f over %d samples; wrote %s",
                scores["bleu-4"], scores["rouge-1"], scores["rouge-2"], scores["rouge-l"], len(prompts), path)
    return metrics
