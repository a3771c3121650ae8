//! The LLM parts as MIL programs built for the Apple Neural Engine: embeddings, chunked
//! multi-function transformer (infer + prefill sharing weights and the KV state), LM head.

pub mod layout;
