"""Canary attention encoder-decoder (AED) models: tokenizers, prompt formats, Transformer decoder, search.

``models.aed.model.EncDecMultiTaskModel`` is the entry point; the other modules are its parts.
"""
