"""Masked-diffusion vision-language-action policy: backbone, action tokenizer, decoder, sampler."""
