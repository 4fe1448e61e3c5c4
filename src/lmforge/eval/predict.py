"""`do_predict` with `predict_with_generate`: answer held-out prompts, score the answers, write them out.

Writes LLaMA-Factory's two files into output_dir: generated_predictions.jsonl (one {"prompt", "predict",
"label"} per sample, in dataset order) and predict_results.json (predict_bleu-4, predict_rouge-1/2/l, runtime
and throughput). Prompts are generated in left-padded batches of `per_device_eval_batch_size`, grouped by
length so a batch carries little padding; the decoding settings are the generation keys (do_sample,
temperature, top_p, max_new_tokens, ...), as for chat.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from lmforge.logging import get_logger

logger = get_logger(__name__)

PREDICTIONS_FILE = "generated_predictions.jsonl"


@torch.no_grad()
def generate_batched(model, tokenizer, prompts: list[list[int]], stop_ids: list[int], batch_size: int,
                     progress: str | None = None, **generate_kwargs) -> list[list[int]]:
    """The generated ids for each prompt (up to, not including, its first stop token), in prompt order.

    `progress`: the label of a tqdm bar (prompts done, ETA) on stderr; None for no bar.
    """
    from tqdm.auto import tqdm

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    stops = set(stop_ids)
    # Longest first: batches of similar lengths carry little padding, and a batch too big fails at once.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    results: list[list[int]] = [[] for _ in prompts]
    bar = tqdm(total=len(prompts), desc=progress, unit="prompt", disable=progress is None, dynamic_ncols=True)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        width = max(len(prompts[i]) for i in batch)
        # Left padding puts every prompt's last token in the same column, where generation continues.
        input_ids = torch.tensor([[pad_id] * (width - len(prompts[i])) + prompts[i] for i in batch], device=device)
        attention_mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in batch],
                                      device=device)
        output = model.generate(input_ids=input_ids, attention_mask=attention_mask, eos_token_id=stop_ids or None,
                                pad_token_id=pad_id, use_cache=True, **generate_kwargs)
        for i, row in zip(batch, output[:, width:].tolist()):
            results[i] = row[: next((k for k, tok in enumerate(row) if tok in stops), len(row))]
        bar.update(len(batch))
    bar.close()
    return results


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
    logger.info("predict: generating for %d prompts in batches of %d", len(prompts),
                cfg.training.per_device_eval_batch_size)
    start = time.perf_counter()
    with trainer.autocast_smart_context_manager():
        generated = generate_batched(model, tokenizer, prompts, template.stop_token_ids(tokenizer),
                                     cfg.training.per_device_eval_batch_size,
                                     progress=None if cfg.training.disable_tqdm else "predict",
                                     **cfg.generation.to_generate_kwargs())
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
