//! The forward pass with HuggingFace transformers' semantics on the original weights (float32,
//! candle), with a KV cache: the yardstick everything else is measured against.
