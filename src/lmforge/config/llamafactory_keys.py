"""LLaMA-Factory config keys that lmforge does not implement, by feature, with LLaMA-Factory's default.

Read from LLaMA-Factory's argument dataclasses (0.9.6.dev0, its hparams package; key names and defaults only).
A key set to its default asks for nothing and is accepted; any other value stops the run with
"LLaMA-Factory's <feature> option is not supported yet" instead of "unknown key". The empty feature name is for
single keys, named by themselves.
"""

from __future__ import annotations

from typing import Any

UNSUPPORTED: dict[str, dict[str, Any]] = {
    'ASFT loss': {
        'asft_alpha': 0.1,
        'use_asft_loss': False,
    },
    # batch_size, lang, n_shot, task and task_dir are lmforge eval keys (config/eval_args.py)
    'benchmark evaluation (MMLU/CMMLU/C-Eval)': {
        'download_mode': 'reuse_dataset_if_exists',
        'save_dir': None,
    },
    'dataset streaming': {
        'buffer_size': 16384,
    },
    'DFT loss': {
        'use_dft_loss': False,
    },
    'DPO/preference': {
        'ld_alpha': None,
        'pref_bco_weight': 0.0,
    },
    'EAFT loss': {
        'eaft_alpha': 1.0,
        'use_eaft_loss': False,
    },
    'early stopping': {
        'early_stopping_steps': None,
    },
    'export': {
        'export_hub_model_id': None,
        'export_quantization_bit': None,
        'export_quantization_dataset': None,
        'export_quantization_maxlen': 1024,
        'export_quantization_nsamples': 128,
    },
    'fp32 upcasting': {
        'upcast_layernorm': False,
        'upcast_lmhead_output': False,
    },
    'FP8 training': {
        'fp8': False,
        'fp8_backend': 'auto',
        'fp8_enable_fsdp_float8_all_gather': False,
    },
    'generation (decoding)': {
        'max_length': 1024,
    },
    'gradient checkpointing': {
        'use_reentrant_gc': True,
    },
    'hub auth tokens': {
        'hf_hub_token': None,
        'ms_hub_token': None,
        'om_hub_token': None,
    },
    'HyperParallel': {
        'hyper_parallel_args': None,
        'hyper_parallel_cp_size': 1,
        'use_hyper_parallel': False,
    },
    'inference': {
        'infer_dtype': 'auto',
        'use_kv_cache': True,
    },
    'KTransformers': {
        'kt_config': None,
        'kt_cpu_activation': None,
        'kt_expert_checkpoint_path': None,
        'kt_lora_expert_intermediate_size': None,
        'kt_lora_expert_num': None,
        'kt_non_expert_weight_path': None,
        'kt_use_lora_experts': None,
        'kt_weight_path': None,
        'use_kt': False,
    },
    'Liger kernel': {
        'enable_liger_kernel': False,
    },
    'MCA (Megatron Core Adapter)': {
        'use_mca': False,
    },
    'Megatron Bridge': {
        'account_for_embedding_in_pipeline_split': None,
        'account_for_loss_in_pipeline_split': None,
        'apply_rope_fusion': None,
        'bias_activation_fusion': None,
        'calculate_per_token_loss': None,
        'context_parallel_size': 1,
        'cross_entropy_loss_fusion': None,
        'expert_model_parallel_size': 1,
        'export_hf_on_finish': False,
        'extra_config': None,
        'masked_softmax_fusion': None,
        'megatron_pretrained_checkpoint': None,
        'mixed_precision': 'bf16_mixed',
        'moe_grouped_gemm': None,
        'moe_token_dispatcher_type': None,
        'overlap_grad_reduce': True,
        'overlap_param_gather': True,
        'pipeline_model_parallel_size': 1,
        'recompute_granularity': None,
        'recompute_method': None,
        'recompute_num_layers': None,
        'sequence_parallel': False,
        'tensor_model_parallel_size': 1,
        'use_distributed_optimizer': True,
        'use_megatron_bridge': False,
        'use_packed_sequences': False,
        'virtual_pipeline_model_parallel_size': None,
    },
    'Mixture-of-Depths': {
        'mixture_of_depths': None,
    },
    'MoE': {
        'moe_aux_loss_coef': None,
    },
    'multimodal (image/video/audio)': {
        'audio_sampling_rate': 16000,
        'crop_to_patches': False,
        'freeze_language_model': False,
        'freeze_multi_modal_projector': True,
        'freeze_vision_tower': True,
        'image_do_pan_and_scan': False,
        'image_max_pixels': 589824,
        'image_min_pixels': 1024,
        'media_dir': None,
        'use_audio_in_video': False,
        'video_fps': 2.0,
        'video_max_pixels': 65536,
        'video_maxlen': 128,
        'video_min_pixels': 256,
    },
    'OFT': {
        'module_dropout': 0.0,
        'oft_block_size': 32,
        'oft_rank': 0,
        'oft_target': 'all',
    },
    'PPO reward model adapters': {
        'reward_model_adapters': None,
        'reward_model_quantization_bit': None,
    },
    'Ray': {
        'master_addr': None,
        'master_port': None,
        'ray_init_kwargs': None,
        'ray_num_workers': 1,
    },
    'reasoning (thinking mode)': {
        'preserve_thinking': False,
    },
    'reference model (DPO/PPO)': {
        'ref_model_adapters': None,
        'ref_model_quantization_bit': None,
    },
    'RoPE scaling': {
        'rope_scaling': None,
    },
    'SGLang inference': {
        'sglang_config': None,
        'sglang_lora_backend': 'triton',
        'sglang_maxlen': 4096,
        'sglang_mem_fraction': 0.7,
        'sglang_tp_size': -1,
    },
    'SwanLab logging': {
        'swanlab_api_key': None,
        'swanlab_lark_secret': None,
        'swanlab_lark_webhook_url': None,
        'swanlab_logdir': None,
        'swanlab_mode': 'cloud',
        'swanlab_project': 'llamafactory',
        'swanlab_run_name': None,
        'swanlab_workspace': None,
        'use_swanlab': False,
    },
    'S²-Attn (LongLoRA shift attention)': {
        'shift_attn': False,
    },
    'tool calling': {
        'tool_format': None,
    },
    'torch profiler': {
        'enable_torch_profiler': False,
        'profile_modules': None,
        'profiler_active_steps': 1,
        'profiler_output_dir': None,
        'profiler_profile_memory': True,
        'profiler_record_shapes': True,
        'profiler_repeat': 1,
        'profiler_wait_steps': 1,
        'profiler_warmup_steps': 1,
        'profiler_with_stack': True,
    },
    'Unsloth': {
        'use_unsloth': False,
        'use_unsloth_gc': False,
    },
    'v1 kernels': {
        'use_v1_kernels': False,
    },
    'vLLM inference': {
        'vllm_config': None,
        'vllm_enforce_eager': False,
        'vllm_gpu_util': 0.7,
        'vllm_max_lora_rank': 32,
        'vllm_maxlen': 4096,
    },
    'vocab/special tokens': {
        'add_special_tokens': None,
        'add_tokens': None,
        'init_special_tokens': 'noise_init',
        'new_special_tokens_config': None,
        'resize_vocab': False,
    },
    '': {
        'adapter_folder': None,
        'compute_accuracy': False,
        'data_shared_file_system': False,
        'disable_shuffling': False,
        'eval_num_beams': None,
        'eval_on_each_dataset': False,
        'ignore_pad_token_for_loss': True,
        'include_effective_tokens_per_second': False,
        'offload_folder': 'offload',
        'print_param_status': False,
        'split_special_tokens': False,
        'train_from_scratch': False,
    },
}

FEATURE_OF_KEY: dict[str, str] = {key: feature for feature, keys in UNSUPPORTED.items() for key in keys}
DEFAULT_OF_KEY: dict[str, Any] = {key: default for keys in UNSUPPORTED.values() for key, default in keys.items()}

REASONS: dict[str, str] = {
    # feature -> why lmforge does not implement it: the README's "Coming from LLaMA-Factory" table is made from these
    'ASFT loss': 'a research SFT loss variant; not implemented yet',
    'benchmark evaluation (MMLU/CMMLU/C-Eval)': '`lmforge eval` scores local lm-evaluation-harness task files instead',
    'dataset streaming': 'lmforge does not stream datasets (large corpora become memmap shards), so there is no buffer',
    'DFT loss': 'a research SFT loss variant; not implemented yet',
    'DPO/preference': 'LD-DPO and the BCO mix are not implemented; `pref_loss` lists the preference losses lmforge has',
    'EAFT loss': 'a research SFT loss variant; not implemented yet',
    'early stopping': 'not implemented yet',
    'export': 'lmforge exports full-precision safetensors locally: no GPTQ quantized export, no hub upload',
    'fp32 upcasting': 'lmforge keeps fp32 master weights under bf16/fp16 autocast; per-layer upcasts are not needed',
    'FP8 training': 'needs torchao and FP8 GPUs; not implemented',
    'generation (decoding)': 'generation length is `max_new_tokens`',
    'gradient checkpointing': 'lmforge always uses non-reentrant checkpointing',
    'hub auth tokens': 'lmforge never downloads (hub ids are read from the local cache), so it needs no token',
    'HyperParallel': 'another distributed backend; lmforge runs on torchrun with DDP, FSDP or DeepSpeed',
    'inference': '`chat`/`api` generate with transformers in the model dtype, KV cache on',
    'KTransformers': 'another training backend (CPU-offloaded MoE experts); not integrated',
    'Liger kernel': 'third-party Triton kernels that patch the model; lmforge patches nothing by default',
    'MCA (Megatron Core Adapter)': 'another distributed backend (Megatron); not integrated',
    'Megatron Bridge': 'another distributed backend (Megatron); not integrated',
    'Mixture-of-Depths': 'changes the model architecture; not implemented',
    'MoE': 'lmforge adds no MoE router auxiliary loss; not implemented yet',
    'multimodal (image/video/audio)': 'lmforge trains text models only',
    'OFT': 'lmforge adapters are LoRA (and its variants), freeze and full; OFT is not implemented',
    'PPO reward model adapters': 'the reward model is one stage-rm output directory (`reward_model`); extra adapters or quantization on it are not implemented',
    'Ray': 'lmforge launches with torchrun, not Ray',
    'reasoning (thinking mode)': 'thoughts follow `enable_thinking`; keeping them otherwise is not implemented',
    'reference model (DPO/PPO)': '`ref_model` names the reference; adapters or quantization on it are not implemented',
    'RoPE scaling': 'context extension is not implemented; set rope_scaling in the model config.json',
    'SGLang inference': 'lmforge generates with transformers',
    'SwanLab logging': 'not integrated; `report_to` takes transformers\' integrations (tensorboard, wandb, ...)',
    'S²-Attn (LongLoRA shift attention)': 'patches the attention of the model; lmforge patches nothing by default',
    'tool calling': 'each template carries its tool format',
    'torch profiler': 'not integrated; run `lmforge train` under torch.profiler or nsys',
    'Unsloth': 'patches the model; lmforge patches nothing by default',
    'v1 kernels': "LLaMA-Factory v1's kernels; not integrated",
    'vLLM inference': 'lmforge generates with transformers',
    'vocab/special tokens': 'adding tokens and resizing embeddings is not implemented yet',
    '': 'smaller options lmforge has no counterpart for yet',
}
